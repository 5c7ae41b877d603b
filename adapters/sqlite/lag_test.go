package sqlite

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jobmill/jobmill/adapters/metrics"
)

// consumeLog acks the first n messages of topic as group, then closes the subscriber, which commits the
// group's offset.
func consumeLog(t *testing.T, db *DB, group, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	sub, err := NewLogSubscriber(db, group, LogSubscriberConfig{}, nil)
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
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
}

func sortLags(l []metrics.Lag) []metrics.Lag {
	slices.SortFunc(l, func(a, b metrics.Lag) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		if a.Consumer < b.Consumer {
			return -1
		}
		if a.Consumer > b.Consumer {
			return 1
		}
		return 0
	})
	return l
}

func TestLogLag(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	const k, m = 12, 5

	// Before the topic exists, the named groups have nothing to read.
	lags, err := LogLag(ctx, db, logTopic, "behind", "never")
	if err != nil {
		t.Fatal(err)
	}
	want := []metrics.Lag{{Consumer: "behind", Topic: logTopic}, {Consumer: "never", Topic: logTopic}}
	if !slices.Equal(sortLags(lags), want) {
		t.Fatalf("before the topic exists: %+v, want %+v", lags, want)
	}

	publishLog(t, db, logTopic, newMsgs(k))
	consumeLog(t, db, "behind", logTopic, m)
	consumeLog(t, db, "caught-up", logTopic, k)
	// A group of another topic is not reported under this one.
	publishLog(t, db, "other.topic", newMsgs(1))
	consumeLog(t, db, "elsewhere", "other.topic", 1)

	// "never" is named but stored no offset; "caught-up" stored one but is not named.
	lags, err = LogLag(ctx, db, logTopic, "behind", "never")
	if err != nil {
		t.Fatal(err)
	}
	want = []metrics.Lag{
		{Consumer: "behind", Topic: logTopic, Messages: k - m},
		{Consumer: "caught-up", Topic: logTopic, Messages: 0},
		{Consumer: "never", Topic: logTopic, Messages: k},
	}
	if !slices.Equal(sortLags(lags), want) {
		t.Fatalf("lag %+v, want %+v", lags, want)
	}

	// Another process's handle on the file reads the same.
	lags, err = LogLag(ctx, reopen(t, db), logTopic)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sortLags(lags), want[:2]) {
		t.Fatalf("from a second handle: %+v, want %+v", lags, want[:2])
	}

	if _, err := LogLag(ctx, db, `bad"topic`); err == nil {
		t.Fatal("a topic that cannot be a table name was accepted")
	}
}

func TestQueueLag(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	const k, m = 9, 4
	busy, idle, done := "jobmill.work.Busy", "jobmill.work.Idle", "jobmill.work.Done"

	lags, err := QueueLag(ctx, db, busy, idle)
	if err != nil {
		t.Fatal(err)
	}
	want := []metrics.Lag{{Consumer: metrics.WorkQueueConsumer, Topic: busy}, {Consumer: metrics.WorkQueueConsumer, Topic: idle}}
	if !slices.Equal(lags, want) {
		t.Fatalf("before the queue table exists: %+v, want %+v", lags, want)
	}

	pub := NewQueuePublisher(db)
	if err := pub.Publish(busy, newMsgs(k)...); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(done, newMsgs(3)...); err != nil {
		t.Fatal(err)
	}
	sub, err := NewQueueSubscriber(db, QueueSubscriberConfig{Concurrency: 16}, nil)
	if err != nil {
		t.Fatal(err)
	}
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	busyCh, err := sub.Subscribe(subCtx, busy)
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
		{Consumer: metrics.WorkQueueConsumer, Topic: busy, Messages: k - m},
		{Consumer: metrics.WorkQueueConsumer, Topic: idle},
		{Consumer: metrics.WorkQueueConsumer, Topic: done},
	}
	// Acks are deleted in batches shortly after they are made.
	deadline := time.Now().Add(10 * time.Second)
	for {
		lags, err = QueueLag(ctx, db, busy, idle, done)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(lags, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue lag %+v, want %+v", lags, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	// Releasing the unacked claims leaves them queued.
	if lags, err = QueueLag(ctx, db, busy, idle, done); err != nil || !slices.Equal(lags, want) {
		t.Fatalf("after the subscriber closed: %+v (%v), want %+v", lags, err, want)
	}
}
