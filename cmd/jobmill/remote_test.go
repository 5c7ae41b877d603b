package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

const goodToken = "jm_good-token-for-tests"

// fakeServer speaks jobmill's GraphQL API (POST and graphql-transport-ws) with a few canned jobs:
//
//	job-ok    running; its live view ends COMPLETED
//	job-fail  running; its live view ends FAILED
//	job-done  already COMPLETED
//
// startJob of type synthetic starts job-ok; other types are UNKNOWN_JOB_TYPE.
type fakeServer struct {
	*httptest.Server
	t *testing.T

	mu        sync.Mutex
	variables []map[string]any // of every POST, in order
	subscribe []map[string]any // variables of every subscription
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{t: t}
	var wg sync.WaitGroup
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/query" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Upgrade") != "" {
			wg.Add(1)
			defer wg.Done()
			f.serveWebsocket(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+goodToken {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errors":[{"message":"missing or invalid API token","extensions":{"code":"UNAUTHENTICATED"}}]}`))
			return
		}
		var req struct {
			OperationName string         `json:"operationName"`
			Variables     map[string]any `json:"variables"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Errorf("decode request: %v", err)
		}
		f.mu.Lock()
		f.variables = append(f.variables, req.Variables)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(f.answer(req.OperationName, req.Variables)))
	}))
	t.Cleanup(func() {
		f.Close()
		wg.Wait()
	})
	return f
}

// fakeJob renders a job.
func fakeJob(id, state string, succeeded, total int, errMsg, output string) string {
	ended := "null"
	if state == "COMPLETED" || state == "FAILED" || state == "CANCELLED" {
		ended = `"2026-01-02T03:04:07.5Z"`
	}
	e := "null"
	if errMsg != "" {
		e = fmt.Sprintf("%q", errMsg)
	}
	if output == "" {
		output = "null"
	}
	return fmt.Sprintf(`{"id":%q,"type":"synthetic","state":%q,"progress":%g,"seq":%d,
		"counts":{"total":%d,"succeeded":%d,"failed":0,"inFlight":%d,"retries":1,"timedOut":0,"duplicates":2,"late":0},
		"steps":[{"number":1,"state":"FINISHED","startedAt":"2026-01-02T03:04:05Z","finishedAt":"2026-01-02T03:04:06Z"},
		         {"number":2,"state":"RUNNING","startedAt":"2026-01-02T03:04:06Z","finishedAt":null},
		         {"number":3,"state":"NOT_STARTED","startedAt":null,"finishedAt":null}],
		"input":{"subjobs":4},"output":%s,"error":%s,"deadline":null,
		"createdAt":"2026-01-02T03:04:05Z","updatedAt":"2026-01-02T03:04:06Z","endedAt":%s}`,
		id, state, float64(succeeded)/float64(max(total, 1)), 10+succeeded, total, succeeded, min(1, total-succeeded), output, e, ended)
}

func (f *fakeServer) answer(op string, vars map[string]any) string {
	in, _ := vars["input"].(map[string]any)
	switch op {
	case "Job":
		switch vars["id"] {
		case "job-ok", "job-fail":
			return `{"data":{"job":` + fakeJob(vars["id"].(string), "STEP2_RUNNING", 1, 4, "", "") + `}}`
		case "job-done":
			return `{"data":{"job":` + fakeJob("job-done", "COMPLETED", 4, 4, "", `{"sum":10}`) + `}}`
		}
		return `{"data":{"job":null}}`
	case "StartJob":
		if in["type"] != "synthetic" {
			return `{"data":{"startJob":{"job":null,"userErrors":[{"__typename":"InputError","code":"UNKNOWN_JOB_TYPE","message":"unknown job type","field":["input","type"]}]}}}`
		}
		return `{"data":{"startJob":{"job":` + fakeJob("job-ok", "PENDING", 0, 0, "", "") + `,"userErrors":[]}}}`
	case "CancelJob":
		switch in["jobId"] {
		case "job-ok":
			return `{"data":{"cancelJob":{"job":` + fakeJob("job-ok", "CANCELLED", 1, 4, "cancelled by user", "") + `,"userErrors":[]}}}`
		case "job-done":
			return `{"data":{"cancelJob":{"job":null,"userErrors":[{"__typename":"JobError","code":"ALREADY_FINISHED","message":"the job already finished (COMPLETED)","field":["input","jobId"],"jobId":"job-done"}]}}}`
		}
		return `{"data":{"cancelJob":{"job":null,"userErrors":[{"__typename":"JobError","code":"NOT_FOUND","message":"job not found","field":["input","jobId"],"jobId":null}]}}}`
	}
	f.t.Errorf("unexpected operation %q", op)
	return `{"errors":[{"message":"unexpected operation"}]}`
}

func (f *fakeServer) serveWebsocket(w http.ResponseWriter, r *http.Request) {
	t := f.t
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Errorf("accept: %v", err)
		return
	}
	defer func() { _ = conn.CloseNow() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type message struct {
		ID      string          `json:"id,omitempty"`
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload,omitempty"`
	}
	read := func() (message, bool) {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return message{}, false
		}
		var m message
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("malformed message %s", b)
		}
		return m, true
	}
	send := func(m message) {
		b, _ := json.Marshal(m)
		_ = conn.Write(ctx, websocket.MessageText, b)
	}
	init, ok := read()
	if !ok || init.Type != "connection_init" {
		t.Errorf("first message = %+v", init)
		return
	}
	var auth map[string]string
	_ = json.Unmarshal(init.Payload, &auth)
	if auth["Authorization"] != "Bearer "+goodToken {
		_ = conn.Close(4401, "invalid API token")
		return
	}
	send(message{Type: "connection_ack"})
	sub, ok := read()
	if !ok || sub.Type != "subscribe" {
		t.Errorf("expected subscribe, got %+v", sub)
		return
	}
	var p struct {
		Variables map[string]any `json:"variables"`
	}
	_ = json.Unmarshal(sub.Payload, &p)
	f.mu.Lock()
	f.subscribe = append(f.subscribe, p.Variables)
	f.mu.Unlock()
	event := func(seq int, kind, job string) {
		send(message{ID: sub.ID, Type: "next", Payload: json.RawMessage(fmt.Sprintf(`{"data":{"jobEvents":{"seq":%d,"kind":%q,"step":2,"job":%s}}}`, seq, kind, job))})
	}
	switch p.Variables["jobId"] {
	case "job-ok":
		event(11, "SNAPSHOT", fakeJob("job-ok", "STEP2_RUNNING", 1, 4, "", ""))
		send(message{Type: "ping"})
		if m, _ := read(); m.Type != "pong" {
			t.Errorf("expected pong, got %+v", m)
		}
		event(13, "PROGRESS", fakeJob("job-ok", "STEP2_RUNNING", 3, 4, "", ""))
		event(15, "COMPLETED", fakeJob("job-ok", "COMPLETED", 4, 4, "", `{"sum":10}`))
	case "job-fail":
		event(11, "SNAPSHOT", fakeJob("job-fail", "STEP2_RUNNING", 1, 4, "", ""))
		event(12, "FAILED", fakeJob("job-fail", "FAILED", 1, 4, "step 3 failed: boom", ""))
	default:
		send(message{ID: sub.ID, Type: "next", Payload: json.RawMessage(`{"errors":[{"message":"job not found","extensions":{"code":"NOT_FOUND"}}],"data":null}`)})
	}
	send(message{ID: sub.ID, Type: "complete"})
	for {
		if _, ok := read(); !ok {
			return
		}
	}
}

