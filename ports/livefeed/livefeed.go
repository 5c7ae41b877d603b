// Package livefeed feeds the live hub from this process's own subscription to the event log: every
// event tells the hub which job changed. Each API process has its own subscription, so live views work
// whichever process runs the manager.
package livefeed

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/messaging"
)

// Notifier is what the feed tells about changed jobs (live.Hub).
type Notifier interface {
	Notify(jobID string, stateChange bool)
}

// stateEvents are the manager's events: each changes the job's state and is worth showing at once.
var stateEvents = map[string]bool{
	"JobStarted": true, "Step2Started": true, "Step2Completed": true,
	"JobCompleted": true, "JobFailed": true, "JobCancelled": true,
}

// Run consumes the event log from sub until ctx ends. Messages are only hints: each is acked at once,
// and one without a job id is skipped (the manager's own subscription moves it to the poison topic).
func Run(ctx context.Context, sub message.Subscriber, hub Notifier) error {
	if sub == nil || hub == nil {
		return errors.New("livefeed: subscriber and hub are required")
	}
	msgs, err := sub.Subscribe(ctx, messaging.EventsTopic)
	if err != nil {
		return err
	}
	for msg := range msgs {
		if jobID := msg.Metadata.Get(messaging.PartitionKeyMetadata); jobID != "" {
			hub.Notify(jobID, stateEvents[messaging.Marshaler.NameFromMessage(msg)])
		}
		msg.Ack()
	}
	return nil
}
