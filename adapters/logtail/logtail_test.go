package logtail_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/logtail"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/adapters/sqllog"
	"github.com/jobmill/jobmill/internal/servertest"
)

const topic = "jobmill.events"

type backend struct {
	name    string
	open    func(t *testing.T) (db *sql.DB, pub message.Publisher)
	dialect logtail.Dialect
}

var backends = []backend{
	{"sqlite", func(t *testing.T) (*sql.DB, message.Publisher) {
		db, err := sqlite.Open(filepath.Join(t.TempDir(), "log.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		if err := sqlite.InitializeLogTopics(context.Background(), db, topic); err != nil {
			t.Fatal(err)
		}
		pub, err := sqlite.NewLogPublisher(db, nil)
		if err != nil {
			t.Fatal(err)
		}
		return db.Read, pub
	}, logtail.SQLite},
	{"postgres", func(t *testing.T) (*sql.DB, message.Publisher) {
		return openServer(t, servertest.OpenPostgres(t), sqllog.DialectPostgres)
	}, logtail.Postgres},
	{"mysql", func(t *testing.T) (*sql.DB, message.Publisher) {
		return openServer(t, servertest.OpenMySQL(t), sqllog.DialectMySQL)
	}, logtail.MySQL},
}

func openServer(t *testing.T, db *sql.DB, d sqllog.Dialect) (*sql.DB, message.Publisher) {
	if err := sqllog.Initialize(context.Background(), db, d, topic); err != nil {
		t.Fatal(err)
	}
	pub, err := sqllog.NewPublisher(db, d)
	if err != nil {
		t.Fatal(err)
	}
	return db, pub
}

func publish(t *testing.T, pub message.Publisher, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		m := message.NewMessage(fmt.Sprintf("m-%d", i), []byte(`{}`))
		m.Metadata.Set("partition_key", fmt.Sprintf("job-%d", i))
		if err := pub.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
}

// A tail starts at the end: what was published before it subscribed is never delivered; what comes
// after is, in order, with its metadata.
func TestTailStartsAtTheEndAndFollowsInOrder(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			db, pub := b.open(t)
			publish(t, pub, 0, 5)
			sub, err := logtail.NewSubscriber(logtail.Config{DB: db, Dialect: b.dialect, Poll: 5 * time.Millisecond, Batch: 7}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			msgs, err := sub.Subscribe(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			publish(t, pub, 5, 25) // more than one batch
			for i := 5; i < 25; i++ {
				select {
				case m := <-msgs:
					if m.UUID != fmt.Sprintf("m-%d", i) || m.Metadata.Get("partition_key") != fmt.Sprintf("job-%d", i) {
						t.Fatalf("got %s (key %q), want m-%d", m.UUID, m.Metadata.Get("partition_key"), i)
					}
					m.Ack()
				case <-time.After(10 * time.Second):
					t.Fatalf("message m-%d not delivered", i)
				}
			}
			if err := sub.Close(); err != nil {
				t.Fatal(err)
			}
			if _, ok := <-msgs; ok {
				t.Fatal("channel still open after Close")
			}
			// The tail wrote nothing: no consumer group, no offsets row.
			offsets := `"watermill_offsets_` + topic + `"`
			if b.name == "mysql" {
				offsets = "`watermill_offsets_" + topic + "`"
			}
			var n int
			if err := db.QueryRow("SELECT COUNT(*) FROM " + offsets).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("%d consumer offsets stored, want none", n)
			}
		})
	}
}

func TestTailOfMissingTopicFails(t *testing.T) {
	db, _ := backends[0].open(t)
	sub, err := logtail.NewSubscriber(logtail.Config{DB: db, Dialect: logtail.SQLite}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := sub.Subscribe(context.Background(), "no.such.topic"); err == nil {
		t.Fatal("Subscribe to a topic without a table succeeded")
	}
}
