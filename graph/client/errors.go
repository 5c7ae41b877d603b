package client

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

var (
	// ErrUnauthorized: the server refused the token (HTTP 401, or a websocket closed with 4401).
	ErrUnauthorized = errors.New("the server refused the token")
	// ErrTokenRequired: the server needs a token and the client has none.
	ErrTokenRequired = errors.New("the server requires an API token")
	// ErrJobNotFound: the server has no job with that id for the token's tenant.
	ErrJobNotFound = errors.New("no such job")
	// ErrRateLimited: the server answered HTTP 429. Errors matching it are *RateLimitError.
	ErrRateLimited = errors.New("rate limited by the server")
)

// UnreachableError reports that the server could not be reached at all.
type UnreachableError struct {
	// URL is the endpoint that was tried.
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the jobmill server at %s: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// RateLimitError is an HTTP 429 answer.
type RateLimitError struct {
	// RetryAfter is how long the server asked the client to wait; zero when it did not say.
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%v: retry after %s", ErrRateLimited, e.RetryAfter)
	}
	return ErrRateLimited.Error()
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

// HTTPError is any other answer that is not a GraphQL response.
type HTTPError struct {
	StatusCode int
	Status     string
	// Body is the start of the response body, for the message.
	Body string
}

func (e *HTTPError) Error() string {
	msg := "unexpected HTTP answer from the server: " + e.Status
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// GraphQLError is one entry of a GraphQL response's errors.
type GraphQLError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path,omitempty"`
	Extensions map[string]any `json:"extensions,omitempty"`
}

// GraphQLErrors are the errors a GraphQL response carried: the request was rejected or a field failed.
type GraphQLErrors []GraphQLError

func (e GraphQLErrors) Error() string {
	if len(e) == 0 {
		return "GraphQL error"
	}
	msgs := make([]string, len(e))
	for i, ge := range e {
		msgs[i] = ge.Message
	}
	return strings.Join(msgs, "; ")
}

// HasCode reports whether one of the errors carries code in extensions.code (jobmill's server sets
// NOT_FOUND, BAD_USER_INPUT, UNAUTHENTICATED, RATE_LIMITED, ...).
func (e GraphQLErrors) HasCode(code string) bool {
	for _, ge := range e {
		if c, _ := ge.Extensions["code"].(string); c == code {
			return true
		}
	}
	return false
}

// Is maps the codes of jobmill's server to this package's errors: NOT_FOUND matches ErrJobNotFound,
// RATE_LIMITED ErrRateLimited and UNAUTHENTICATED ErrUnauthorized.
func (e GraphQLErrors) Is(target error) bool {
	switch target {
	case ErrJobNotFound:
		return e.HasCode("NOT_FOUND")
	case ErrRateLimited:
		return e.HasCode("RATE_LIMITED")
	case ErrUnauthorized:
		return e.HasCode("UNAUTHENTICATED")
	}
	return false
}

// UserErrorCode is what kind of problem a mutation reported.
type UserErrorCode string

// The codes of the schema's UserErrorCode enum.
const (
	CodeNotFound        UserErrorCode = "NOT_FOUND"
	CodeInvalidInput    UserErrorCode = "INVALID_INPUT"
	CodeUnknownJobType  UserErrorCode = "UNKNOWN_JOB_TYPE"
	CodeAlreadyFinished UserErrorCode = "ALREADY_FINISHED"
	CodeNotRetryable    UserErrorCode = "NOT_RETRYABLE"
)

// UserError is a problem with a mutation's input or target that the server reported in the payload.
type UserError struct {
	Code    UserErrorCode `json:"code"`
	Message string        `json:"message"`
	// Field is the path to the input field at fault, if any.
	Field []string `json:"field"`
	// JobID is set on errors about a job.
	JobID string `json:"jobId"`
}

func (e UserError) String() string {
	s := string(e.Code) + ": " + e.Message
	if len(e.Field) > 0 {
		s += " (field " + strings.Join(e.Field, ".") + ")"
	}
	return s
}

// UserErrors is the error a mutation returns when its payload listed user errors.
type UserErrors []UserError

func (e UserErrors) Error() string {
	msgs := make([]string, len(e))
	for i, ue := range e {
		msgs[i] = ue.String()
	}
	return strings.Join(msgs, "; ")
}

// Has reports whether one of the errors has code.
func (e UserErrors) Has(code UserErrorCode) bool {
	for _, ue := range e {
		if ue.Code == code {
			return true
		}
	}
	return false
}

// Is makes errors.Is(err, ErrJobNotFound) true for a NOT_FOUND user error.
func (e UserErrors) Is(target error) bool {
	return target == ErrJobNotFound && e.Has(CodeNotFound)
}

// closeError is a websocket closed by the server with a graphql-transport-ws code.
type closeError struct {
	code   int
	reason string
}

func (e *closeError) Error() string {
	if e.reason == "" {
		return fmt.Sprintf("the server closed the subscription (code %d)", e.code)
	}
	return fmt.Sprintf("the server closed the subscription (code %d: %s)", e.code, e.reason)
}

// permanentError marks an error that reconnecting cannot cure.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error {
	if err == nil {
		return nil
	}
	var p permanentError
	if errors.As(err, &p) {
		return err
	}
	return permanentError{err}
}

// unwrapPermanent returns the error permanent was given.
func unwrapPermanent(err error) error {
	var p permanentError
	if errors.As(err, &p) {
		return p.err
	}
	return err
}

func isPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
