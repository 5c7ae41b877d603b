package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/jobmill/jobmill/adapters/metrics"
)

// LogLag reports how many messages of topic each consumer group has not acknowledged yet: the newest
// offset minus the group's acked offset. Offsets are AUTOINCREMENT and log rows are never deleted
// behind a reader, so the difference is the count, read in O(1) per group. Every group in groups is
// reported, from the start of the log if it never stored an offset; every other group that stored one
// is reported too. A topic whose tables do not exist yet has nothing to read: groups lag by zero. It
// reads on the read pool and never takes the write lock.
func LogLag(ctx context.Context, db *DB, topic string, groups ...string) ([]metrics.Lag, error) {
	if err := validateTopic(topic); err != nil {
		return nil, err
	}
	exists, err := tablesExist(ctx, db, "watermill_"+topic, "watermill_offsets_"+topic)
	if err != nil {
		return nil, fmt.Errorf("sqlite: lag of %s: %w", topic, err)
	}
	out := make([]metrics.Lag, 0, len(groups))
	if !exists {
		for _, g := range groups {
			out = append(out, metrics.Lag{Consumer: g, Topic: topic})
		}
		return out, nil
	}
	// One statement, so the newest offset and the groups' offsets come from one snapshot. The LEFT JOIN
	// keeps the newest offset when no group stored an offset yet.
	q := `SELECT n.newest, o.consumer_group, COALESCE(o.offset_acked, 0)
		FROM (SELECT COALESCE(MAX("offset"), 0) AS newest FROM ` + LogSchema{}.MessagesTable(topic) + `) n
		LEFT JOIN ` + LogOffsets{}.OffsetsTable(topic) + ` o ON 1 = 1`
	rows, err := db.Read.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("sqlite: lag of %s: %w", topic, err)
	}
	defer rows.Close()
	var newest int64
	seen := map[string]bool{}
	for rows.Next() {
		var (
			group sql.NullString
			acked int64
		)
		if err := rows.Scan(&newest, &group, &acked); err != nil {
			return nil, fmt.Errorf("sqlite: lag of %s: %w", topic, err)
		}
		if !group.Valid {
			continue
		}
		seen[group.String] = true
		out = append(out, metrics.Lag{Consumer: group.String, Topic: topic, Messages: max(newest-acked, 0)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: lag of %s: %w", topic, err)
	}
	for _, g := range groups {
		if !seen[g] {
			out = append(out, metrics.Lag{Consumer: g, Topic: topic, Messages: newest})
		}
	}
	return out, nil
}

// QueueLag reports, for each work-queue topic, the messages not yet acknowledged: waiting, or claimed by
// a worker that has not finished. An ack deletes the row, so this is a count per topic through the claim
// index. Topics are reported under metrics.WorkQueueConsumer, with zero when nothing is queued.
func QueueLag(ctx context.Context, db *DB, topics ...string) ([]metrics.Lag, error) {
	out := make([]metrics.Lag, len(topics))
	for i, topic := range topics {
		out[i] = metrics.Lag{Consumer: metrics.WorkQueueConsumer, Topic: topic}
	}
	if len(topics) == 0 {
		return out, nil
	}
	exists, err := tablesExist(ctx, db, queueTable)
	if err != nil || !exists {
		return out, err
	}
	args := make([]any, len(topics))
	for i, t := range topics {
		args[i] = t
	}
	q := `SELECT topic, COUNT(*) FROM ` + queueTable + ` WHERE topic IN (` +
		strings.TrimSuffix(strings.Repeat("?,", len(topics)), ",") + `) GROUP BY topic`
	rows, err := db.Read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: queue lag: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			topic string
			n     int64
		)
		if err := rows.Scan(&topic, &n); err != nil {
			return nil, fmt.Errorf("sqlite: queue lag: %w", err)
		}
		for i := range out {
			if out[i].Topic == topic {
				out[i].Messages = n
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: queue lag: %w", err)
	}
	return out, nil
}

// tablesExist reports whether every named table exists.
func tablesExist(ctx context.Context, db *DB, names ...string) (bool, error) {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	args := make([]any, len(names))
	for i, n := range names {
		args[i] = n
	}
	var n int
	q := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN (` +
		strings.TrimSuffix(strings.Repeat("?,", len(names)), ",") + `)`
	if err := db.Read.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return false, err
	}
	return n == len(names), nil
}
