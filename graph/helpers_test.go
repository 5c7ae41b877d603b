package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/jobmill/jobmill/adapters/jobstore"
	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/app"
	"github.com/jobmill/jobmill/app/access"
	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/job/jobtest"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/app/live"
	"github.com/jobmill/jobmill/app/manager"
	"github.com/jobmill/jobmill/app/notify"
	"github.com/jobmill/jobmill/app/query"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/app/timeline"
	"github.com/jobmill/jobmill/graph"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Tenants of the fixtures.
const (
	acme   = "acme"
	globex = "globex"
	// otherType is a second registered type, for the type filter.
	otherType = "synthetic-b"
)

// waitFor bounds every wait for a message: a broken feature fails the test instead of hanging it.
const waitFor = 10 * time.Second

// fixture is the core on an SQLite file, with the GraphQL handler on an httptest server. No worker
// runs: tests move jobs through their life with the manager's own reactions and tell the live hub, so
// every change is deterministic.
type fixture struct {
	t     *testing.T
	db    *sqlite.DB
	store *jobstore.SQLite
	app   app.Application
	hub   *live.Hub
	mgr   *manager.Manager
	// hooks and notifier are the webhooks' store and the projection that records their deliveries; no
	// deliverer runs, so every delivery stays PENDING.
	hooks    *jobstore.Webhooks
	notifier *notify.Projection
	srv      *httptest.Server
	// endpoint is the URL of the GraphQL endpoint on srv.
	endpoint string
	logs     *syncBuffer
	tokens   map[string]string // tenant → token
	// stop cancels the server's BaseContext, as the service does on shutdown.
	stop context.CancelFunc

	// markers are the jobs that jobsChanged listeners use to know that their stream started.
	markers []string

	mu    sync.Mutex
	clock time.Time
	ids   int
}

type fixtureOption func(*graph.Config)

func newFixture(t *testing.T, opts ...fixtureOption) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t, logs: &syncBuffer{}, tokens: map[string]string{}, clock: time.Now().UTC().Truncate(time.Second)}
	logger := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	db, err := sqlite.Open(filepath.Join(t.TempDir(), "jobmill.db"))
	if err != nil {
		t.Fatal(err)
	}
	f.db = db
	if err := sqlite.InitializeLogTopics(ctx, db, messaging.EventsTopic); err != nil {
		t.Fatal(err)
	}
	if err := sqlite.InitializeQueue(ctx, db); err != nil {
		t.Fatal(err)
	}
	if f.store, err = jobstore.NewSQLite(ctx, db, nil); err != nil {
		t.Fatal(err)
	}

	types := jobtype.NewRegistry()
	policy := jobtype.Policy{MaxAttempts: 1, ToleratedFailurePercent: 100}
	types.MustRegister(synthetic.Definition(policy))
	other := synthetic.Definition(policy)
	other.Name = otherType
	types.MustRegister(other)

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var a app.Application
	a.Commands.SubmitJob, err = command.NewSubmitJobHandler(f.store, types, f.newID, f.now)
	must(err)
	a.Commands.CancelJob, err = command.NewCancelJobHandler(f.store, f.now)
	must(err)
	a.Commands.RetryFailedSubJobs, err = command.NewRetryFailedSubJobsHandler(f.store, f.now)
	must(err)
	a.Queries.JobStatus, err = query.NewJobStatusHandler(f.store)
	must(err)
	a.Queries.ListJobs, err = query.NewListJobsHandler(f.store)
	must(err)
	a.Queries.ListSubJobs, err = query.NewListSubJobsHandler(f.store)
	must(err)
	a.Queries.JobTypes, err = query.NewJobTypesHandler(types)
	must(err)
	tokenStore := &memTokens{byHash: map[string]access.Token{}}
	a.Tokens, err = access.NewTokens(tokenStore, time.Now)
	must(err)
	f.hub, err = live.NewHub(f.store, live.Config{ProgressInterval: 5 * time.Millisecond, ListInterval: 10 * time.Millisecond}, logger)
	must(err)
	a.Live = f.hub
	f.app = a
	f.mgr, err = manager.New(f.store, manager.Config{Window: 1000}, f.now, nopObserver{}, logger)
	must(err)

	for _, tenant := range []string{acme, globex} {
		tok, _, err := a.Tokens.Create(ctx, tenant, "test")
		must(err)
		f.tokens[tenant] = tok
	}

	statsStore, err := jobstore.NewStatsStore(f.store)
	must(err)
	statsView, err := stats.New(statsStore)
	must(err)
	timelineStore, err := jobstore.NewTimelineStore(f.store)
	must(err)
	timelineView, err := timeline.New(timelineStore)
	must(err)
	f.hooks, err = jobstore.NewWebhooks(f.store)
	must(err)
	webhooks, err := notify.NewService(f.hooks, f.now)
	must(err)
	f.notifier, err = notify.NewProjection(f.hooks, f.store, f.now, logger)
	must(err)

	cfg := graph.Config{App: a, Stats: statsView, Timeline: timelineView, Webhooks: webhooks,
		AuthRequired: true, Logger: logger, RateLimit: 1000, RateBurst: 1000}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := graph.NewHandler(cfg)
	must(err)
	base, stop := context.WithCancel(context.Background())
	f.stop = stop
	f.srv = httptest.NewUnstartedServer(h)
	f.srv.Config.BaseContext = func(net.Listener) context.Context { return base }
	f.srv.Start()
	f.endpoint = f.srv.URL
	t.Cleanup(func() {
		stop()
		f.hub.Close()
		f.srv.Close()
		_ = db.Close()
	})
	return f
}

