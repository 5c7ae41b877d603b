package amqp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

const (
	rawBatch       = 500
	rawConcurrency = 8
)

// MeasureRawThroughput reports the work queue's ceiling: it publishes n small persistent messages
// with confirms, in calls of 500 through NewQueuePublisher, to a scratch queue while
// NewQueueSubscriber (concurrency 8) consumes and acks them. It returns n divided by the time from the
// first publish to the last message consumed. The scratch queue is deleted afterwards.
func MeasureRawThroughput(ctx context.Context, url string, n int) (msgsPerSec float64, err error) {
	if n <= 0 {
		return 0, errors.New("amqp: raw throughput needs n > 0")
	}
	topic := "jobmill.raw-bench." + watermill.NewShortUUID()
	if err := Declare(ctx, url, []string{topic}, nil, nil); err != nil {
		return 0, err
	}
	defer func() {
		// A fresh context: the queue must go even when ctx is what ended the measurement.
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, DeleteQueues(dctx, url, topic))
	}()

	pub, err := NewQueuePublisher(url, nil)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, pub.Close()) }()
	sub, err := NewQueueSubscriber(url, rawConcurrency, nil)
	if err != nil {
		return 0, err
	}
	// Runs before DeleteQueues: consumers leave the queue first.
	defer func() { err = errors.Join(err, sub.Close()) }()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, err := sub.Subscribe(runCtx, topic)
	if err != nil {
		return 0, err
	}

	payload := []byte(`{"n":0}`)
	start := time.Now()
	pubDone := make(chan error, 1)
	go func() {
		for sent := 0; sent < n; sent += rawBatch {
			batch := make([]*message.Message, min(rawBatch, n-sent))
			for i := range batch {
				batch[i] = message.NewMessage(watermill.NewUUID(), payload)
				batch[i].SetContext(runCtx)
			}
			if err := pub.Publish(topic, batch...); err != nil {
				pubDone <- err
				return
			}
		}
		pubDone <- nil
	}()
	pubPending := true
	defer func() {
		cancel()
		if pubPending {
			<-pubDone
		}
	}()

	for got := 0; got < n; {
		select {
		case m, ok := <-msgs:
			if !ok {
				return 0, errors.New("amqp: raw throughput: subscription closed early")
			}
			m.Ack()
			got++
		case err := <-pubDone:
			pubPending = false
			if err != nil {
				return 0, fmt.Errorf("amqp: raw throughput: publish: %w", err)
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	elapsed := time.Since(start)
	if pubPending {
		pubPending = false
		if err := <-pubDone; err != nil {
			return 0, fmt.Errorf("amqp: raw throughput: publish: %w", err)
		}
	}
	return float64(n) / elapsed.Seconds(), nil
}
