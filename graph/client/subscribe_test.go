package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsConn is the server's side of one graphql-transport-ws connection in a test.
type wsConn struct {
	t    *testing.T
	conn *websocket.Conn
	ctx  context.Context
}

func (c *wsConn) send(msg wsMessage) {
	c.t.Helper()
	b, _ := json.Marshal(msg)
	if err := c.conn.Write(c.ctx, websocket.MessageText, b); err != nil {
		c.t.Errorf("server write %s: %v", msg.Type, err)
	}
}

// read returns the next message; ok is false when the connection ended.
func (c *wsConn) read() (wsMessage, bool) {
	_, b, err := c.conn.Read(c.ctx)
	if err != nil {
		return wsMessage{}, false
	}
	var msg wsMessage
	if err := json.Unmarshal(b, &msg); err != nil {
		c.t.Errorf("server got malformed message %s: %v", b, err)
		return wsMessage{}, false
	}
	return msg, true
}

// expect reads the next message and checks its type.
func (c *wsConn) expect(typ string) wsMessage {
	c.t.Helper()
	msg, ok := c.read()
	if !ok {
		c.t.Errorf("server expected %s, the connection ended", typ)
		return wsMessage{}
	}
	if msg.Type != typ {
		c.t.Errorf("server expected %s, got %s %s", typ, msg.Type, msg.Payload)
	}
	return msg
}

// handshake reads connection_init, checks the token and acknowledges.
func (c *wsConn) handshake(token string) {
	c.t.Helper()
	init := c.expect("connection_init")
	var p map[string]string
	_ = json.Unmarshal(init.Payload, &p)
	if want := "Bearer " + token; p["Authorization"] != want {
		c.t.Errorf("connection_init payload = %s", init.Payload)
	}
	c.send(wsMessage{Type: "connection_ack"})
}

// subscribe reads the subscribe message and returns its afterSeq (-1 when absent).
func (c *wsConn) subscribe(jobID string) int64 {
	c.t.Helper()
	msg := c.expect("subscribe")
	if msg.ID != subscriptionID {
		c.t.Errorf("subscribe id = %q", msg.ID)
	}
	var p struct {
		Query     string `json:"query"`
		Variables struct {
			JobID    string `json:"jobId"`
			AfterSeq *int64 `json:"afterSeq"`
		} `json:"variables"`
	}
	if err := json.Unmarshal(msg.Payload, &p); err != nil {
		c.t.Errorf("subscribe payload %s: %v", msg.Payload, err)
	}
	if !strings.Contains(p.Query, "jobEvents(jobId: $jobId, afterSeq: $afterSeq)") || p.Variables.JobID != jobID {
		c.t.Errorf("subscribe payload = %s", msg.Payload)
	}
	if p.Variables.AfterSeq == nil {
		return -1
	}
	return *p.Variables.AfterSeq
}

// event sends a next message for job-1.
func (c *wsConn) event(seq int64, kind EventKind, state JobState, succeeded int64) {
	c.t.Helper()
	payload := fmt.Sprintf(`{"data":{"jobEvents":{"seq":%d,"kind":%q,"step":2,"job":{"id":"job-1","type":"synthetic","state":%q,"progress":%g,"seq":%d,"counts":{"total":4,"succeeded":%d,"failed":0,"inFlight":0,"retries":0,"timedOut":0,"duplicates":0,"late":0},"steps":[],"output":null,"error":null,"deadline":null,"createdAt":"2026-01-02T03:04:05Z","updatedAt":"2026-01-02T03:04:05Z","endedAt":null}}}}`,
		seq, kind, state, float64(succeeded)/4, seq, succeeded)
	c.send(wsMessage{ID: subscriptionID, Type: "next", Payload: json.RawMessage(payload)})
}

// drain reads until the client closes the connection, so that its close handshake completes.
func (c *wsConn) drain() {
	for {
		if _, ok := c.read(); !ok {
			return
		}
	}
}

