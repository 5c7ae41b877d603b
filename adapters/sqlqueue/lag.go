package sqlqueue

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/jobmill/jobmill/adapters/metrics"
)

// Lag reports, for each topic, the messages not yet acknowledged: waiting, or claimed by a worker that has
// not finished. An ack deletes the row, so this is a count per topic through the claim index. Topics are
// reported under metrics.WorkQueueConsumer, with zero when nothing is queued or the table does not exist
// yet.
func Lag(ctx context.Context, db *sql.DB, dialect Dialect, topics ...string) ([]metrics.Lag, error) {
	if err := dialect.validate(); err != nil {
		return nil, err
	}
	out := make([]metrics.Lag, len(topics))
	for i, topic := range topics {
		out[i] = metrics.Lag{Consumer: metrics.WorkQueueConsumer, Topic: topic}
	}
	if len(topics) == 0 {
		return out, nil
	}
	var exists int
	var err error
	if dialect == DialectPostgres {
		// to_regclass resolves the name through the search path, as the queue's own statements do.
		err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT to_regclass($1) AS t) r WHERE r.t IS NOT NULL`,
			Table).Scan(&exists)
	} else {
		err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables
			WHERE table_schema = DATABASE() AND table_name = ?`, Table).Scan(&exists)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlqueue: lag: %w", err)
	}
	if exists == 0 {
		return out, nil
	}
	args := make([]any, len(topics))
	for i, t := range topics {
		args[i] = t
	}
	q := dialect.rebind(`SELECT topic, COUNT(*) FROM ` + Table + ` WHERE topic IN (` +
		strings.TrimSuffix(strings.Repeat("?,", len(topics)), ",") + `) GROUP BY topic`)
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlqueue: lag: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			topic string
			n     int64
		)
		if err := rows.Scan(&topic, &n); err != nil {
			return nil, fmt.Errorf("sqlqueue: lag: %w", err)
		}
		for i := range out {
			if out[i].Topic == topic {
				out[i].Messages = n
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlqueue: lag: %w", err)
	}
	return out, nil
}