// runCLI runs jobmill in process with args and returns what it printed.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// isolate keeps the environment of the machine out of a test.
func isolate(t *testing.T) {
	t.Setenv(envServer, "")
	t.Setenv(envToken, "")
	t.Setenv("JOBMILL_CONFIG", "")
}

func noToken(t *testing.T, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, goodToken) || strings.Contains(s, "jm_wrong") {
			t.Errorf("the token was printed: %q", s)
		}
	}
}

func TestRemoteSubmitWait(t *testing.T) {
	isolate(t)
	f := newFakeServer(t)
	out, errOut, err := runCLI(t, "submit", "--server", f.URL, "--token", goodToken, "--type", "synthetic",
		"--input", `{"subjobs":4}`, "--idempotency-key", "k1", "--wait")
	if err != nil {
		t.Fatalf("submit: %v\n%s%s", err, out, errOut)
	}
	noToken(t, out, errOut)
	for _, want := range []string{
		"job-ok\n",
		"job job-ok: PENDING, 0/0 sub-jobs done\n",
		"job job-ok: STEP2_RUNNING, 1/4 sub-jobs done\n",
		"job job-ok: COMPLETED, 4/4 sub-jobs done\n",
		"job job-ok (synthetic): COMPLETED\n",
		"  step 1: 03:04:05.000 → 03:04:06.000 (1s)\n",
		"  sub-jobs: 4 total, 4 succeeded, 0 failed\n",
		"  retries: 1, timed out: 0, duplicates absorbed: 2, late reports ignored: 0\n",
		"  took 2.5s\n",
		`  output: {"sum":10}` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasPrefix(out, "job-ok\n") {
		t.Errorf("the job id is not the first line:\n%s", out)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	in := f.variables[0]["input"].(map[string]any)
	if in["type"] != "synthetic" || in["idempotencyKey"] != "k1" || fmt.Sprint(in["input"]) != "map[subjobs:4]" {
		t.Errorf("startJob input = %v", in)
	}
	if len(f.subscribe) != 1 || f.subscribe[0]["jobId"] != "job-ok" {
		t.Errorf("subscriptions = %v", f.subscribe)
	}
}

func TestRemoteSubmitErrors(t *testing.T) {
	isolate(t)
	f := newFakeServer(t)
	_, _, err := runCLI(t, "submit", "--server", f.URL, "--token", goodToken, "--type", "nope")
	if err == nil || err.Error() != "UNKNOWN_JOB_TYPE: unknown job type (field input.type)" {
		t.Errorf("unknown type: %v", err)
	}
	_, _, err = runCLI(t, "submit", "--server", f.URL, "--token", goodToken, "--type", "synthetic", "--tenant", "acme")
	if err == nil || !strings.Contains(err.Error(), "--tenant does not apply with --server") {
		t.Errorf("--tenant: %v", err)
	}
	_, _, err = runCLI(t, "submit", "--server", f.URL, "--token", goodToken, "--type", "synthetic", "--input", "{nope")
	if err == nil || !strings.Contains(err.Error(), "valid JSON") {
		t.Errorf("bad input: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.variables) != 1 {
		t.Errorf("%d requests reached the server, want 1", len(f.variables))
	}
}

func TestRemoteWatchFailed(t *testing.T) {
	isolate(t)
	f := newFakeServer(t)
	t.Setenv(envServer, f.URL)
	t.Setenv(envToken, goodToken)
	out, errOut, err := runCLI(t, "watch", "job-fail")
	if err == nil || err.Error() != "job job-fail ended FAILED: step 3 failed: boom" {
		t.Fatalf("watch: %v\n%s%s", err, out, errOut)
	}
	for _, want := range []string{"job job-fail: STEP2_RUNNING, 1/4 sub-jobs done\n", "job job-fail: FAILED, 1/4 sub-jobs done\n",
		"job job-fail (synthetic): FAILED\n", "  error: step 3 failed: boom\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestRemoteWatch(t *testing.T) {
	isolate(t)
	f := newFakeServer(t)
	out, _, err := runCLI(t, "watch", "job-ok", "--server", f.URL, "--token", goodToken)
	if err != nil {
		t.Fatalf("watch: %v\n%s", err, out)
	}
	if !strings.Contains(out, "job job-ok: COMPLETED, 4/4 sub-jobs done\n") || !strings.Contains(out, "job job-ok (synthetic): COMPLETED\n") {
		t.Errorf("output:\n%s", out)
	}

	// A job that has ended needs no subscription.
	out, _, err = runCLI(t, "watch", "job-done", "--server", f.URL, "--token", goodToken)
	if err != nil || !strings.Contains(out, "job job-done (synthetic): COMPLETED\n") {
		t.Errorf("watch job-done: %v\n%s", err, out)
	}
	f.mu.Lock()
	subs := len(f.subscribe)
	f.mu.Unlock()
	if subs != 1 {
		t.Errorf("%d subscriptions, want 1", subs)
	}

	_, _, err = runCLI(t, "watch", "nope", "--server", f.URL, "--token", goodToken)
	if err == nil || err.Error() != "no job nope on the server at "+f.URL+"/query (for this token's tenant)" {
		t.Errorf("unknown job: %v", err)
	}
}

func TestRemoteStatus(t *testing.T) {
	isolate(t)
	f := newFakeServer(t)
	t.Setenv(envServer, f.URL)
	t.Setenv(envToken, goodToken)
	out, _, err := runCLI(t, "status", "job-ok")
	if err != nil {
		t.Fatal(err)
	}
	want := `job job-ok (synthetic): STEP2_RUNNING
  step 1: 03:04:05.000 → 03:04:06.000 (1s)
  step 2: started 2026-01-02T03:04:06Z
  step 3: not started
  sub-jobs: 4 total, 1 succeeded, 0 failed, 2 PENDING, 1 in flight
  retries: 1, timed out: 0, duplicates absorbed: 2, late reports ignored: 0
`
	if out != want {
		t.Errorf("status:\n%s\nwant:\n%s", out, want)
	}

	out, _, err = runCLI(t, "status", "job-done", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st remoteStatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	var output bytes.Buffer
	_ = json.Compact(&output, st.Output)
	if st.ID != "job-done" || st.State != "COMPLETED" || st.SubJobs["succeeded"] != 4 || len(st.Steps) != 3 || st.EndedAt == nil || output.String() != `{"sum":10}` {
		t.Errorf("status --json = %+v", st)
	}

	_, _, err = runCLI(t, "status", "nope")
	if err == nil || !strings.Contains(err.Error(), "no job nope on the server at "+f.URL) {
		t.Errorf("unknown job: %v", err)
	}
}

func TestRemoteCancel(t *testing.T) {
	isolate(t)
	f := newFakeServer(t)
	out, _, err := runCLI(t, "cancel", "job-ok", "--reason", "no longer needed", "--server", f.URL, "--token", goodToken)
	if err != nil || out != "job job-ok cancelled\n" {
		t.Fatalf("cancel: %q, %v", out, err)
	}
	f.mu.Lock()
	in := f.variables[0]["input"].(map[string]any)
	f.mu.Unlock()
	if in["jobId"] != "job-ok" || in["reason"] != "no longer needed" {
		t.Errorf("cancelJob input = %v", in)
	}
	_, _, err = runCLI(t, "cancel", "nope", "--server", f.URL, "--token", goodToken)
	if err == nil || !strings.Contains(err.Error(), "no job nope on the server at "+f.URL) {
		t.Errorf("unknown job: %v", err)
	}
	_, _, err = runCLI(t, "cancel", "job-done", "--server", f.URL, "--token", goodToken)
	if err == nil || err.Error() != "cannot cancel job job-done: ALREADY_FINISHED: the job already finished (COMPLETED) (field input.jobId)" {
		t.Errorf("finished job: %v", err)
	}
}

func TestRemoteTokenErrors(t *testing.T) {
	isolate(t)
	f := newFakeServer(t)
	endpoint := f.URL + "/query"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"status without token", []string{"status", "job-ok"}, "the server at " + endpoint + " needs an API token: pass --token or set JOBMILL_TOKEN"},
		{"status with a bad token", []string{"status", "job-ok", "--token", "jm_wrong"}, "invalid token: the server at " + endpoint + " refused it"},
		{"submit with a bad token", []string{"submit", "--type", "synthetic", "--token", "jm_wrong"}, "invalid token: the server at " + endpoint + " refused it"},
		{"cancel without token", []string{"cancel", "job-ok"}, "needs an API token"},
		{"watch without token", []string{"watch", "job-ok"}, "needs an API token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runCLI(t, append(tc.args, "--server", f.URL)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			noToken(t, out, errOut, err.Error())
		})
	}
}

func TestRemoteWatchTokenRefusedBySubscription(t *testing.T) {
	isolate(t)
	// Queries pass and the websocket refuses the token: a server whose token was revoked in between.
	f := newFakeServer(t)
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			f.Config.Handler.ServeHTTP(w, r)
			return
		}
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"graphql-transport-ws"}})
		if err != nil {
			return
		}
		_, _, _ = conn.Read(r.Context())
		_ = conn.Close(4401, "invalid API token")
	}))
	defer ws.Close()
	_, _, err := runCLI(t, "watch", "job-ok", "--server", ws.URL, "--token", goodToken)
	if err == nil || err.Error() != "follow job job-ok: invalid token: the server at "+ws.URL+"/query refused it; check --token or JOBMILL_TOKEN" {
		t.Fatalf("err = %v", err)
	}
}

