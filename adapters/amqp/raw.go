package amqp

import (
	"context"
	"errors"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/jobmill/jobmill/adapters/rawrate"
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

	return rawrate.Measure(ctx, pub, sub, topic, n, rawBatch, "amqp")
}
