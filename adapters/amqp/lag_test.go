package amqp_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/amqp"
	"github.com/jobmill/jobmill/adapters/metrics"
)

// ackThenClose acks n messages from sub on topic and closes it, which returns what it held unacked.
func ackThenClose(t *testing.T, sub message.Subscriber, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		receive(t, ch).Ack()
	}
	// watermill-amqp sends a delivery's ack from its own goroutine, which a Close can overtake (the
	// message then comes again, as at-least-once allows). Give the last ack time to reach the broker: this
	// test is about the lag the monitor reports, not about acks racing a close.
	time.Sleep(time.Second)
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitLag polls until read returns want: the broker settles acks and requeues asynchronously.
func waitLag(t *testing.T, read func() ([]metrics.Lag, error), want []metrics.Lag) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := read()
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag %+v, want %+v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func newLagMonitor(t *testing.T, url string) *amqp.LagMonitor {
	mon := amqp.NewLagMonitor(url)
	closeOnCleanup(t, mon)
	return mon
}

func TestLogLag(t *testing.T) {
	url := requireRabbit(t)
	topic := newTopic(t, url, "behind", "caught-up")
	if err := amqp.Declare(testCtx(t), url, nil, []string{topic}, []string{"behind", "caught-up"}); err != nil {
		t.Fatal(err)
	}
	const k, m = 30, 11
	pub, err := amqp.NewLogPublisher(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, pub)
	publish(t, pub, topic, newMessages(k))

	for group, n := range map[string]int{"behind": m, "caught-up": k} {
		sub, err := amqp.NewLogSubscriber(url, group, nil)
		if err != nil {
			t.Fatal(err)
		}
		ackThenClose(t, sub, topic, n)
	}

	mon := newLagMonitor(t, url)
	// "ghost" has no queue: nothing is kept for it, so it is left out.
	waitLag(t, func() ([]metrics.Lag, error) { return mon.LogLag(testCtx(t), topic, "behind", "ghost", "caught-up") },
		[]metrics.Lag{{Consumer: "behind", Topic: topic, Messages: k - m}, {Consumer: "caught-up", Topic: topic}})
}

func TestQueueLag(t *testing.T) {
	url := requireRabbit(t)
	busy, done := newTopic(t, url), newTopic(t, url)
	if err := amqp.Declare(testCtx(t), url, []string{busy, done}, nil, nil); err != nil {
		t.Fatal(err)
	}
	const k, m = 25, 9
	pub := queuePublisher(t, url)
	publish(t, pub, busy, newMessages(k))
	publish(t, pub, done, newMessages(4))

	for topic, n := range map[string]int{busy: m, done: 4} {
		sub, err := amqp.NewQueueSubscriber(url, 4, nil)
		if err != nil {
			t.Fatal(err)
		}
		ackThenClose(t, sub, topic, n)
	}

	mon := newLagMonitor(t, url)
	missing := "test.missing." + t.Name()
	waitLag(t, func() ([]metrics.Lag, error) { return mon.QueueLag(testCtx(t), busy, missing, done) },
		[]metrics.Lag{
			{Consumer: metrics.WorkQueueConsumer, Topic: busy, Messages: k - m},
			{Consumer: metrics.WorkQueueConsumer, Topic: done},
		})

	if err := mon.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := mon.QueueLag(testCtx(t), busy); err == nil {
		t.Fatal("a closed monitor answered")
	}
}
