package router

import (
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
	for _, m := range []job.Message{
		job.JobStarted{}, job.Step1Completed{}, job.Step2Started{}, job.Step2SubjobCompleted{}, job.Step2SubjobFailed{},
		job.Step2Completed{}, job.Step3Completed{}, job.StepFailed{}, job.JobCompleted{}, job.JobFailed{},
		job.JobCancelled{}, job.Tick{}, job.RunStep1{}, job.RunSubJob{}, job.RunStep3{},
	} {
		knownMessages[messaging.Marshaler.Name(m)] = reflect.TypeOf(m)
	}
}

// Poison moves a message that can never be processed — unknown name, undecodable payload, no job id — to
// the poison topic with the reason, and acks it, so that it neither crashes the process nor blocks the
// partition or queue behind it. Handler errors are not poison: they are retried, since a database that
// is briefly away must not cost a message.
func Poison(pub message.Publisher, logger watermill.LoggerAdapter) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			reason := malformed(msg)
			if reason == "" {
				return h(msg)
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

func malformed(msg *message.Message) string {
	name := messaging.Marshaler.NameFromMessage(msg)
	if name == "" {
		return "no message name in metadata"
	}
	t, ok := knownMessages[name]
	if !ok {
		return fmt.Sprintf("unknown message name %q", name)
	}
	v := reflect.New(t)
	if err := messaging.Marshaler.Unmarshal(msg, v.Interface()); err != nil {
		return fmt.Sprintf("cannot decode %s: %v", name, err)
	}
	if v.Elem().Interface().(job.Message).JobKey() == "" {
		return fmt.Sprintf("%s without a job id", name)
	}
	return ""
}
