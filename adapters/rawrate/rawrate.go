// Package rawrate measures a transport's own publish+consume rate, the ceiling that `jobmill bench`
// prints beside the engine's figure. Each transport sets up a scratch topic and its publisher and
// subscriber; Measure runs the same loop on all of them, so their figures compare.
package rawrate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Measure publishes n small messages to topic in batches of batch, while sub consumes and acks them, and
// returns n divided by the time from the first publish to the last message consumed. name prefixes
// errors ("kafka: raw throughput: …").
func Measure(ctx context.Context, pub message.Publisher, sub message.Subscriber, topic string, n, batch int, name string) (float64, error) {
	if n <= 0 || batch <= 0 {
		return 0, fmt.Errorf("%s: raw throughput needs n > 0 and batch > 0", name)
	}
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
		for sent := 0; sent < n; sent += batch {
			msgs := make([]*message.Message, min(batch, n-sent))
			for i := range msgs {
				msgs[i] = message.NewMessage(watermill.NewUUID(), payload)
				msgs[i].SetContext(runCtx)
				// 64 keys spread the messages over partitions like 64 concurrent jobs.
				msgs[i].Metadata.Set("partition_key", strconv.Itoa((sent+i)%64))
			}
			if err := pub.Publish(topic, msgs...); err != nil {
				pubDone <- err
				return
			}
		}
		pubDone <- nil
	}()
	// The publishing goroutine must end before Measure returns.
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
				return 0, fmt.Errorf("%s: raw throughput: subscription closed early", name)
			}
			m.Ack()
			got++
		case err := <-pubDone:
			pubPending = false
			if err != nil {
				return 0, fmt.Errorf("%s: raw throughput: publish: %w", name, err)
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	elapsed := time.Since(start)
	if pubPending {
		pubPending = false
		if err := <-pubDone; err != nil {
			return 0, fmt.Errorf("%s: raw throughput: publish: %w", name, err)
		}
	}
	if elapsed <= 0 {
		return 0, errors.New(name + ": raw throughput: no time elapsed")
	}
	return float64(n) / elapsed.Seconds(), nil
}
