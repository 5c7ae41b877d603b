package sqllog

import (
	"cmp"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jobmill/jobmill/adapters/metrics"
)

// consumeN acks the first n messages of the topic as group and closes the subscriber; with stopAfter it
// also takes the next message without acking it, so the group's offset stops exactly at n.
func consumeN(t *testing.T, s server, group string, n int, stopAfter bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	sub, err := NewSubscriber(s.db, s.dialect, group, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		receive(t, ch, 10*time.Second).Ack()
	}
	if stopAfter {
		receive(t, ch, 10*time.Second)
	} else {
		// The subscriber commits a batch after its last ack; closing before that would leave the group
		// one message behind.
		waitCaughtUp(t, s, group)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
}

// rolledBackPublish publishes one message in a transaction that rolls back: it burns an offset, leaving a
// gap in the log's offsets.
func rolledBackPublish(t *testing.T, s server) {
	t.Helper()
	tx, err := s.db.BeginTx(testCtx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := NewTxPublisher(tx, s.dialect)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topic, newMsgs(1)...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
}

func byConsumer(l []metrics.Lag) []metrics.Lag {
	slices.SortFunc(l, func(a, b metrics.Lag) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Consumer, b.Consumer))
	})
	return l
}

// waitLag polls until the lag reported for the groups is want: offsets commit as subscribers finish their
// batch transactions.
func waitLag(t *testing.T, s server, groups []string, want []metrics.Lag) {
	t.Helper()
	ctx := testCtx(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := Lag(ctx, s.db, s.dialect, topic, groups...)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(byConsumer(got), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag %+v, want %+v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLag(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		const k, m = 12, 5

		// Before the topic's tables exist, the named groups have nothing to read.
		got, err := Lag(ctx, s.db, s.dialect, topic, "behind")
		if err != nil {
			t.Fatal(err)
		}
		if want := []metrics.Lag{{Consumer: "behind", Topic: topic}}; !slices.Equal(got, want) {
			t.Fatalf("before the topic exists: %+v, want %+v", got, want)
		}
		if err := Initialize(ctx, s.db, s.dialect, topic); err != nil {
			t.Fatal(err)
		}

		msgs := newMsgs(k)
		publish(t, s, msgs[:m+2])
		// Gaps in the offsets, behind and ahead of where "behind" stops, must not count as messages.
		rolledBackPublish(t, s)
		publish(t, s, msgs[m+2:])
		rolledBackPublish(t, s)

		consumeN(t, s, "behind", m, true)
		consumeN(t, s, "caught-up", k, false)

		// "never" is named but has no offset row; "caught-up" has one but is not named.
		waitLag(t, s, []string{"behind", "never"}, []metrics.Lag{
			{Consumer: "behind", Topic: topic, Messages: k - m},
			{Consumer: "caught-up", Topic: topic, Messages: 0},
			{Consumer: "never", Topic: topic, Messages: k},
		})

		if _, err := Lag(ctx, s.db, s.dialect, "bad`topic"); err == nil {
			t.Fatal("a topic that cannot be a table name was accepted")
		}
	})
}
