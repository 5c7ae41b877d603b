package sqlite

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// BenchmarkQueueThroughput publishes b.N messages in batches of 500 while one
// subscriber (64 outstanding, a goroutine per message as in the router)
// consumes and acks them.
func BenchmarkQueueThroughput(b *testing.B) {
	db := openTestDB(b)
	ctx := context.Background()
	if err := InitializeQueue(ctx, db); err != nil {
		b.Fatal(err)
	}
	sub, err := NewQueueSubscriber(db, QueueSubscriberConfig{Concurrency: 64}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(ctx, queueTopic)
	if err != nil {
		b.Fatal(err)
	}
	pub := NewQueuePublisher(db)
	payload := []byte(`{"n":0}`)

	b.ResetTimer()
	start := time.Now()
	pubErr := make(chan error, 1)
	go func() {
		for sent := 0; sent < b.N; sent += 500 {
			batch := make([]*message.Message, min(500, b.N-sent))
			for i := range batch {
				batch[i] = message.NewMessage(itoa(sent+i), payload)
			}
			if err := pub.Publish(queueTopic, batch...); err != nil {
				pubErr <- err
				return
			}
		}
		pubErr <- nil
	}()
	done := make(chan struct{}, 64)
	for got := 0; got < b.N; {
		select {
		case m := <-ch:
			go func() { m.Ack(); done <- struct{}{} }()
		case <-done:
			got++
		case err := <-pubErr:
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

// BenchmarkLogThroughput is MeasureRawThroughput: the event log's ceiling.
func BenchmarkLogThroughput(b *testing.B) {
	db := openTestDB(b)
	b.ResetTimer()
	rate, err := MeasureRawThroughput(context.Background(), db, max(b.N, 1))
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(rate, "msgs/s")
}
