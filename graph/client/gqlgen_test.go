package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	coderws "github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
)

// gqlgenServer serves the real schema with gqlgen's own transports and canned answers, configured as
// the project notes describe (graphql-transport-ws, ping/pong keep-alive, 4401 on a bad token), to
// check that the client interoperates with gqlgen's protocol implementation, not only with the
// hand-written servers of the other tests.
type gqlgenServer struct {
	*httptest.Server
	conns      atomic.Int32
	subscribes atomic.Int32
	afterSeq   atomic.Value // the last subscription's afterSeq variable
	release    chan struct{}
}

func newGQLGenServer(t *testing.T, pingEvery time.Duration) *gqlgenServer {
	t.Helper()
	src, err := os.ReadFile("../schema.graphqls")
	if err != nil {
		t.Fatal(err)
	}
	schema := gqlparser.MustLoadSchema(&ast.Source{Name: "schema.graphqls", Input: string(src)})
	s := &gqlgenServer{release: make(chan struct{})}

	event := func(seq int, kind, state string) []byte {
		return fmt.Appendf(nil, `{"jobEvents":{"seq":%d,"kind":%q,"step":null,"job":{"id":"job-1","type":"synthetic","state":%q,"progress":1,"seq":%d,"counts":{"total":1,"succeeded":1,"failed":0,"inFlight":0,"retries":0,"timedOut":0,"duplicates":0,"late":0},"steps":[],"output":{"ok":true},"error":null,"deadline":null,"createdAt":"2026-01-02T03:04:05Z","updatedAt":"2026-01-02T03:04:05Z","endedAt":"2026-01-02T03:04:06Z"}}}`, seq, kind, state, seq)
	}
	srv := handler.New(&graphql.ExecutableSchemaMock{
		SchemaFunc: func() *ast.Schema { return schema },
		ComplexityFunc: func(context.Context, string, string, int, map[string]any) (int, bool) {
			return 1, true
		},
		ExecFunc: func(ctx context.Context) graphql.ResponseHandler {
			op := graphql.GetOperationContext(ctx)
			switch op.Operation.Operation {
			case ast.Query:
				if op.Variables["id"] != "job-1" {
					return graphql.OneShot(&graphql.Response{Data: []byte(`{"job":null}`)})
				}
				return graphql.OneShot(&graphql.Response{Data: []byte(`{"job":{"id":"job-1","type":"synthetic","state":"PENDING","progress":0,"seq":1,"counts":{"total":0,"succeeded":0,"failed":0,"inFlight":0,"retries":0,"timedOut":0,"duplicates":0,"late":0},"steps":[],"input":{"a":1},"output":null,"error":null,"deadline":null,"createdAt":"2026-01-02T03:04:05Z","updatedAt":"2026-01-02T03:04:05Z","endedAt":null}}`)})
			case ast.Mutation:
				return graphql.OneShot(&graphql.Response{Data: []byte(`{"startJob":{"job":null,"userErrors":[{"__typename":"InputError","code":"UNKNOWN_JOB_TYPE","message":"unknown job type","field":["type"]}]}}`)})
			case ast.Subscription:
				s.subscribes.Add(1)
				s.afterSeq.Store(fmt.Sprint(op.Variables["afterSeq"]))
				step := 0
				return func(context.Context) *graphql.Response {
					step++
					switch step {
					case 1:
						return &graphql.Response{Data: event(2, "SNAPSHOT", "STEP2_RUNNING")}
					case 2:
						select { // hold the stream open across several keep-alive pings
						case <-s.release:
						case <-ctx.Done():
							return nil
						}
						return &graphql.Response{Data: event(3, "COMPLETED", "COMPLETED")}
					}
					return nil // completes the subscription
				}
			}
			return graphql.OneShot(graphql.ErrorResponse(ctx, "unsupported operation"))
		},
	})
	srv.AddTransport(transport.Websocket{
		Implementation: transport.CoderWebsocketImplementation{AcceptOptions: coderws.AcceptOptions{
			Subprotocols: []string{"graphql-transport-ws", "graphql-ws"},
		}},
		PingPongInterval: pingEvery,
		InitFunc: func(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
			s.conns.Add(1)
			if p.Authorization() != "Bearer "+testToken {
				ctx = transport.WithWebsocketCloseCode(ctx, 4401)
				return transport.AppendCloseReason(ctx, "missing or invalid API token"), nil, errors.New("missing or invalid API token")
			}
			return ctx, nil, nil
		},
	})
	srv.AddTransport(transport.POST{})
	mux := http.NewServeMux()
	mux.Handle("/query", srv)
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func TestGQLGenQueries(t *testing.T) {
	srv := newGQLGenServer(t, 0)
	c := newClient(t, srv.URL, testToken)
	j, err := c.Job(t.Context(), "job-1")
	if err != nil || j.State != StatePending || string(j.Input) != `{"a":1}` || j.Output != nil {
		t.Fatalf("job = %+v, %v", j, err)
	}
	if _, err := c.Job(t.Context(), "other"); !errors.Is(err, ErrJobNotFound) {
		t.Errorf("unknown job: %v", err)
	}
	_, err = c.StartJob(t.Context(), "nope", nil, "", time.Time{})
	var ue UserErrors
	if !errors.As(err, &ue) || ue[0].Code != CodeUnknownJobType {
		t.Errorf("startJob: %v", err)
	}
}

func TestGQLGenSubscription(t *testing.T) {
	srv := newGQLGenServer(t, 20*time.Millisecond)
	events, errc := newClient(t, srv.URL, testToken, WithReconnect(0, time.Millisecond)).WatchJob(t.Context(), "job-1", 1)
	first := <-events
	// The server pings every 20ms and drops a client that misses a pong for 40ms.
	time.Sleep(200 * time.Millisecond)
	close(srv.release)
	rest, err := collect(t, events, errc)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(append([]JobEvent{first}, rest...)); got != "2:SNAPSHOT 3:COMPLETED" {
		t.Errorf("events = %s", got)
	}
	if srv.conns.Load() != 1 || srv.subscribes.Load() != 1 || srv.afterSeq.Load() != "1" {
		t.Errorf("connections %d, subscriptions %d, afterSeq %v", srv.conns.Load(), srv.subscribes.Load(), srv.afterSeq.Load())
	}
	if string(rest[0].Job.Output) != `{"ok":true}` || rest[0].Step != 0 {
		t.Errorf("final event = %+v", rest[0])
	}
}

func TestGQLGenInvalidToken(t *testing.T) {
	srv := newGQLGenServer(t, 0)
	events, errc := newClient(t, srv.URL, "jm_wrong", WithReconnect(5, time.Millisecond)).WatchJob(t.Context(), "job-1", 0)
	_, err := collect(t, events, errc)
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "invalid token (missing or invalid API token)") {
		t.Fatalf("err = %v", err)
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}
