package graph

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/jobmill/jobmill/app/query"
	"github.com/jobmill/jobmill/graph/model"
)

// maxIDLength bounds ids and cursors taken from clients; nothing longer exists.
const maxIDLength = 256

// pageSize validates a connection's first argument.
func pageSize(first *int) (int, error) {
	n := 50
	if first != nil {
		n = *first
	}
	if n < 1 || n > query.MaxPageSize {
		return 0, publicError(codeBadUserInput, "first must be between 1 and %d (got %d)", query.MaxPageSize, n)
	}
	return n, nil
}

// Cursors are opaque to clients: base64url of a kind and a keyset position. A sub-job cursor names its
// job, so that a cursor of one job's sub-jobs cannot be used to page through another's.

func encodeCursor(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func decodeCursor(c string) (string, bool) {
	if c == "" || len(c) > maxIDLength*2 {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", false
	}
	return string(b), true
}

func errInvalidCursor() error {
	return publicError(codeBadUserInput, "invalid cursor: after must be an endCursor this query returned")
}

func jobCursor(id string) string { return encodeCursor("job:" + id) }

// jobAfter decodes a jobs cursor into the id to continue after ("" for the first page).
func jobAfter(after *string) (string, error) {
	if after == nil {
		return "", nil
	}
	s, ok := decodeCursor(*after)
	id, found := strings.CutPrefix(s, "job:")
	if !ok || !found || id == "" {
		return "", errInvalidCursor()
	}
	return id, nil
}

func subjobCursor(jobID string, index int64) string {
	return encodeCursor("sub:" + strconv.FormatInt(index, 10) + ":" + jobID)
}

// subjobAfter decodes a sub-jobs cursor of job jobID into the index to continue after (-1 for the first
// page).
func subjobAfter(jobID string, after *string) (int64, error) {
	if after == nil {
		return -1, nil
	}
	s, ok := decodeCursor(*after)
	rest, found := strings.CutPrefix(s, "sub:")
	if !ok || !found {
		return 0, errInvalidCursor()
	}
	idx, id, found := strings.Cut(rest, ":")
	if !found || id != jobID {
		return 0, errInvalidCursor()
	}
	n, err := strconv.ParseInt(idx, 10, 64)
	if err != nil || n < 0 {
		return 0, errInvalidCursor()
	}
	return n, nil
}

// pageInfo describes a page of edges with the given cursors.
func pageInfo(first, last string, hasNext bool) *model.PageInfo {
	p := &model.PageInfo{HasNextPage: hasNext}
	if first != "" {
		p.StartCursor, p.EndCursor = &first, &last
	}
	return p
}
