package graph_test

import (
	"testing"
	"time"

	"github.com/jobmill/jobmill/graph"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
)

func TestWebsocketKeepAlive(t *testing.T) {
	const interval = 50 * time.Millisecond
	restore := graph.SetWebsocketPingInterval(interval)
	defer restore()
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	init := wsMessage{Type: "connection_init", Payload: mustJSON(t, map[string]any{"token": f.tokens[acme]})}

	// A client that answers pings stays connected through many intervals.
	pinged := make(chan struct{}, 1)
	live, _, err := f.dialProtocol("graphql-transport-ws", nil, wsOptions{pinged: pinged})
	if err != nil {
		t.Fatal(err)
	}
	live.send(init)
	if m := live.read(); m.Type != "connection_ack" {
		t.Fatalf("%+v", m)
	}
	for range 6 { // 6 pings answered: three times the two intervals a silent client gets
		select {
		case <-pinged:
		case <-time.After(waitFor):
			t.Fatal("no ping from the server")
		}
	}
	live.subscribe("1", jobEventsSub, map[string]any{"job": id})
	expectEvent(t, live, "1", new(int64), "SNAPSHOT", "PENDING", 0)

	// A client that answers none is dropped.
	silent, _, err := f.dialProtocol("graphql-transport-ws", nil, wsOptions{silent: true})
	if err != nil {
		t.Fatal(err)
	}
	silent.send(init)
	if m := silent.read(); m.Type != "connection_ack" {
		t.Fatalf("%+v", m)
	}
	if m := silent.read(); m.Type != "ping" {
		t.Fatalf("after the ack: %+v, want a ping", m)
	}
	for {
		if _, err := silent.readErr(); err != nil {
			break // dropped
		}
	}
}

func TestLegacyGraphqlWSProtocol(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	c, _, err := f.dialProtocol("graphql-ws", nil, wsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.send(wsMessage{Type: "connection_init", Payload: mustJSON(t, map[string]any{"Authorization": "Bearer " + f.tokens[acme]})})
	if m := c.read(); m.Type != "connection_ack" {
		t.Fatalf("%+v", m)
	}
	c.send(wsMessage{ID: "1", Type: "start", Payload: mustJSON(t, map[string]any{"query": jobEventsSub, "variables": map[string]any{"job": id}})})
	for {
		m := c.read()
		if m.Type == "ka" {
			continue
		}
		if m.Type != "data" || m.ID != "1" {
			t.Fatalf("%+v", m)
		}
		var out struct{ JobEvents jobEvent }
		c.decodeNext(m, &out)
		if out.JobEvents.Kind != "SNAPSHOT" || out.JobEvents.Job.ID != id {
			t.Errorf("first event %+v", out.JobEvents)
		}
		return
	}
}