// wsServer runs handle for every websocket connection; n is the connection's number from 1.
type wsServer struct {
	*httptest.Server
	conns atomic.Int32
}

func newWSServer(t *testing.T, handle func(c *wsConn, n int)) *wsServer {
	t.Helper()
	s := &wsServer{}
	var wg sync.WaitGroup
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(s.conns.Add(1))
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{subprotocol}})
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		wg.Add(1)
		defer wg.Done()
		defer func() { _ = conn.CloseNow() }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		handle(&wsConn{t: t, conn: conn, ctx: ctx}, n)
	}))
	t.Cleanup(func() {
		s.Close()
		wg.Wait()
	})
	return s
}

// collect reads a watch to its end.
func collect(t *testing.T, events <-chan JobEvent, errc <-chan error) ([]JobEvent, error) {
	t.Helper()
	var got []JobEvent
	timeout := time.After(15 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return got, <-errc
			}
			got = append(got, ev)
		case <-timeout:
			t.Fatal("the watch did not end")
		}
	}
}

func seqs(evs []JobEvent) string {
	s := make([]string, len(evs))
	for i, ev := range evs {
		s[i] = fmt.Sprintf("%d:%s", ev.Seq, ev.Kind)
	}
	return strings.Join(s, " ")
}

func TestWatchJob(t *testing.T) {
	srv := newWSServer(t, func(c *wsConn, _ int) {
		c.handshake(testToken)
		if after := c.subscribe("job-1"); after != -1 {
			c.t.Errorf("afterSeq = %d on the first subscription, want none", after)
		}
		c.event(3, EventSnapshot, StateStep2Running, 0)
		c.send(wsMessage{Type: "ping"})
		c.expect("pong")
		c.event(4, EventProgress, StateStep2Running, 2)
		c.event(6, EventCompleted, StateCompleted, 4)
		c.send(wsMessage{ID: subscriptionID, Type: "complete"})
		c.drain()
	})
	events, errc := newClient(t, srv.URL, testToken).WatchJob(t.Context(), "job-1", 0)
	got, err := collect(t, events, errc)
	if err != nil {
		t.Fatal(err)
	}
	if s := seqs(got); s != "3:SNAPSHOT 4:PROGRESS 6:COMPLETED" {
		t.Errorf("events = %s", s)
	}
	if j := got[1].Job; j.Counts.Succeeded != 2 || j.Progress != 0.5 || j.State != StateStep2Running || got[1].Step != 2 {
		t.Errorf("event = %+v", got[1])
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestWatchJobResumesAfterDrop(t *testing.T) {
	var afterSeqs []int64
	var mu sync.Mutex
	srv := newWSServer(t, func(c *wsConn, n int) {
		c.handshake(testToken)
		after := c.subscribe("job-1")
		mu.Lock()
		afterSeqs = append(afterSeqs, after)
		mu.Unlock()
		switch n {
		case 1:
			c.event(1, EventSnapshot, StateStep2Running, 0)
			c.event(2, EventProgress, StateStep2Running, 1)
			c.event(3, EventProgress, StateStep2Running, 2)
			_ = c.conn.CloseNow() // dropped without a close handshake
		case 2:
			c.event(5, EventSnapshot, StateStep2Running, 3)
			_ = c.conn.Close(websocket.StatusGoingAway, "server restarting")
		case 3:
			// A server may resend what the client already has; it must not be delivered twice.
			c.event(5, EventProgress, StateStep2Running, 3)
			c.event(7, EventCompleted, StateCompleted, 4)
			c.send(wsMessage{ID: subscriptionID, Type: "complete"})
			c.drain()
		}
	})
	events, errc := newClient(t, srv.URL, testToken, WithReconnect(3, 5*time.Millisecond)).WatchJob(t.Context(), "job-1", 0)
	got, err := collect(t, events, errc)
	if err != nil {
		t.Fatal(err)
	}
	if s := seqs(got); s != "1:SNAPSHOT 2:PROGRESS 3:PROGRESS 5:SNAPSHOT 7:COMPLETED" {
		t.Errorf("events = %s", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(afterSeqs) != "[-1 3 5]" {
		t.Errorf("afterSeq sent = %v, want none, then the last seq received: [-1 3 5]", afterSeqs)
	}
}

func TestWatchJobStartsAfterSeq(t *testing.T) {
	srv := newWSServer(t, func(c *wsConn, _ int) {
		c.handshake(testToken)
		if after := c.subscribe("job-1"); after != 9 {
			c.t.Errorf("afterSeq = %d, want 9", after)
		}
		c.event(10, EventFailed, StateFailed, 4)
		c.send(wsMessage{ID: subscriptionID, Type: "complete"})
		c.drain()
	})
	events, errc := newClient(t, srv.URL, testToken).WatchJob(t.Context(), "job-1", 9)
	got, err := collect(t, events, errc)
	if err != nil || seqs(got) != "10:FAILED" {
		t.Fatalf("events = %s, err = %v", seqs(got), err)
	}
}

func TestWatchJobDropAfterFinalEvent(t *testing.T) {
	srv := newWSServer(t, func(c *wsConn, _ int) {
		c.handshake(testToken)
		c.subscribe("job-1")
		c.event(4, EventCancelled, StateCancelled, 1)
		_ = c.conn.CloseNow()
	})
	events, errc := newClient(t, srv.URL, testToken, WithReconnect(3, time.Millisecond)).WatchJob(t.Context(), "job-1", 0)
	got, err := collect(t, events, errc)
	if err != nil || seqs(got) != "4:CANCELLED" {
		t.Fatalf("events = %s, err = %v", seqs(got), err)
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("%d connections after the final event, want 1", n)
	}
}

func TestWatchJobInvalidToken(t *testing.T) {
	for _, tc := range []struct {
		name, token string
		want        error
		text        string
	}{
		{"refused", "jm_revoked", ErrUnauthorized, "invalid token (token revoked): the server refused the token"},
		{"missing", "", ErrTokenRequired, "the server requires an API token (token revoked)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newWSServer(t, func(c *wsConn, _ int) {
				c.expect("connection_init")
				_ = c.conn.Close(4401, "token revoked")
			})
			events, errc := newClient(t, srv.URL, tc.token, WithReconnect(5, time.Millisecond)).WatchJob(t.Context(), "job-1", 0)
			got, err := collect(t, events, errc)
			if len(got) != 0 || !errors.Is(err, tc.want) || err.Error() != tc.text {
				t.Fatalf("events = %s, err = %v, want %q", seqs(got), err, tc.text)
			}
			if n := srv.conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1: 4401 is final", n)
			}
		})
	}
}