func TestRemoteUnreachable(t *testing.T) {
	isolate(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	for _, args := range [][]string{{"status", "x"}, {"cancel", "x"}, {"watch", "x"}, {"submit", "--type", "synthetic"}} {
		_, _, err := runCLI(t, append(args, "--server", url)...)
		if err == nil || !strings.Contains(err.Error(), "cannot reach the jobmill server at "+url+"/query") {
			t.Errorf("%s: err = %v", args[0], err)
		}
	}
}

func TestRemoteFlags(t *testing.T) {
	isolate(t)
	_, _, err := runCLI(t, "status", "x", "--token", goodToken)
	if err == nil || !strings.Contains(err.Error(), "--token is for a remote server: add --server URL or set JOBMILL_SERVER") {
		t.Errorf("--token alone: %v", err)
	}
	noToken(t, fmt.Sprint(err))
	_, _, err = runCLI(t, "status", "x", "--server", "ftp://example.com")
	if err == nil || !strings.Contains(err.Error(), "--server: invalid server URL") {
		t.Errorf("bad URL: %v", err)
	}
	t.Setenv(envServer, "ftp://example.com")
	_, _, err = runCLI(t, "status", "x")
	if err == nil || !strings.Contains(err.Error(), "$JOBMILL_SERVER: invalid server URL") {
		t.Errorf("bad URL in the environment: %v", err)
	}
}
