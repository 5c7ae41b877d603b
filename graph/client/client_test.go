package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "jm_test-token-value"

// gqlRequest is a request as the test servers see it.
type gqlRequest struct {
	Query         string          `json:"query"`
	OperationName string          `json:"operationName"`
	Variables     json.RawMessage `json:"variables"`
}

// vars decodes the variables.
func (r gqlRequest) vars(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.Variables, &v); err != nil {
		t.Errorf("variables %s: %v", r.Variables, err)
	}
	return v
}

// graphQLServer answers POSTs with answer; it records the requests it got.
type graphQLServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []gqlRequest
	headers  []http.Header
}

func newGraphQLServer(t *testing.T, answer func(w http.ResponseWriter, req gqlRequest)) *graphQLServer {
	t.Helper()
	s := &graphQLServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/query" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		var req gqlRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("decode request: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.requests = append(s.requests, req)
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		answer(w, req)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *graphQLServer) last() (gqlRequest, http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == 0 {
		return gqlRequest{}, nil
	}
	return s.requests[len(s.requests)-1], s.headers[len(s.headers)-1]
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func newClient(t *testing.T, url, token string, opts ...Option) *Client {
	t.Helper()
	c, err := New(url, token, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const jobJSON = `{
  "id": "job-1", "type": "synthetic", "state": "STEP2_RUNNING", "progress": 0.25, "seq": 7,
  "counts": {"total": 8, "succeeded": 1, "failed": 1, "inFlight": 3, "retries": 2, "timedOut": 1, "duplicates": 0, "late": 0},
  "steps": [
    {"number": 1, "state": "FINISHED", "startedAt": "2026-01-02T03:04:05.5Z", "finishedAt": "2026-01-02T03:04:06Z"},
    {"number": 2, "state": "RUNNING", "startedAt": "2026-01-02T03:04:06Z", "finishedAt": null},
    {"number": 3, "state": "NOT_STARTED", "startedAt": null, "finishedAt": null}
  ],
  "input": {"subjobs": 8}, "output": null, "error": null, "deadline": null,
  "createdAt": "2026-01-02T03:04:05Z", "updatedAt": "2026-01-02T03:04:07Z", "endedAt": null
}`

func TestJobQuery(t *testing.T) {
	srv := newGraphQLServer(t, func(w http.ResponseWriter, req gqlRequest) {
		writeJSON(w, http.StatusOK, `{"data":{"job":`+jobJSON+`}}`)
	})
	c := newClient(t, srv.URL, testToken)
	j, err := c.Job(t.Context(), "job-1")
	if err != nil {
		t.Fatal(err)
	}
	req, h := srv.last()
	if got := h.Get("Authorization"); got != "Bearer "+testToken {
		t.Errorf("Authorization = %q", got)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if req.OperationName != "Job" || req.vars(t)["id"] != "job-1" {
		t.Errorf("request = %s %s", req.OperationName, req.Variables)
	}
	if j.ID != "job-1" || j.State != StateStep2Running || j.Seq != 7 || j.Progress != 0.25 {
		t.Errorf("job = %+v", j)
	}
	if j.Counts != (SubjobCounts{Total: 8, Succeeded: 1, Failed: 1, InFlight: 3, Retries: 2, TimedOut: 1}) {
		t.Errorf("counts = %+v", j.Counts)
	}
	if len(j.Steps) != 3 || !j.Steps[0].StartedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 5e8, time.UTC)) || !j.Steps[1].FinishedAt.IsZero() {
		t.Errorf("steps = %+v", j.Steps)
	}
	if string(j.Input) != `{"subjobs": 8}` || j.Output != nil || j.Error != "" || !j.EndedAt.IsZero() || !j.Deadline.IsZero() {
		t.Errorf("job = %+v", j)
	}
}

func TestJobNotFound(t *testing.T) {
	srv := newGraphQLServer(t, func(w http.ResponseWriter, _ gqlRequest) {
		writeJSON(w, http.StatusOK, `{"data":{"job":null}}`)
	})
	_, err := newClient(t, srv.URL, testToken).Job(t.Context(), "nope")
	if !errors.Is(err, ErrJobNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err = %v", err)
	}
}

func TestStartJob(t *testing.T) {
	srv := newGraphQLServer(t, func(w http.ResponseWriter, _ gqlRequest) {
		writeJSON(w, http.StatusOK, `{"data":{"startJob":{"job":`+jobJSON+`,"userErrors":[]}}}`)
	})
	deadline := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	j, err := newClient(t, srv.URL, testToken).StartJob(t.Context(), "synthetic", json.RawMessage(`{"subjobs":8}`), "key-1", deadline)
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != "job-1" {
		t.Errorf("job = %+v", j)
	}
	req, _ := srv.last()
	if req.OperationName != "StartJob" {
		t.Errorf("operation = %q", req.OperationName)
	}
	var v struct {
		Input struct {
			Type           string          `json:"type"`
			Input          json.RawMessage `json:"input"`
			IdempotencyKey string          `json:"idempotencyKey"`
			Deadline       string          `json:"deadline"`
		} `json:"input"`
	}
	if err := json.Unmarshal(req.Variables, &v); err != nil {
		t.Fatal(err)
	}
	if v.Input.Type != "synthetic" || string(v.Input.Input) != `{"subjobs":8}` || v.Input.IdempotencyKey != "key-1" || v.Input.Deadline != "2030-05-06T07:08:09Z" {
		t.Errorf("variables = %s", req.Variables)
	}
}

func TestStartJobInvalidInput(t *testing.T) {
	srv := newGraphQLServer(t, func(w http.ResponseWriter, _ gqlRequest) {
		t.Error("a request with invalid JSON input was sent")
	})
	_, err := newClient(t, srv.URL, testToken).StartJob(t.Context(), "synthetic", json.RawMessage(`{nope`), "", time.Time{})
	if !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("err = %v", err)
	}
}

func TestStartJobUserErrors(t *testing.T) {
	srv := newGraphQLServer(t, func(w http.ResponseWriter, _ gqlRequest) {
		writeJSON(w, http.StatusOK, `{"data":{"startJob":{"job":null,"userErrors":[
			{"__typename":"InputError","code":"UNKNOWN_JOB_TYPE","message":"no job type \"nope\"","field":["input","type"]},
			{"__typename":"InputError","code":"INVALID_INPUT","message":"deadline must lie in the future","field":["input","deadline"]}
		]}}}`)
	})
	_, err := newClient(t, srv.URL, testToken).StartJob(t.Context(), "nope", nil, "", time.Time{})
	var ue UserErrors
	if !errors.As(err, &ue) {
		t.Fatalf("err = %T %v, want UserErrors", err, err)
	}
	if len(ue) != 2 || ue[0].Code != CodeUnknownJobType || ue[1].Code != CodeInvalidInput || strings.Join(ue[1].Field, ".") != "input.deadline" {
		t.Errorf("user errors = %+v", ue)
	}
	want := `UNKNOWN_JOB_TYPE: no job type "nope" (field input.type); INVALID_INPUT: deadline must lie in the future (field input.deadline)`
	if err.Error() != want {
		t.Errorf("message = %q\nwant      %q", err.Error(), want)
	}
	if errors.Is(err, ErrJobNotFound) {
		t.Error("errors.Is(err, ErrJobNotFound) without a NOT_FOUND error")
	}
	req, _ := srv.last()
	if _, ok := req.vars(t)["input"].(map[string]any)["input"]; ok {
		t.Errorf("empty input was sent: %s", req.Variables)
	}
}

func TestCancelJob(t *testing.T) {
	srv := newGraphQLServer(t, func(w http.ResponseWriter, req gqlRequest) {
		in := req.vars(t)["input"].(map[string]any)
		switch in["jobId"] {
		case "job-1":
			if in["reason"] != "no longer needed" {
				t.Errorf("reason = %v", in["reason"])
			}
			writeJSON(w, http.StatusOK, `{"data":{"cancelJob":{"job":{"id":"job-1","state":"CANCELLED"},"userErrors":[]}}}`)
		case "done":
			writeJSON(w, http.StatusOK, `{"data":{"cancelJob":{"job":null,"userErrors":[{"__typename":"JobError","code":"ALREADY_FINISHED","message":"job already finished","field":null,"jobId":"done"}]}}}`)
		default:
			writeJSON(w, http.StatusOK, `{"data":{"cancelJob":{"job":null,"userErrors":[{"__typename":"JobError","code":"NOT_FOUND","message":"no job","field":["input","jobId"],"jobId":"x"}]}}}`)
		}
	})
	c := newClient(t, srv.URL, testToken)
	j, err := c.CancelJob(t.Context(), "job-1", "no longer needed")
	if err != nil || j.State != StateCancelled {
		t.Fatalf("cancel = %+v, %v", j, err)
	}
	_, err = c.CancelJob(t.Context(), "done", "")
	var ue UserErrors
	if !errors.As(err, &ue) || !ue.Has(CodeAlreadyFinished) || ue[0].JobID != "done" || errors.Is(err, ErrJobNotFound) {
		t.Errorf("cancel finished job: %v", err)
	}
	if _, err := c.CancelJob(t.Context(), "x", ""); !errors.Is(err, ErrJobNotFound) {
		t.Errorf("cancel unknown job: err = %v, want ErrJobNotFound", err)
	}
}

func TestHTTPErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		token  string
		answer func(w http.ResponseWriter)
		check  func(t *testing.T, err error)
	}{
		{"refused token", testToken, func(w http.ResponseWriter) {
			writeJSON(w, http.StatusUnauthorized, `{"errors":[{"message":"missing or invalid API token"}]}`)
		}, func(t *testing.T, err error) {
			if !errors.Is(err, ErrUnauthorized) || err.Error() != "the server refused the token" {
				t.Errorf("err = %v", err)
			}
		}},
		{"no token", "", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusUnauthorized)
		}, func(t *testing.T, err error) {
			if !errors.Is(err, ErrTokenRequired) {
				t.Errorf("err = %v", err)
			}
		}},
		{"rate limited", testToken, func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
		}, func(t *testing.T, err error) {
			var rl *RateLimitError
			if !errors.Is(err, ErrRateLimited) || !errors.As(err, &rl) || rl.RetryAfter != 3*time.Second {
				t.Errorf("err = %v", err)
			}
			if !strings.Contains(err.Error(), "rate limited") || !strings.Contains(err.Error(), "3s") {
				t.Errorf("message = %q", err)
			}
		}},
		{"graphql errors", testToken, func(w http.ResponseWriter) {
			writeJSON(w, http.StatusOK, `{"errors":[{"message":"boom","path":["job"]},{"message":"bang"}],"data":null}`)
		}, func(t *testing.T, err error) {
			var ge GraphQLErrors
			if !errors.As(err, &ge) || len(ge) != 2 || err.Error() != "boom; bang" {
				t.Errorf("err = %v", err)
			}
		}},
		{"validation failed", testToken, func(w http.ResponseWriter) {
			writeJSON(w, http.StatusUnprocessableEntity, `{"errors":[{"message":"Cannot query field \"nope\" on type \"Job\"."}],"data":null}`)
		}, func(t *testing.T, err error) {
			var ge GraphQLErrors
			if !errors.As(err, &ge) || !strings.Contains(err.Error(), `Cannot query field "nope"`) {
				t.Errorf("err = %v", err)
			}
		}},
		{"server error", testToken, func(w http.ResponseWriter) {
			http.Error(w, "database is down", http.StatusInternalServerError)
		}, func(t *testing.T, err error) {
			var he *HTTPError
			if !errors.As(err, &he) || he.StatusCode != 500 || !strings.Contains(err.Error(), "database is down") {
				t.Errorf("err = %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newGraphQLServer(t, func(w http.ResponseWriter, _ gqlRequest) { tc.answer(w) })
			_, err := newClient(t, srv.URL, tc.token).Job(t.Context(), "job-1")
			tc.check(t, err)
			if err != nil && strings.Contains(err.Error(), testToken) {
				t.Errorf("the error shows the token: %v", err)
			}
		})
	}
}

