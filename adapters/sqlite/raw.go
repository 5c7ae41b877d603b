package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/jobmill/jobmill/adapters/rawrate"
)

const rawBatch = 500

// MeasureRawThroughput reports the event-log transport's ceiling on db:
// it publishes n small messages in batches of 500 through the log publisher
// while a log subscriber (consumer group "raw-bench") consumes and acks them,
// and returns n divided by the time from the first publish to the last
// message consumed. The scratch topic's tables are dropped afterwards.
func MeasureRawThroughput(ctx context.Context, db *DB, n int) (msgsPerSec float64, err error) {
	if n <= 0 {
		return 0, errors.New("sqlite: raw throughput needs n > 0")
	}
	topic := "jobmill_raw_bench." + watermill.NewShortUUID()
	if err := InitializeLogTopics(ctx, db, topic); err != nil {
		return 0, err
	}
	defer func() {
		if dropErr := dropLogTopic(db, topic); dropErr != nil {
			err = errors.Join(err, dropErr)
		}
	}()

	pub, err := NewLogPublisher(db, nil)
	if err != nil {
		return 0, err
	}
	sub, err := NewLogSubscriber(db, "raw-bench", LogSubscriberConfig{}, nil)
	if err != nil {
		return 0, err
	}
	// Runs before dropLogTopic: the subscriber must release the write
	// connection and stop querying the tables first.
	defer func() { err = errors.Join(err, sub.Close()) }()

	return rawrate.Measure(ctx, pub, sub, topic, n, rawBatch, "sqlite")
}

// dropLogTopic deletes a topic's message and offsets tables.
func dropLogTopic(db *DB, topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := db.InTx(ctx, func(tx *HookTx) error {
		for _, table := range []string{LogSchema{}.MessagesTable(topic), LogOffsets{}.OffsetsTable(topic)} {
			if _, err := tx.ExecContext(ctx, "DROP TABLE IF EXISTS "+table); err != nil {
				return err
			}
		}
		return nil
	})
	db.logTopics.Delete(topic)
	if err != nil {
		return fmt.Errorf("sqlite: drop tables of topic %s: %w", topic, err)
	}
	return nil
}
