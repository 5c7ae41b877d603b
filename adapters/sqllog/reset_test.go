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
			return first
		}
		consume("stats", 5)
		consume("other", 5)
		if err := ResetConsumerGroup(ctx, s.db, s.dialect, topic, "stats"); err != nil {
			t.Fatal(err)
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
