package kafka

import (
	"context"
	"errors"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/jobmill/jobmill/adapters/rawrate"
)

const rawBatch = 500

// MeasureRawThroughput reports the transport's ceiling: it publishes n small messages in batches of
// 500 through NewPublisher to a scratch topic (cfg.Partitions partitions, keys spread over them), while
// a fresh consumer group consumes and acks them through NewSubscriber. It returns n divided by the time
// from the first publish to the last message consumed. The scratch topic is deleted afterwards.
func MeasureRawThroughput(ctx context.Context, cfg Config, n int) (msgsPerSec float64, err error) {
	if n <= 0 {
		return 0, errors.New("kafka: raw throughput needs n > 0")
	}
	cfg, err = cfg.withDefaults()
	if err != nil {
		return 0, err
	}
	topic := "jobmill.raw-bench." + watermill.NewShortUUID()
	if err := CreateTopics(ctx, cfg, topic); err != nil {
		return 0, err
	}
	defer func() {
		// A fresh context: the topic must go even when ctx is what ended the measurement.
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = errors.Join(err, DeleteTopics(dctx, cfg, topic))
	}()

	pub, err := NewPublisher(cfg, nil)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, pub.Close()) }()
	sub, err := NewSubscriber(cfg, "jobmill-raw-bench-"+watermill.NewShortUUID(), nil)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, sub.Close()) }()

	return rawrate.Measure(ctx, pub, sub, topic, n, rawBatch, "kafka")
}
