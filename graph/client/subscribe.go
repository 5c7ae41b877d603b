package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// subprotocol is the websocket subprotocol of the npm graphql-ws library, which gqlgen speaks.
const subprotocol = "graphql-transport-ws"

// subscriptionID names the one subscription each connection carries.
const subscriptionID = "1"

// Close codes of graphql-transport-ws that reconnecting cannot cure.
const (
	closeBadRequest       = 4400
	closeUnauthorized     = 4401
	closeForbidden        = 4403
	closeSubprotocol      = 4406
	closeSubscriberExists = 4409
)

// stableAfter is how long a connection must have lasted for a later drop to count as a fresh failure.
const stableAfter = 5 * time.Second

// wsMessage is one graphql-transport-ws message.
type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// WatchJob follows a job live through the jobEvents subscription. The server first sends a SNAPSHOT of
// the job (unless afterSeq is already its seq), then every change with a greater seq; the events
// channel closes after the job's final event. The error channel then yields nil, or what ended the
// watch early: ctx's error, an error matching ErrUnauthorized or ErrTokenRequired (final, never
// retried), GraphQLErrors the server sent for the subscription, or the last connection error once
// reconnecting gave up.
//
// A dropped connection is reopened transparently (see WithReconnect) with afterSeq set to the last seq
// received, so no change is lost and none is delivered twice. The first connection is not retried:
// a server that cannot be reached at all is reported at once.
//
// Cancel ctx to stop watching: the client then tells the server it is done and closes the connection.
// Read the events channel until it closes, then the error channel.
func (c *Client) WatchJob(ctx context.Context, id string, afterSeq int64) (<-chan JobEvent, <-chan error) {
	events := make(chan JobEvent)
	errc := make(chan error, 1)
	go func() {
		defer close(events)
		w := &watcher{c: c, id: id, lastSeq: afterSeq, events: events}
		if err := w.run(ctx); err != nil {
			errc <- err
		}
		close(errc)
	}()
	return events, errc
}

// watcher is the state of one WatchJob across its connections.
type watcher struct {
	c       *Client
	id      string
	lastSeq int64
	events  chan<- JobEvent

	connected bool // some connection was acknowledged
	done      bool // the job's final event was delivered
	// per connection
	progressed bool
	ackedAt    time.Time
}