func TestWatchJobTokenRevokedOnReconnect(t *testing.T) {
	srv := newWSServer(t, func(c *wsConn, n int) {
		if n > 1 {
			c.expect("connection_init")
			_ = c.conn.Close(4401, "Unauthorized")
			return
		}
		c.handshake(testToken)
		c.subscribe("job-1")
		c.event(1, EventSnapshot, StateStep2Running, 0)
		_ = c.conn.CloseNow()
	})
	events, errc := newClient(t, srv.URL, testToken, WithReconnect(5, time.Millisecond)).WatchJob(t.Context(), "job-1", 0)
	got, err := collect(t, events, errc)
	if seqs(got) != "1:SNAPSHOT" || !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "invalid token") {
		t.Fatalf("events = %s, err = %v", seqs(got), err)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

func TestWatchJobHTTPUnauthorized(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "missing or invalid API token", http.StatusUnauthorized)
	}))
	defer srv.Close()
	events, errc := newClient(t, srv.URL, testToken).WatchJob(t.Context(), "job-1", 0)
	if _, err := collect(t, events, errc); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v", err)
	}
}

func TestWatchJobCancel(t *testing.T) {
	completed := make(chan struct{})
	srv := newWSServer(t, func(c *wsConn, _ int) {
		c.handshake(testToken)
		c.subscribe("job-1")
		c.event(1, EventSnapshot, StateStep2Running, 0)
		msg := c.expect("complete")
		if msg.ID != subscriptionID {
			c.t.Errorf("complete id = %q", msg.ID)
		}
		close(completed)
		c.drain()
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	events, errc := newClient(t, srv.URL, testToken).WatchJob(ctx, "job-1", 0)
	if ev := <-events; ev.Seq != 1 {
		t.Fatalf("first event = %+v", ev)
	}
	cancel()
	if _, err := collect(t, events, errc); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	select {
	case <-completed:
	case <-time.After(5 * time.Second):
		t.Fatal("the server got no complete message")
	}
}

func TestWatchJobSubscriptionError(t *testing.T) {
	srv := newWSServer(t, func(c *wsConn, _ int) {
		c.handshake(testToken)
		c.subscribe("job-1")
		c.send(wsMessage{ID: subscriptionID, Type: "error", Payload: json.RawMessage(`[{"message":"job not found","path":["jobEvents"],"extensions":{"code":"NOT_FOUND"}}]`)})
		c.drain()
	})
	events, errc := newClient(t, srv.URL, testToken, WithReconnect(5, time.Millisecond)).WatchJob(t.Context(), "job-1", 0)
	_, err := collect(t, events, errc)
	var ge GraphQLErrors
	if !errors.As(err, &ge) || err.Error() != "job not found" || !errors.Is(err, ErrJobNotFound) {
		t.Fatalf("err = %v", err)
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestWatchJobRetriesWhenRateLimited(t *testing.T) {
	var afterSeqs []int64
	var mu sync.Mutex
	srv := newWSServer(t, func(c *wsConn, n int) {
		c.handshake(testToken)
		after := c.subscribe("job-1")
		mu.Lock()
		afterSeqs = append(afterSeqs, after)
		mu.Unlock()
		switch n {
		case 1:
			c.event(1, EventSnapshot, StateStep2Running, 0)
			_ = c.conn.CloseNow()
			return
		case 2:
			c.send(wsMessage{ID: subscriptionID, Type: "next", Payload: json.RawMessage(`{"errors":[{"message":"rate limit exceeded: retry in 1 s","extensions":{"code":"RATE_LIMITED"}}],"data":null}`)})
		case 3:
			c.event(2, EventCompleted, StateCompleted, 4)
		}
		c.send(wsMessage{ID: subscriptionID, Type: "complete"})
		c.drain()
	})
	events, errc := newClient(t, srv.URL, testToken, WithReconnect(3, time.Millisecond)).WatchJob(t.Context(), "job-1", 0)
	got, err := collect(t, events, errc)
	if err != nil || seqs(got) != "1:SNAPSHOT 2:COMPLETED" {
		t.Fatalf("events = %s, err = %v", seqs(got), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(afterSeqs) != "[-1 1 1]" {
		t.Errorf("afterSeq sent = %v", afterSeqs)
	}
}

func TestWatchJobGivesUp(t *testing.T) {
	srv := newWSServer(t, func(c *wsConn, n int) {
		c.handshake(testToken)
		c.subscribe("job-1")
		if n == 1 {
			c.event(1, EventSnapshot, StateStep2Running, 0)
		}
		_ = c.conn.Close(websocket.StatusInternalError, "overloaded")
	})
	events, errc := newClient(t, srv.URL, testToken, WithReconnect(2, time.Millisecond)).WatchJob(t.Context(), "job-1", 0)
	got, err := collect(t, events, errc)
	if seqs(got) != "1:SNAPSHOT" || err == nil || !strings.Contains(err.Error(), "could not resume it (2 attempts)") || !strings.Contains(err.Error(), "overloaded") {
		t.Fatalf("events = %s, err = %v", seqs(got), err)
	}
	if n := srv.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

func TestWatchJobUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	start := time.Now()
	events, errc := newClient(t, url, testToken, WithReconnect(5, time.Second)).WatchJob(t.Context(), "job-1", 0)
	_, err := collect(t, events, errc)
	var ue *UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), url+"/query") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("took %s: the first connection must not be retried", d)
	}
}

func TestWatchJobWithoutSubscriptions(t *testing.T) {
	// A plain HTTP endpoint that does not upgrade.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "websocket: not a websocket handshake", http.StatusBadRequest)
	}))
	defer srv.Close()
	events, errc := newClient(t, srv.URL, testToken).WatchJob(t.Context(), "job-1", 0)
	if _, err := collect(t, events, errc); err == nil || !strings.Contains(err.Error(), "refused the websocket connection: 400") {
		t.Fatalf("err = %v", err)
	}
}

