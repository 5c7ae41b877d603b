// Package messaging holds the wire conventions every transport shares: topic names, the CQRS marshaler
// (JSON, message name in metadata) and the partition key, so that a message published by one backend's
// outbox decodes the same on any consumer.
package messaging

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/app/job"
)

const (
	// EventsTopic is the event log: ordered per job, read by every consumer group.
	EventsTopic = "jobmill.events"
	// WorkTopicPrefix starts the work queues, one per command (WorkTopic): competing workers, duplicates
	// allowed. Separate queues let step 1 and step 3 run beside a long backlog of sub-jobs.
	WorkTopicPrefix = "jobmill.work."
	// PoisonTopic receives messages that can never be processed, with the reason in metadata.
	PoisonTopic = "jobmill.poison"

	// PartitionKeyMetadata carries the job id: transports that partition use it as the key.
	PartitionKeyMetadata = "partition_key"
	// ManagerGroup is the manager's consumer group on the event log.
	ManagerGroup = "manager"
)

// LogGroups are every consumer group of the event log: the manager and the projections (statistics,
// detailed status, notifications). Transports whose groups must exist before the first publish
// (RabbitMQ) declare them all, whichever roles this process runs.
var LogGroups = []string{ManagerGroup, "stats", "status", "notifier"}

// Marshaler is the CQRS marshaler for events and commands. It adds the partition key to every message
// and reports every message it cannot decode as a *DecodeError, which the router moves to the poison topic.
var Marshaler cqrs.CommandEventMarshaler = decodeChecking{cqrs.CommandEventMarshalerDecorator{
	CommandEventMarshaler: cqrs.JSONMarshaler{GenerateName: cqrs.StructName},
	DecorateFunc: func(v any, msg *message.Message) error {
		m, ok := v.(job.Message)
		if !ok {
			return fmt.Errorf("%T is not a jobmill message", v)
		}
		msg.Metadata.Set(PartitionKeyMetadata, m.JobKey())
		return nil
	},
}}

// DecodeError: a message can never be decoded (broken payload, or no job id). Retrying cannot help.
type DecodeError struct {
	Name string
	Err  error
}

func (e *DecodeError) Error() string { return fmt.Sprintf("cannot decode %s: %v", e.Name, e.Err) }
func (e *DecodeError) Unwrap() error { return e.Err }

type decodeChecking struct{ cqrs.CommandEventMarshaler }

func (m decodeChecking) Unmarshal(msg *message.Message, v any) error {
	name := m.NameFromMessage(msg)
	if err := m.CommandEventMarshaler.Unmarshal(msg, v); err != nil {
		return &DecodeError{Name: name, Err: err}
	}
	if jm, ok := v.(job.Message); ok && jm.JobKey() == "" {
		return &DecodeError{Name: name, Err: errors.New("no job id")}
	}
	return nil
}

// Encode marshals messages for publishing in one batch.
func Encode(msgs []job.Message) ([]*message.Message, error) {
	out := make([]*message.Message, 0, len(msgs))
	for _, m := range msgs {
		wm, err := Marshaler.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("marshal %T: %w", m, err)
		}
		out = append(out, wm)
	}
	return out, nil
}

// WorkTopic is the work queue of a command, by its CQRS name ("RunSubJobs").
func WorkTopic(commandName string) string { return WorkTopicPrefix + commandName }

// WorkTopics lists every work queue, for transports that declare queues up front.
func WorkTopics() []string {
	return []string{WorkTopic("RunStep1"), WorkTopic("RunSubJobs"), WorkTopic("RunStep3")}
}

// GroupCommands encodes commands and groups them by work queue, keeping their order within each queue.
func GroupCommands(cmds []job.Message) (topics []string, byTopic map[string][]*message.Message, err error) {
	byTopic = map[string][]*message.Message{}
	for _, c := range cmds {
		wm, err := Marshaler.Marshal(c)
		if err != nil {
			return nil, nil, fmt.Errorf("marshal %T: %w", c, err)
		}
		topic := WorkTopic(Marshaler.Name(c))
		if _, ok := byTopic[topic]; !ok {
			topics = append(topics, topic)
		}
		byTopic[topic] = append(byTopic[topic], wm)
	}
	return topics, byTopic, nil
}

// EventPublisher publishes events on the log with an ordinary (autocommit) publisher: how workers report.
type EventPublisher struct{ Publisher message.Publisher }

// Publish implements worker.EventPublisher.
func (p EventPublisher) Publish(ctx context.Context, events ...job.Message) error {
	if len(events) == 0 {
		return nil
	}
	msgs, err := Encode(events)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		m.SetContext(ctx)
	}
	return p.Publisher.Publish(EventsTopic, msgs...)
}

// PartitionKey returns the partition key of a message (the job id), for transports that partition.
func PartitionKey(_ string, msg *message.Message) (string, error) {
	return msg.Metadata.Get(PartitionKeyMetadata), nil
}
