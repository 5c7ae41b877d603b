// Package model holds the Go types of the GraphQL schema: generated ones in models_gen.go and the
// custom scalars here.
package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// JSON is the JSON scalar: any JSON value, kept as its encoding.
type JSON json.RawMessage

// UnmarshalGQL accepts an input value: a literal in the query (objects, lists, strings, numbers,
// booleans, null) or a variable's decoded JSON.
func (j *JSON) UnmarshalGQL(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("JSON: %w", err)
	}
	*j = b
	return nil
}

// MarshalGQL writes the value as it is stored when it is valid JSON. Bytes that are not JSON (a job
// type may return any output) are written as a JSON string, so that a response is always valid JSON.
func (j JSON) MarshalGQL(w io.Writer) {
	switch {
	case len(j) == 0:
		_, _ = io.WriteString(w, "null")
	case json.Valid(j):
		var buf bytes.Buffer
		if json.Compact(&buf, j) == nil {
			_, _ = w.Write(buf.Bytes())
			return
		}
		_, _ = w.Write(j)
	default:
		b, _ := json.Marshal(string(j)) // invalid UTF-8 becomes U+FFFD
		_, _ = w.Write(b)
	}
}