func TestBackoff(t *testing.T) {
	c := newClient(t, "h:1", "", WithReconnect(10, 100*time.Millisecond))
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 10: 5 * time.Second} {
		for range 20 {
			if d := c.backoff(n); d < want*8/10 || d > want*12/10 {
				t.Fatalf("backoff(%d) = %s, want %s ± 20%%", n, d, want)
			}
		}
	}
}

func TestWatchJobKeepAlive(t *testing.T) {
	srv := newWSServer(t, func(c *wsConn, _ int) {
		c.handshake(testToken)
		c.subscribe("job-1")
		c.event(1, EventSnapshot, StateStep2Running, 0)
		// Stay silent: the client pings, and the connection lives on as long as it gets pongs.
		pings := 0
		deadline := time.Now().Add(300 * time.Millisecond)
		for time.Now().Before(deadline) {
			msg := c.expect("ping")
			if msg.Type != "ping" {
				return
			}
			pings++
			c.send(wsMessage{Type: "pong"})
		}
		if pings < 3 {
			c.t.Errorf("%d pings in 300ms, want a ping every 30ms of silence", pings)
		}
		c.event(2, EventCompleted, StateCompleted, 4)
		c.send(wsMessage{ID: subscriptionID, Type: "complete"})
		c.drain()
	})
	events, errc := newClient(t, srv.URL, testToken, WithKeepAlive(30*time.Millisecond)).WatchJob(t.Context(), "job-1", 0)
	got, err := collect(t, events, errc)
	if err != nil || seqs(got) != "1:SNAPSHOT 2:COMPLETED" {
		t.Fatalf("events = %s, err = %v", seqs(got), err)
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestWatchJobSilentConnection(t *testing.T) {
	second := make(chan struct{})
	var afterSeq atomic.Int64
	srv := newWSServer(t, func(c *wsConn, n int) {
		c.handshake(testToken)
		after := c.subscribe("job-1")
		if n == 1 {
			c.event(1, EventSnapshot, StateStep2Running, 0)
			// A server that died without closing the connection: nothing is read or answered.
			select {
			case <-second:
			case <-time.After(5 * time.Second):
				c.t.Error("the client did not give up on a silent connection")
			}
			return
		}
		afterSeq.Store(after)
		close(second)
		c.event(2, EventCompleted, StateCompleted, 4)
		c.send(wsMessage{ID: subscriptionID, Type: "complete"})
		c.drain()
	})
	events, errc := newClient(t, srv.URL, testToken, WithKeepAlive(20*time.Millisecond), WithReconnect(2, time.Millisecond)).WatchJob(t.Context(), "job-1", 0)
	got, err := collect(t, events, errc)
	if err != nil || seqs(got) != "1:SNAPSHOT 2:COMPLETED" {
		t.Fatalf("events = %s, err = %v", seqs(got), err)
	}
	if afterSeq.Load() != 1 {
		t.Errorf("afterSeq on reconnect = %d, want 1", afterSeq.Load())
	}
}
