package sqllog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/jobmill/jobmill/adapters/rawrate"
)

const rawBatch = 500

// MeasureRawThroughput reports the event log's ceiling on db: it publishes n small messages in batches of
// 500 while a fresh consumer group consumes and acks them, and returns n divided by the time from the
// first publish to the last message consumed. The scratch topic's tables are dropped afterwards.
func MeasureRawThroughput(ctx context.Context, db *sql.DB, dialect Dialect, n int) (msgsPerSec float64, err error) {
	if n <= 0 {
		return 0, errors.New("sqllog: raw throughput needs n > 0")
	}
	topic := "jobmill_raw_bench_" + watermill.NewShortUUID()
	if err := Initialize(ctx, db, dialect, topic); err != nil {
		return 0, err
	}
	defer func() {
		if dropErr := dropTopic(db, dialect, topic); dropErr != nil {
			err = errors.Join(err, dropErr)
		}
	}()

	pub, err := NewPublisher(db, dialect)
	if err != nil {
		return 0, err
	}
	sub, err := NewSubscriber(db, dialect, "raw-bench", nil)
	if err != nil {
		return 0, err
	}
	// Runs before dropTopic: the subscriber must stop querying the tables first.
	defer func() { err = errors.Join(err, sub.Close()) }()

	return rawrate.Measure(ctx, pub, sub, topic, n, rawBatch, "sqllog")
}

// dropTopic deletes a topic's message and offsets tables.
func dropTopic(db *sql.DB, dialect Dialect, topic string) error {
	schema, offsets, err := dialect.schema()
	if err != nil {
		return err
	}
	tables := []string{
		schema.(interface{ MessagesTable(string) string }).MessagesTable(topic),
		offsets.(interface{ MessagesOffsetsTable(string) string }).MessagesOffsetsTable(topic),
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, t := range tables {
		if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
			return fmt.Errorf("sqllog: drop %s: %w", t, err)
		}
	}
	return nil
}
