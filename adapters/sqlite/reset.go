package sqlite

import (
	"context"
	"fmt"
)

// ResetConsumerGroup moves a consumer group back to the start of a topic: its next batch begins with the
// first message. Stop the group's subscribers first; one that is running acks its batch and moves the
// offset forward again.
func ResetConsumerGroup(ctx context.Context, db *DB, topic, group string) error {
	if err := validateTopic(topic); err != nil {
		return err
	}
	return db.InTx(ctx, func(tx *HookTx) error {
		if _, err := tx.SQL().ExecContext(ctx, `DELETE FROM `+LogOffsets{}.OffsetsTable(topic)+` WHERE consumer_group = ?`, group); err != nil {
			return fmt.Errorf("sqlite: reset consumer group %s of %s: %w", group, topic, err)
		}
		return nil
	})
}