func (f *fixture) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Every reading is a second later, so that jobs have distinct creation times.
	f.clock = f.clock.Add(time.Second)
	return f.clock
}

func (f *fixture) newID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids++
	return fmt.Sprintf("job-%06d", f.ids)
}

// submit starts a synthetic job for tenant through the core.
func (f *fixture) submit(tenant, jobType string) string {
	f.t.Helper()
	id, err := f.app.Commands.SubmitJob.Handle(context.Background(), command.SubmitJob{Tenant: tenant, Type: jobType, Input: []byte(`{"subjobs":3}`)})
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

func (f *fixture) getJob(id string) *job.Job {
	f.t.Helper()
	j, err := f.store.GetJob(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return j
}

// The manager's reactions, each followed by the notification the live feed would send.

func (f *fixture) startStep1(id string) {
	f.t.Helper()
	f.check(f.mgr.OnJobStarted(context.Background(), &job.JobStarted{JobID: id}))
	f.hub.Notify(id, true)
}

func (f *fixture) completeStep1(id string, subjobs int) {
	f.t.Helper()
	inputs := make([][]byte, subjobs)
	for i := range inputs {
		inputs[i] = []byte(fmt.Sprintf(`{"i":%d}`, i))
	}
	f.check(f.store.AddSubJobs(context.Background(), id, 0, inputs))
	f.check(f.mgr.OnStep1Completed(context.Background(), &job.Step1Completed{JobID: id, Attempt: 1, Total: int64(subjobs)}))
	f.hub.Notify(id, true)
}

func (f *fixture) subjobSucceeded(id string, index int64) {
	f.t.Helper()
	f.check(f.mgr.OnSubJobsReported(context.Background(), jobtest.Completed(&job.Step2SubjobCompleted{JobID: id, Index: index, Attempt: 1})))
	f.hub.Notify(id, false)
}

// subjobFailed fails a sub-job's attempt; the fixture's policy has one attempt, so it fails for good.
func (f *fixture) subjobFailed(id string, index int64, attempt int) {
	f.t.Helper()
	f.check(f.mgr.OnSubJobsReported(context.Background(), jobtest.Failed(&job.Step2SubjobFailed{JobID: id, Index: index, Attempt: attempt, Error: "boom"})))
	f.hub.Notify(id, false)
}

func (f *fixture) startStep3(id string) {
	f.t.Helper()
	f.check(f.mgr.OnStep2Completed(context.Background(), &job.Step2Completed{JobID: id}))
	f.hub.Notify(id, true)
}

func (f *fixture) completeStep3(id string) {
	f.t.Helper()
	f.check(f.mgr.OnStep3Completed(context.Background(), &job.Step3Completed{JobID: id, Attempt: 1, Output: []byte(`{"ok":true}`)}))
	f.hub.Notify(id, true)
}

// runToStep2 moves a new job into step 2 with n sub-jobs dispatched.
func (f *fixture) runToStep2(id string, n int) {
	f.t.Helper()
	f.startStep1(id)
	f.completeStep1(id, n)
}

func (f *fixture) check(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

// --- HTTP client ---

type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
}

// gql posts a GraphQL request with the tenant's token ("" for none) and returns the HTTP response and
// its decoded body.
func (f *fixture) gql(tenant, q string, vars map[string]any) (*http.Response, gqlResponse) {
	f.t.Helper()
	return f.gqlToken(f.tokens[tenant], q, vars)
}

func (f *fixture) gqlToken(token, q string, vars map[string]any) (*http.Response, gqlResponse) {
	f.t.Helper()
	body, err := json.Marshal(map[string]any{"query": q, "variables": vars})
	if err != nil {
		f.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, f.endpoint, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return f.send(req)
}

func (f *fixture) send(req *http.Request) (*http.Response, gqlResponse) {
	f.t.Helper()
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	var out gqlResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		f.t.Fatalf("response %d is not JSON: %v: %s", resp.StatusCode, err, raw)
	}
	return resp, out
}

// data decodes a successful response's data into v and fails on any error.
func (f *fixture) data(tenant, q string, vars map[string]any, v any) {
	f.t.Helper()
	resp, out := f.gql(tenant, q, vars)
	if resp.StatusCode != http.StatusOK || len(out.Errors) > 0 {
		f.t.Fatalf("%s: status %d, errors %+v", q, resp.StatusCode, out.Errors)
	}
	if err := json.Unmarshal(out.Data, v); err != nil {
		f.t.Fatal(err)
	}
}

// gqlErrors runs a request that must fail and returns its errors.
func (f *fixture) gqlErrors(tenant, q string, vars map[string]any) []gqlError {
	f.t.Helper()
	_, out := f.gql(tenant, q, vars)
	if len(out.Errors) == 0 {
		f.t.Fatalf("%s: no error; data %s", q, out.Data)
	}
	return out.Errors
}

func errorsMention(errs []gqlError, s string) bool {
	for _, e := range errs {
		if strings.Contains(e.Message, s) {
			return true
		}
	}
	return false
}

// --- graphql-transport-ws client ---

type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
	msgs chan wsMessage
	// silent clients do not answer pings: readLoop delivers them like other messages.
	silent bool
	// pinged, when set, gets a value for every ping answered (when there is room).
	pinged chan struct{}
	// err is why the connection ended; read it after msgs closed.
	err    error
	closed chan struct{}
	once   sync.Once
}

func (f *fixture) wsURL() string { return "ws" + strings.TrimPrefix(f.endpoint, "http") }

// dialWS opens a websocket speaking graphql-transport-ws.
func (f *fixture) dialWS(header http.Header) (*wsClient, *http.Response, error) {
	return f.dialProtocol("graphql-transport-ws", header, wsOptions{})
}

// wsOptions change how a test client treats pings.
type wsOptions struct {
	// silent: answer no ping; deliver them as messages.
	silent bool
	// pinged gets a value for every ping answered (when there is room).
	pinged chan struct{}
}

func (f *fixture) dialProtocol(protocol string, header http.Header, opts wsOptions) (*wsClient, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, f.wsURL(), &websocket.DialOptions{
		Subprotocols: []string{protocol},
		HTTPHeader:   header,
		HTTPClient:   f.srv.Client(),
	})
	if err != nil {
		return nil, resp, err
	}
	c := &wsClient{t: f.t, conn: conn, msgs: make(chan wsMessage, 64), closed: make(chan struct{}), silent: opts.silent, pinged: opts.pinged}
	go c.readLoop()
	f.t.Cleanup(c.close)
	return c, resp, nil
}

