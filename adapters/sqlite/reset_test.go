package sqlite

import (
	"testing"
	"time"
)

func TestResetConsumerGroupReplaysFromTheStart(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	msgs := newMsgs(5)
	publishLog(t, db, logTopic, msgs)
	consume := func(group string, n int) []string {
		sub, err := NewLogSubscriber(db, group, LogSubscriberConfig{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		ch, err := sub.Subscribe(ctx, logTopic)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for range n {
			m := receive(t, ch, 5*time.Second)
			got = append(got, m.UUID)
			m.Ack()
		}
		return got
	}
	consume("stats", 5)
	consume("other", 5)
	if err := ResetConsumerGroup(ctx, db, logTopic, "stats"); err != nil {
		t.Fatal(err)
	}
	if got := consume("stats", 1); got[0] != msgs[0].UUID {
		t.Fatalf("after the reset the group read %s first, want the first message %s", got[0], msgs[0].UUID)
	}
	// Other groups keep their place.
	sub := newLogSub(t, db, "other")
	ch, err := sub.Subscribe(ctx, logTopic)
	if err != nil {
		t.Fatal(err)
	}
	expectNothing(t, ch, 100*time.Millisecond)
	if err := ResetConsumerGroup(ctx, db, `bad"topic`, "stats"); err == nil {
		t.Fatal("a topic name with a quote was accepted")
	}
}