func (w *watcher) run(ctx context.Context) error {
	failures := 0
	for {
		err := w.session(ctx)
		switch {
		case err == nil || w.done:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case isPermanent(err):
			return unwrapPermanent(err)
		case !w.connected:
			return err
		}
		if w.progressed || (!w.ackedAt.IsZero() && time.Since(w.ackedAt) >= stableAfter) {
			failures = 0
		}
		failures++
		if failures > w.c.reconnectAttempts {
			return fmt.Errorf("lost the subscription to job %s and could not resume it (%d attempts): %w", w.id, w.c.reconnectAttempts, err)
		}
		delay := w.c.backoff(failures)
		var rl *RateLimitError
		if errors.As(err, &rl) {
			delay = max(delay, rl.RetryAfter)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is the delay before reconnect attempt n (1-based): doubling, capped, with ±20% jitter.
func (c *Client) backoff(n int) time.Duration {
	d := c.reconnectDelay
	for i := 1; i < n && d < c.maxDelay; i++ {
		d *= 2
	}
	d = min(d, c.maxDelay)
	jitter := time.Duration(rand.Int64N(int64(d)/5 + 1))
	if rand.IntN(2) == 0 {
		return d - jitter
	}
	return d + jitter
}

// session runs one connection: handshake, subscribe, deliver events. It returns nil once the server
// completed the subscription.
func (w *watcher) session(ctx context.Context) error {
	c := w.c
	w.progressed, w.ackedAt = false, time.Time{}

	hctx, cancel := context.WithTimeout(ctx, c.handshakeTimeout)
	defer cancel()
	header := http.Header{}
	c.authorize(header)
	conn, resp, err := websocket.Dial(hctx, c.endpoint, &websocket.DialOptions{
		HTTPClient:   c.http,
		HTTPHeader:   header,
		Subprotocols: []string{subprotocol},
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.dialError(hctx, resp, err)
	}
	defer func() { _ = conn.CloseNow() }()
	if conn.Subprotocol() != subprotocol {
		_ = conn.Close(websocket.StatusProtocolError, "graphql-transport-ws required")
		return permanent(fmt.Errorf("the server at %s does not speak %s", c.display, subprotocol))
	}
	conn.SetReadLimit(maxResponseBytes)

	// connection_init carries the token; nothing else may be sent before connection_ack.
	init := wsMessage{Type: "connection_init"}
	if c.token != "" {
		init.Payload, _ = json.Marshal(map[string]string{"Authorization": "Bearer " + c.token})
	}
	if err := writeMessage(hctx, conn, init); err != nil {
		return w.connError(ctx, hctx, err)
	}
	for acked := false; !acked; {
		msg, err := readMessage(hctx, conn)
		if err != nil {
			return w.connError(ctx, hctx, err)
		}
		switch msg.Type {
		case "connection_ack":
			acked = true
		case "ping":
			if err := writeMessage(hctx, conn, wsMessage{Type: "pong"}); err != nil {
				return w.connError(ctx, hctx, err)
			}
		case "pong":
		default:
			_ = conn.Close(websocket.StatusProtocolError, "expected connection_ack")
			return permanent(fmt.Errorf("the server at %s sent %q before acknowledging the connection", c.display, msg.Type))
		}
	}
	w.connected, w.ackedAt = true, time.Now()

	vars := map[string]any{"jobId": w.id}
	if w.lastSeq > 0 {
		vars["afterSeq"] = w.lastSeq
	}
	payload, err := json.Marshal(request{Query: jobEventsSubscription, OperationName: "JobEvents", Variables: vars})
	if err != nil {
		return permanent(err)
	}
	if err := writeMessage(hctx, conn, wsMessage{ID: subscriptionID, Type: "subscribe", Payload: payload}); err != nil {
		return w.connError(ctx, hctx, err)
	}
	cancel()

	// From here on reads and writes are not bound to ctx, which would drop the connection without a
	// word; when ctx ends, the subscription is completed and the connection closed properly instead.
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(stopped)
		wctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = writeMessage(wctx, conn, wsMessage{ID: subscriptionID, Type: "complete"})
		_ = conn.Close(websocket.StatusNormalClosure, "")
	})
	defer func() {
		if !stop() {
			<-stopped
		}
	}()
	var silent atomic.Bool
	received := w.keepAlive(conn, &silent)
	defer received(false)

	for {
		msg, err := readMessage(context.Background(), conn)
		if err != nil {
			if silent.Load() && ctx.Err() == nil {
				return fmt.Errorf("the connection to %s went silent for %s", c.display, 2*c.keepAlive)
			}
			return w.connError(ctx, nil, err)
		}
		received(true)
		switch msg.Type {
		case "next":
			if msg.ID != subscriptionID {
				continue
			}
			ev, err := decodeEvent(msg.Payload)
			if err != nil {
				_ = conn.Close(websocket.StatusNormalClosure, "")
				if errors.Is(err, ErrRateLimited) {
					return err // worth another try after the backoff
				}
				return permanent(err)
			}
			if ev.Seq <= w.lastSeq {
				continue // already delivered before a reconnect
			}
			select {
			case w.events <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
			w.lastSeq, w.progressed = ev.Seq, true
			if ev.Kind.Terminal() {
				w.done = true
			}
		case "error":
			if msg.ID != subscriptionID {
				continue
			}
			var errs GraphQLErrors
			if err := json.Unmarshal(msg.Payload, &errs); err != nil || len(errs) == 0 {
				errs = GraphQLErrors{{Message: "the server refused the subscription"}}
			}
			_ = conn.Close(websocket.StatusNormalClosure, "")
			if errs.Is(ErrRateLimited) {
				return errs
			}
			return permanent(errs)
		case "complete":
			if msg.ID != subscriptionID {
				continue
			}
			_ = conn.Close(websocket.StatusNormalClosure, "")
			return nil
		case "ping":
			wctx, cancel := context.WithTimeout(context.Background(), c.handshakeTimeout)
			err := writeMessage(wctx, conn, wsMessage{Type: "pong"})
			cancel()
			if err != nil {
				return w.connError(ctx, nil, err)
			}
		}
	}
}

// keepAlive watches a connection for silence: it pings the server after c.keepAlive without a message
// and closes the connection, setting silent, after twice that. Call the returned function with true
// for every message received, and once with false to stop watching.
func (w *watcher) keepAlive(conn *websocket.Conn, silent *atomic.Bool) func(bool) {
	every := w.c.keepAlive
	if every <= 0 {
		return func(bool) {}
	}
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(max(every/4, time.Millisecond))
		defer tick.Stop()
		var pinged int64 // the silence, by its start, that a ping was sent for
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			since := last.Load()
			quiet := time.Since(time.Unix(0, since))
			switch {
			case quiet >= 2*every:
				silent.Store(true)
				_ = conn.CloseNow()
				return
			case quiet >= every && pinged != since:
				pinged = since
				wctx, cancel := context.WithTimeout(context.Background(), every)
				_ = writeMessage(wctx, conn, wsMessage{Type: "ping"})
				cancel()
			}
		}
	}()
	var once sync.Once
	return func(alive bool) {
		if alive {
			last.Store(time.Now().UnixNano())
			return
		}
		once.Do(func() {
			close(done)
			<-stopped
		})
	}
}

// decodeEvent reads the payload of a next message.
func decodeEvent(payload json.RawMessage) (JobEvent, error) {
	var p struct {
		Data struct {
			JobEvents *JobEvent `json:"jobEvents"`
		} `json:"data"`
		Errors GraphQLErrors `json:"errors"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return JobEvent{}, fmt.Errorf("malformed jobEvents message: %w", err)
	}
	if len(p.Errors) > 0 {
		return JobEvent{}, p.Errors
	}
	if p.Data.JobEvents == nil {
		return JobEvent{}, errors.New("malformed jobEvents message: no event")
	}
	return *p.Data.JobEvents, nil
}

// dialError explains a failed websocket handshake.
func (c *Client) dialError(hctx context.Context, resp *http.Response, err error) error {
	if resp != nil {
		switch code := resp.StatusCode; {
		case code == http.StatusUnauthorized:
			return permanent(c.authError())
		case code == http.StatusTooManyRequests:
			return &RateLimitError{RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
		case code == http.StatusNotFound || code == http.StatusMethodNotAllowed:
			return permanent(fmt.Errorf("no GraphQL subscriptions at %s: %s", c.display, resp.Status))
		case code == http.StatusForbidden:
			return permanent(fmt.Errorf("the server at %s refused the websocket connection: %s", c.display, resp.Status))
		case code >= 400 && code < 500 && code != http.StatusRequestTimeout:
			return permanent(fmt.Errorf("the server at %s refused the websocket connection: %s", c.display, resp.Status))
		default:
			return fmt.Errorf("the server at %s refused the websocket connection: %s", c.display, resp.Status)
		}
	}
	if hctx.Err() != nil {
		return fmt.Errorf("the server at %s did not accept the websocket connection within %s", c.display, c.handshakeTimeout)
	}
	return c.unreachable(err)
}

// connError explains why an established connection ended. hctx is the handshake's context while the
// handshake runs.
func (w *watcher) connError(ctx, hctx context.Context, err error) error {
	c := w.c
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if isPermanent(err) {
		return err
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case closeUnauthorized:
			return permanent(c.tokenRefused(ce.Reason))
		case closeBadRequest, closeForbidden, closeSubprotocol, closeSubscriberExists:
			return permanent(&closeError{code: int(ce.Code), reason: ce.Reason})
		}
		return &closeError{code: int(ce.Code), reason: ce.Reason}
	}
	if hctx != nil && hctx.Err() != nil {
		return fmt.Errorf("the server at %s did not acknowledge the websocket connection within %s", c.display, c.handshakeTimeout)
	}
	return fmt.Errorf("lost the connection to %s: %w", c.display, err)
}

// tokenRefused is the error for a websocket closed with 4401.
func (c *Client) tokenRefused(reason string) error {
	if c.token == "" {
		if reason != "" {
			return fmt.Errorf("%w (%s)", ErrTokenRequired, reason)
		}
		return ErrTokenRequired
	}
	if reason != "" {
		return fmt.Errorf("invalid token (%s): %w", reason, ErrUnauthorized)
	}
	return fmt.Errorf("invalid token: %w", ErrUnauthorized)
}

func writeMessage(ctx context.Context, conn *websocket.Conn, msg wsMessage) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	return conn.Write(ctx, websocket.MessageText, b)
}

func readMessage(ctx context.Context, conn *websocket.Conn) (wsMessage, error) {
	_, b, err := conn.Read(ctx)
	if err != nil {
		return wsMessage{}, err
	}
	var msg wsMessage
	if err := json.Unmarshal(b, &msg); err != nil {
		return wsMessage{}, permanent(fmt.Errorf("malformed graphql-transport-ws message: %w", err))
	}
	return msg, nil
}