// readLoop delivers messages other than ping and pong, answering pings as clients must.
func (c *wsClient) readLoop() {
	defer close(c.msgs)
	for {
		_, b, err := c.conn.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		var m wsMessage
		if err := json.Unmarshal(b, &m); err != nil {
			c.err = fmt.Errorf("message is not JSON: %w: %s", err, b)
			return
		}
		switch {
		case m.Type == "ping" && !c.silent:
			if err := c.sendErr(wsMessage{Type: "pong"}); err != nil {
				c.err = err
				return
			}
			if c.pinged != nil {
				select {
				case c.pinged <- struct{}{}:
				default:
				}
			}
			continue
		case m.Type == "pong":
			continue
		}
		select {
		case c.msgs <- m:
		case <-c.closed:
			return
		}
	}
}

// close drops the connection without a close handshake, as a client that vanishes does.
func (c *wsClient) close() {
	c.once.Do(func() {
		close(c.closed)
		_ = c.conn.CloseNow()
	})
}

// connect opens a websocket and completes connection_init with tenant's token in the payload.
func (f *fixture) connect(tenant string) *wsClient {
	f.t.Helper()
	c, _, err := f.dialWS(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	var payload map[string]any
	if tenant != "" {
		payload = map[string]any{"Authorization": "Bearer " + f.tokens[tenant]}
	}
	c.send(wsMessage{Type: "connection_init", Payload: mustJSON(f.t, payload)})
	if m := c.read(); m.Type != "connection_ack" {
		f.t.Fatalf("connection_init answered with %+v", m)
	}
	return c
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (c *wsClient) send(m wsMessage) {
	c.t.Helper()
	if err := c.sendErr(m); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) sendErr(m wsMessage) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return c.conn.Write(ctx, websocket.MessageText, b)
}

// readErr returns the next message, or why the connection ended.
func (c *wsClient) readErr() (wsMessage, error) {
	c.t.Helper()
	m, ok, err := c.readWithin(waitFor)
	if err != nil {
		return m, err
	}
	if !ok {
		c.t.Fatalf("no message within %s", waitFor)
	}
	return m, nil
}

// readWithin returns the next message if one arrives within d (ok false if none did).
func (c *wsClient) readWithin(d time.Duration) (wsMessage, bool, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case m, open := <-c.msgs:
		if !open {
			return wsMessage{}, false, c.err
		}
		return m, true, nil
	case <-timer.C:
		return wsMessage{}, false, nil
	}
}

