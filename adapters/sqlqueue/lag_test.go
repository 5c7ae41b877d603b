package sqlqueue

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jobmill/jobmill/adapters/metrics"
)

func TestLag(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		const k, m = 9, 4
		idle, done := topic+".Idle", topic+".Done"

		got, err := Lag(ctx, s.db, s.dialect, topic, idle)
		if err != nil {
			t.Fatal(err)
		}
		want := []metrics.Lag{{Consumer: metrics.WorkQueueConsumer, Topic: topic}, {Consumer: metrics.WorkQueueConsumer, Topic: idle}}
		if !slices.Equal(got, want) {
			t.Fatalf("before the queue table exists: %+v, want %+v", got, want)
		}

		publish(t, s.db, s.dialect, newMsgs(k)...)
		pub, err := NewPublisher(s.db, s.dialect)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(done, newMsgs(3)...); err != nil {
			t.Fatal(err)
		}

		sub := newSub(t, s.db, s.dialect, SubscriberConfig{Concurrency: 16})
		subCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		busyCh, err := sub.Subscribe(subCtx, topic)
		if err != nil {
			t.Fatal(err)
		}
		doneCh, err := sub.Subscribe(subCtx, done)
		if err != nil {
			t.Fatal(err)
		}
		// The subscriber claims more than it is given to ack: claimed but unacked messages still count.
		for range m {
			receive(t, busyCh, 10*time.Second).Ack()
		}
		for range 3 {
			receive(t, doneCh, 10*time.Second).Ack()
		}
		want = []metrics.Lag{
			{Consumer: metrics.WorkQueueConsumer, Topic: topic, Messages: k - m},
			{Consumer: metrics.WorkQueueConsumer, Topic: idle},
			{Consumer: metrics.WorkQueueConsumer, Topic: done},
		}
		// Acks are deleted in batches shortly after they are made.
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, err = Lag(ctx, s.db, s.dialect, topic, idle, done)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue lag %+v, want %+v", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		// Releasing the unacked claims leaves them queued.
		if got, err = Lag(ctx, s.db, s.dialect, topic, idle, done); err != nil || !slices.Equal(got, want) {
			t.Fatalf("after the subscriber closed: %+v (%v), want %+v", got, err, want)
		}
	})
}
