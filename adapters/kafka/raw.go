package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
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
				// 64 keys spread the messages over the partitions like 64 concurrent jobs.
				batch[i].Metadata.Set("partition_key", strconv.Itoa((sent+i)%64))
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
				return 0, errors.New("kafka: raw throughput: subscription closed early")
			}
			m.Ack()
			got++
		case err := <-pubDone:
			pubPending = false
			if err != nil {
				return 0, fmt.Errorf("kafka: raw throughput: publish: %w", err)
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	elapsed := time.Since(start)
	if pubPending {
		pubPending = false
		if err := <-pubDone; err != nil {
			return 0, fmt.Errorf("kafka: raw throughput: publish: %w", err)
		}
	}
	return float64(n) / elapsed.Seconds(), nil
}
