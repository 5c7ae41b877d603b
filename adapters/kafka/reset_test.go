package kafka_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jobmill/jobmill/adapters/kafka"
	"github.com/jobmill/jobmill/adapters/messaging"
)

func TestResetConsumerGroupReplaysFromTheOldest(t *testing.T) {
	cfg := testConfig(2)
	topic := newTopic(t, cfg)
	pub := newPublisher(t, cfg)
	for i := range 6 {
		if err := pub.Publish(topic, keyed("k"+strconv.Itoa(i), i)); err != nil {
			t.Fatal(err)
		}
	}
	read := func() map[string]bool {
		sub, err := kafka.NewSubscriber(cfg, "stats", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := sub.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, m := range receiveAll(t, ch, 6) {
			got[m.Metadata.Get(messaging.PartitionKeyMetadata)] = true
		}
		time.Sleep(2 * time.Second) // offsets are committed every second
		cancel()
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
		return got
	}
	read()
	// Without a reset the group has nothing left to read: its offsets were committed.
	sub, err := kafka.NewSubscriber(cfg, "stats", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ch:
		t.Fatalf("the group read %s again before any reset", m.UUID)
	case <-time.After(3 * time.Second):
	}
	cancel()
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := kafka.ResetConsumerGroup(testCtx(t), cfg, "stats"); err != nil {
		t.Fatal(err)
	}
	if got := read(); len(got) != 6 {
		t.Fatalf("after the reset the group read %d distinct messages again, want all 6", len(got))
	}
	if err := kafka.ResetConsumerGroup(testCtx(t), cfg, "no-such-group"); err != nil {
		t.Fatalf("resetting an unknown group: %v", err)
	}
}
