package sqllog

import (
	"testing"
	"time"
)

func TestResetConsumerGroupReplaysFromTheStart(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		if err := Initialize(ctx, s.db, s.dialect, topic); err != nil {
			t.Fatal(err)
		}
		msgs := newMsgs(5)
		publish(t, s, msgs)
		consume := func(group string, n int) string {
			sub, err := NewSubscriber(s.db, s.dialect, group, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			ch, err := sub.Subscribe(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			first := ""
			for i := range n {
				m := receive(t, ch, 10*time.Second)
				if i == 0 {
					first = m.UUID
				}
				m.Ack()
			}
			waitCaughtUp(t, s, group)
			return first
		}
		consume("stats", 5)
		consume("other", 5)
		// Without a reset the group has nothing left.
		if lag := groupLag(t, s, "stats"); lag != 0 {
			t.Fatalf("stats lags %d before the reset, want 0", lag)
		}
		if err := ResetConsumerGroup(ctx, s.db, s.dialect, topic, "stats"); err != nil {
			t.Fatal(err)
		}
		if lag := groupLag(t, s, "stats"); lag != 5 {
			t.Fatalf("stats lags %d after the reset, want all 5 messages", lag)
		}
		if got := consume("stats", 5); got != msgs[0].UUID {
			t.Fatalf("after the reset the group read %s first, want %s", got, msgs[0].UUID)
		}
		ch, err := newSub(t, s, "other").Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		expectNothing(t, ch, 200*time.Millisecond)
	})
}

func groupLag(t *testing.T, s server, group string) int64 {
	t.Helper()
	lags, err := Lag(testCtx(t), s.db, s.dialect, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lags {
		if l.Consumer == group {
			return l.Messages
		}
	}
	t.Fatalf("no lag reported for group %s: %+v", group, lags)
	return 0
}

// waitCaughtUp waits until the group's acks are committed (the subscriber commits a batch after its
// last ack).
func waitCaughtUp(t *testing.T, s server, group string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for groupLag(t, s, group) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("group %s never caught up", group)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
