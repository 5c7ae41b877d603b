package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/IBM/sarama"
)

// ResetConsumerGroup deletes a consumer group, so that it starts again from the oldest offset (the
// subscribers' setting for new groups). Kafka refuses while the group has members: stop them first.
func ResetConsumerGroup(ctx context.Context, cfg Config, group string) (err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	admin, err := newAdmin(cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeAdmin(admin)) }()
	err = admin.DeleteConsumerGroup(group)
	switch {
	case err == nil, errors.Is(err, sarama.ErrGroupIDNotFound):
		return nil
	case errors.Is(err, sarama.ErrNonEmptyGroup):
		return fmt.Errorf("kafka: consumer group %s still has members: stop the processes consuming it first", group)
	}
	return fmt.Errorf("kafka: reset consumer group %s: %w", group, err)
}
