package kafka_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/kafka"
	"github.com/jobmill/jobmill/adapters/metrics"
)

func TestConsumerLag(t *testing.T) {
	cfg := testConfig(4)
	topic := newTopic(t, cfg)
	pub := newPublisher(t, cfg)
	const k, m = 40, 13

	mon, err := kafka.NewLagMonitor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mon.Close(); err != nil {
			t.Error(err)
		}
	})

	// An empty topic: nothing to read for anyone.
	lags, err := mon.Lag(testCtx(t), topic, "behind")
	if err != nil {
		t.Fatal(err)
	}
	if want := []metrics.Lag{{Consumer: "behind", Topic: topic}}; !slices.Equal(lags, want) {
		t.Fatalf("empty topic: %+v, want %+v", lags, want)
	}

	// Keys spread the messages over every partition.
	msgs := make([]*message.Message, k)
	for i := range msgs {
		msgs[i] = keyed(fmt.Sprintf("job-%d", i), i)
	}
	if err := pub.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}

	behind := subscribe(t, cfg, "behind", topic)
	receiveAll(t, behind, m)
	caughtUp := subscribe(t, cfg, "caught-up", topic)
	receiveAll(t, caughtUp, k)

	// Subscribers commit in the background: poll until the commits land.
	want := []metrics.Lag{
		{Consumer: "behind", Topic: topic, Messages: k - m},
		{Consumer: "caught-up", Topic: topic, Messages: 0},
		{Consumer: "never", Topic: topic, Messages: k},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		lags, err = mon.Lag(testCtx(t), topic, "behind", "caught-up", "never")
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(lags, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag %+v, want %+v", lags, want)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if err := mon.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := mon.Lag(context.Background(), topic, "behind"); err == nil {
		t.Fatal("a closed monitor answered")
	}
}

func TestConsumerLagUnreachable(t *testing.T) {
	mon, err := kafka.NewLagMonitor(kafka.Config{Brokers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = mon.Close() }()
	if _, err := mon.Lag(testCtx(t), "jobmill.events", "manager"); err == nil {
		t.Fatal("lag reported without a broker")
	}
}
