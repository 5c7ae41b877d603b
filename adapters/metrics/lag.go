package metrics

import (
	"context"
	"errors"
)

// Lag is how many messages one consumer still has to handle on one topic: for a consumer group of the
// event log, the messages after its committed offset; for a work queue, the messages not yet
// acknowledged (on RabbitMQ, those not yet delivered).
type Lag struct {
	// Consumer is the consumer group ("manager", "stats", "relay"), or WorkQueueConsumer for a work queue.
	Consumer string
	Topic    string
	Messages int64
}

// WorkQueueConsumer names the competing workers of a work queue in lag reports. It is also the consumer
// group the workers use on Kafka, so every backend reports work queues under the same name.
const WorkQueueConsumer = "workers"

// LagSource reports the lag of the consumers it watches. It is called at scrape time and must respect
// ctx's deadline.
type LagSource func(ctx context.Context) ([]Lag, error)

// JoinLag asks every source in turn and returns what they reported. A failing source does not hide the
// others: its error is joined to the result.
func JoinLag(sources ...LagSource) LagSource {
	return func(ctx context.Context) ([]Lag, error) {
		var (
			out  []Lag
			errs []error
		)
		for _, src := range sources {
			lags, err := src(ctx)
			out = append(out, lags...)
			errs = append(errs, err)
		}
		return out, errors.Join(errs...)
	}
}
