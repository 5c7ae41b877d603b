package sqllog

import (
	"context"
	"database/sql"
	"fmt"
)

// ResetConsumerGroup moves a consumer group back to the start of a topic by deleting its row in
// watermill-sql's offsets table. Stop the group's subscribers first; one that is running acks its batch
// and moves the offset forward again.
func ResetConsumerGroup(ctx context.Context, db *sql.DB, d Dialect, topic, group string) error {
	if err := validateTopic(topic); err != nil {
		return err
	}
	table, arg := `"watermill_offsets_`+topic+`"`, "$1"
	if d == DialectMySQL {
		table, arg = "`watermill_offsets_"+topic+"`", "?"
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM `+table+` WHERE consumer_group = `+arg, group); err != nil {
		return fmt.Errorf("sqllog: reset consumer group %s of %s: %w", group, topic, err)
	}
	return nil
}