func (c *wsClient) read() wsMessage {
	c.t.Helper()
	m, err := c.readErr()
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *wsClient) subscribe(id, q string, vars map[string]any) {
	c.t.Helper()
	c.send(wsMessage{ID: id, Type: "subscribe", Payload: mustJSON(c.t, map[string]any{"query": q, "variables": vars})})
}

// decodeNext decodes a next message's data into v; errors in it fail the test.
func (c *wsClient) decodeNext(m wsMessage, v any) {
	c.t.Helper()
	var r gqlResponse
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		c.t.Fatal(err)
	}
	if len(r.Errors) > 0 {
		c.t.Fatalf("subscription %s: errors %+v", m.ID, r.Errors)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		c.t.Fatal(err)
	}
}

// next reads the next message of subscription id: its decoded data, or done when it completed.
func (c *wsClient) next(id string, v any) (done bool) {
	c.t.Helper()
	m := c.read()
	if m.ID != id {
		c.t.Fatalf("message for %q, want %q: %+v", m.ID, id, m)
	}
	switch m.Type {
	case "complete":
		return true
	case "next":
		c.decodeNext(m, v)
		return false
	}
	c.t.Fatalf("unexpected message %+v", m)
	return true
}

// closeStatus waits for the server to close the connection and returns the close code and reason.
func (c *wsClient) closeStatus() (websocket.StatusCode, string) {
	c.t.Helper()
	for {
		_, err := c.readErr()
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("connection ended without a close frame: %v", err)
		}
		return ce.Code, ce.Reason
	}
}

// --- doubles ---

type memTokens struct {
	mu     sync.Mutex
	byHash map[string]access.Token
}

func (m *memTokens) SaveToken(_ context.Context, t access.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byHash[t.Hash] = t
	return nil
}

func (m *memTokens) TokenByHash(_ context.Context, hash string) (access.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.byHash[hash]
	if !ok {
		return access.Token{}, access.ErrTokenNotFound
	}
	return t, nil
}

type nopObserver struct{}

func (nopObserver) Step2Closed(string, time.Duration) {}
func (nopObserver) Absorbed(string, job.Outcome)      {}
func (nopObserver) JobEnded(string, job.State)        {}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func cancelCmd(id string) command.CancelJob { return command.CancelJob{JobID: id, Reason: "test"} }
