package router

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/app/job"
)

// Metadata keys a poisoned message carries.
const (
	PoisonReasonMetadata  = "poison_reason"
	PoisonTopicMetadata   = "poison_topic"
	PoisonHandlerMetadata = "poison_handler"
)

// knownMessages are the messages that may appear on jobmill's topics, by CQRS name.
var knownMessages = map[string]reflect.Type{}

func init() {
	for _, m := range append(job.LogEvents(), job.WorkCommands()...) {
		knownMessages[messaging.Marshaler.Name(m)] = reflect.TypeOf(m)
	}
}

// Poison moves a message that can never be processed — no name, an unknown name, an undecodable payload,
// no job id — to the poison topic with the reason, and acks it, so that it neither crashes the process nor
// blocks the partition or queue behind it. Names are checked before the handler runs; payloads are decoded
// once, by the handler, whose *messaging.DecodeError lands here. Other handler errors are not poison: they
// are retried, since a database that is briefly away must not cost a message.
func Poison(pub message.Publisher, logger watermill.LoggerAdapter) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			reason := unknownName(msg)
			if reason == "" {
				out, err := h(msg)
				var decodeErr *messaging.DecodeError
				if !errors.As(err, &decodeErr) {
					return out, err
				}
				reason = decodeErr.Error()
			}
			poisoned := msg.Copy()
			poisoned.Metadata.Set(PoisonReasonMetadata, reason)
			poisoned.Metadata.Set(PoisonTopicMetadata, message.SubscribeTopicFromCtx(msg.Context()))
			poisoned.Metadata.Set(PoisonHandlerMetadata, message.HandlerNameFromCtx(msg.Context()))
			// Same context: on a SQL log the poison row commits with the consumer's offset.
			poisoned.SetContext(msg.Context())
			if err := pub.Publish(messaging.PoisonTopic, poisoned); err != nil {
				return nil, fmt.Errorf("move malformed message %s to the poison topic: %w", msg.UUID, err)
			}
			logger.Error("Malformed message moved to the poison topic", nil, watermill.LogFields{
				"message_uuid": msg.UUID, "reason": reason, "topic": message.SubscribeTopicFromCtx(msg.Context()),
			})
			return nil, nil
		}
	}
}

func unknownName(msg *message.Message) string {
	name := messaging.Marshaler.NameFromMessage(msg)
	if name == "" {
		return "no message name in metadata"
	}
	if _, ok := knownMessages[name]; !ok {
		return fmt.Sprintf("unknown message name %q", name)
	}
	return ""
}
