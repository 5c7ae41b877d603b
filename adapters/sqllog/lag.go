package sqllog

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jobmill/jobmill/adapters/metrics"
)

// Lag reports how many messages of topic each consumer group has not acknowledged yet, counted in the
// order the subscribers read: on PostgreSQL by (transaction id, offset) after the group's position, on
// MySQL by offset after its acked offset. A count, not newest minus acked: offsets leave gaps (sequence
// values of rolled-back inserts) and, on PostgreSQL, do not follow the read order. The count walks the
// primary key from the group's position, so it costs in proportion to the lag itself.
//
// Every group in groups is reported, from the start of the log if it has no offset row yet; every other
// group with a row is reported too. A topic whose tables do not exist yet has nothing to read: groups lag
// by zero.
func Lag(ctx context.Context, db *sql.DB, dialect Dialect, topic string, groups ...string) ([]metrics.Lag, error) {
	if err := validateTopic(topic); err != nil {
		return nil, err
	}
	exists, err := tablesExist(ctx, db, dialect, "watermill_"+topic, "watermill_offsets_"+topic)
	if err != nil {
		return nil, fmt.Errorf("sqllog: lag of %s: %w", topic, err)
	}
	out := make([]metrics.Lag, 0, len(groups))
	if !exists {
		for _, g := range groups {
			out = append(out, metrics.Lag{Consumer: g, Topic: topic})
		}
		return out, nil
	}
	var perGroup, all string
	switch dialect {
	case DialectPostgres:
		msgs, offsets := `"watermill_`+topic+`"`, `"watermill_offsets_`+topic+`"`
		perGroup = `SELECT o.consumer_group, (SELECT COUNT(*) FROM ` + msgs + ` m
				WHERE (m.transaction_id = o.last_processed_transaction_id AND m."offset" > COALESCE(o.offset_acked, 0))
				   OR m.transaction_id > o.last_processed_transaction_id)
			FROM ` + offsets + ` o`
		all = `SELECT COUNT(*) FROM ` + msgs
	case DialectMySQL:
		msgs, offsets := "`watermill_"+topic+"`", "`watermill_offsets_"+topic+"`"
		perGroup = `SELECT o.consumer_group, (SELECT COUNT(*) FROM ` + msgs + ` m
				WHERE m.` + "`offset`" + ` > COALESCE(o.offset_acked, 0))
			FROM ` + offsets + ` o`
		all = `SELECT COUNT(*) FROM ` + msgs
	default:
		return nil, fmt.Errorf("sqllog: unknown dialect %q", dialect)
	}

	rows, err := db.QueryContext(ctx, perGroup)
	if err != nil {
		return nil, fmt.Errorf("sqllog: lag of %s: %w", topic, err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var l metrics.Lag
		if err := rows.Scan(&l.Consumer, &l.Messages); err != nil {
			return nil, fmt.Errorf("sqllog: lag of %s: %w", topic, err)
		}
		l.Topic = topic
		seen[l.Consumer] = true
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqllog: lag of %s: %w", topic, err)
	}
	var total int64
	counted := false
	for _, g := range groups {
		if seen[g] {
			continue
		}
		if !counted {
			if err := db.QueryRowContext(ctx, all).Scan(&total); err != nil {
				return nil, fmt.Errorf("sqllog: lag of %s: %w", topic, err)
			}
			counted = true
		}
		out = append(out, metrics.Lag{Consumer: g, Topic: topic, Messages: total})
	}
	return out, nil
}

// tablesExist reports whether every named table exists in the connection's current schema (PostgreSQL's
// search path) or database (MySQL).
func tablesExist(ctx context.Context, db *sql.DB, dialect Dialect, names ...string) (bool, error) {
	for _, name := range names {
		var n int
		var err error
		switch dialect {
		case DialectPostgres:
			// to_regclass resolves the name through the search path, as the log's own statements do.
			err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT to_regclass($1) AS t) r WHERE r.t IS NOT NULL`,
				`"`+name+`"`).Scan(&n)
		case DialectMySQL:
			err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables
				WHERE table_schema = DATABASE() AND table_name = ?`, name).Scan(&n)
		default:
			return false, fmt.Errorf("unknown dialect %q", dialect)
		}
		if err != nil || n == 0 {
			return false, err
		}
	}
	return true, nil
}