func TestNoGraphQLEndpoint(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, err := newClient(t, srv.URL, testToken).Job(t.Context(), "job-1")
	if err == nil || !strings.Contains(err.Error(), "no GraphQL API at "+srv.URL+"/query") {
		t.Fatalf("err = %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := newClient(t, url, testToken)
	_, err := c.Job(t.Context(), "job-1")
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.URL != url+"/query" || !strings.Contains(err.Error(), "cannot reach the jobmill server at "+url+"/query") {
		t.Fatalf("err = %v", err)
	}
	if strings.Count(err.Error(), url) != 1 {
		t.Errorf("the URL is repeated: %v", err)
	}
}

func TestCancelledContext(t *testing.T) {
	srv := newGraphQLServer(t, func(w http.ResponseWriter, _ gqlRequest) {
		writeJSON(w, http.StatusOK, `{"data":{"job":null}}`)
	})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := newClient(t, srv.URL, testToken).Job(ctx, "job-1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestEndpointURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8080":         "http://127.0.0.1:8080/query",
		"http://127.0.0.1:8080/":        "http://127.0.0.1:8080/query",
		"127.0.0.1:8080":                "http://127.0.0.1:8080/query",
		"https://jobs.example.com/api/": "https://jobs.example.com/api/",
		"https://jobs.example.com/q":    "https://jobs.example.com/q",
		"ws://localhost:8080/query":     "http://localhost:8080/query",
		"wss://jobs.example.com":        "https://jobs.example.com/query",
		" http://h:1 ":                  "http://h:1/query",
	} {
		c, err := New(in, "", nil)
		if err != nil {
			t.Errorf("New(%q): %v", in, err)
			continue
		}
		if c.endpoint != want {
			t.Errorf("New(%q) endpoint = %q, want %q", in, c.endpoint, want)
		}
	}
	for _, in := range []string{"", "ftp://h/", "http://", "http://[::1"} {
		if _, err := New(in, "", nil); err == nil {
			t.Errorf("New(%q) accepted", in)
		}
	}
	c, err := New("http://user:secret@h:1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.Endpoint(), "secret") {
		t.Errorf("Endpoint() = %q shows the password", c.Endpoint())
	}
}

// TestDocumentsMatchSchema validates every document the client sends against the server's schema.
func TestDocumentsMatchSchema(t *testing.T) {
	src, err := os.ReadFile("../schema.graphqls")
	if err != nil {
		t.Fatal(err)
	}
	schema, gerr := gqlparser.LoadSchema(&ast.Source{Name: "schema.graphqls", Input: string(src)})
	if gerr != nil {
		t.Fatal(gerr)
	}
	for name, doc := range map[string]string{
		"job": jobQuery, "startJob": startJobMutation, "cancelJob": cancelJobMutation, "jobEvents": jobEventsSubscription,
	} {
		if _, errs := gqlparser.LoadQueryWithRules(schema, doc, nil); len(errs) > 0 {
			t.Errorf("%s: %v", name, errs)
		}
	}
}
