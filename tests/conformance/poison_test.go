package conformance

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/amqp"
	"github.com/jobmill/jobmill/adapters/kafka"
	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/adapters/sqllog"
	"github.com/jobmill/jobmill/adapters/sqlqueue"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/ports/router"
)

// poisonReaderGroup is the consumer group this suite reads the poison topic with.
const poisonReaderGroup = "conformance-poison-reader"

// backendIO gives a scenario the backend's own publishers and a poison-topic subscriber, the way a
// second process would reach them.
type backendIO struct {
	log, queue message.Publisher
	poison     func() (message.Subscriber, error)
	closers    []func() error
}

func (b *backendIO) close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		_ = b.closers[i]()
	}
}

func openBackendIO(t *testing.T, e *env) *backendIO {
	t.Helper()
	b := &backendIO{}
	t.Cleanup(b.close)
	logger := watermill.NopLogger{}
	kcfg := kafka.Config{Brokers: e.cfg.Kafka.Brokers, Partitions: e.cfg.Kafka.Partitions}
	var sqlDB *sql.DB
	var sqlDialect string
	switch e.cfg.Store {
	case config.BackendSQLite:
		if e.cfg.Log == config.BackendSQLite || e.cfg.Queue == config.BackendSQLite {
			db, err := sqlite.Open(e.cfg.SQLite.Path) // a second handle on the same file
			if err != nil {
				t.Fatal(err)
			}
			b.closers = append(b.closers, db.Close)
			if e.cfg.Log == config.BackendSQLite {
				if b.log, err = sqlite.NewLogPublisher(db, logger); err != nil {
					t.Fatal(err)
				}
				b.poison = func() (message.Subscriber, error) {
					return sqlite.NewLogSubscriber(db, poisonReaderGroup, sqlite.LogSubscriberConfig{}, logger)
				}
			}
			if e.cfg.Queue == config.BackendSQLite {
				b.queue = sqlite.NewQueuePublisher(db)
			}
		}
	case config.BackendPostgres, config.BackendMySQL:
		driver, dsn := "pgx", e.cfg.Postgres.URL
		if e.cfg.Store == config.BackendMySQL {
			driver, dsn = "mysql", e.cfg.MySQL.DSN
		}
		db, err := sql.Open(driver, dsn)
		if err != nil {
			t.Fatal(err)
		}
		b.closers = append(b.closers, db.Close)
		sqlDB, sqlDialect = db, e.cfg.Store
	}
	if e.cfg.Log == sqlDialect && sqlDB != nil {
		pub, err := sqllog.NewPublisher(sqlDB, sqllog.Dialect(sqlDialect))
		if err != nil {
			t.Fatal(err)
		}
		b.log = pub
		b.poison = func() (message.Subscriber, error) {
			return sqllog.NewSubscriber(sqlDB, sqllog.Dialect(sqlDialect), poisonReaderGroup, logger)
		}
	}
	if e.cfg.Queue == sqlDialect && sqlDB != nil {
		pub, err := sqlqueue.NewPublisher(sqlDB, sqlqueue.Dialect(sqlDialect))
		if err != nil {
			t.Fatal(err)
		}
		b.queue = pub
	}
	if e.cfg.Log == config.BackendKafka || e.cfg.Queue == config.BackendKafka {
		pub, err := kafka.NewPublisher(kcfg, logger)
		if err != nil {
			t.Fatal(err)
		}
		b.closers = append(b.closers, pub.Close)
		if e.cfg.Log == config.BackendKafka {
			b.log = pub
			b.poison = func() (message.Subscriber, error) { return kafka.NewSubscriber(kcfg, poisonReaderGroup, logger) }
		}
		if e.cfg.Queue == config.BackendKafka {
			b.queue = pub
		}
	}
	if e.cfg.Log == config.BackendAMQP {
		pub, err := amqp.NewLogPublisher(e.cfg.AMQP.URL, logger)
		if err != nil {
			t.Fatal(err)
		}
		b.closers = append(b.closers, pub.Close)
		b.log = pub
		// With RabbitMQ as the log, poison goes to a durable queue (kept until read), not to a fan-out.
		b.poison = func() (message.Subscriber, error) { return amqp.NewQueueSubscriber(e.cfg.AMQP.URL, 1, logger) }
	}
	if e.cfg.Queue == config.BackendAMQP {
		pub, err := amqp.NewQueuePublisher(e.cfg.AMQP.URL, logger)
		if err != nil {
			t.Fatal(err)
		}
		b.closers = append(b.closers, pub.Close)
		b.queue = pub
	}
	if b.log == nil || b.queue == nil || b.poison == nil {
		t.Fatalf("no publisher or poison reader for log %s / queue %s / store %s", e.cfg.Log, e.cfg.Queue, e.cfg.Store)
	}
	return b
}

// garbage is one malformed message and where it goes.
type garbage struct {
	topic string
	msg   *message.Message
}

// malformed builds three malformed messages per topic: a known name with an undecodable payload, no
// name, and an unknown name. Each carries a partition key, so a partitioning publisher accepts it.
func malformed() []garbage {
	var out []garbage
	topics := append([]string{messaging.EventsTopic}, messaging.WorkTopics()...)
	known := map[string]string{messaging.EventsTopic: "JobStarted"}
	for _, wt := range messaging.WorkTopics() {
		known[wt] = wt[len(messaging.WorkTopicPrefix):] // the command's name
	}
	for _, topic := range topics {
		bad := message.NewMessage(watermill.NewUUID(), []byte(`{"job_id": "poison-1", this is not json`))
		bad.Metadata.Set("name", known[topic])
		bad.Metadata.Set(messaging.PartitionKeyMetadata, "poison-1")
		noName := message.NewMessage(watermill.NewUUID(), []byte(`{"job_id":"poison-2"}`))
		noName.Metadata.Set(messaging.PartitionKeyMetadata, "poison-2")
		unknown := message.NewMessage(watermill.NewUUID(), []byte(`{"job_id":"poison-3"}`))
		unknown.Metadata.Set("name", "NoSuchMessage")
		unknown.Metadata.Set(messaging.PartitionKeyMetadata, "poison-3")
		for _, m := range []*message.Message{bad, noName, unknown} {
			out = append(out, garbage{topic: topic, msg: m})
		}
	}
	return out
}

// Scenario 2: malformed messages on the event log and on every work queue, published while the engine
// runs, end on the poison topic with a reason; a normal job still completes exactly.
func testMalformed(t *testing.T, c combo) {
	e := newEnv(t, c)
	typ := newCounting(t, "conformance-noop", 0)
	en := startEngine(t, e, typ.registry, nil)
	io := openBackendIO(t, e)

	bad := malformed()
	want := map[string]garbage{}
	for _, g := range bad {
		pub := io.queue
		if g.topic == messaging.EventsTopic {
			pub = io.log
		}
		if err := pub.Publish(g.topic, g.msg); err != nil {
			t.Fatalf("publish malformed message %s on %s: %v", g.msg.UUID, g.topic, err)
		}
		want[g.msg.UUID] = g
	}

	const n = 500
	id := en.submit(typ.name, countInput{N: n})
	st := en.waitCompleted(id)
	checkCounts(t, st, n)
	if runs := typ.step3Runs(id); runs != 1 {
		t.Errorf("step 3 ran %d times, want 1", runs)
	}

	// Read the poison topic back with a consumer group of our own.
	sub, err := io.poison()
	if err != nil {
		t.Fatalf("poison subscriber: %v", err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	msgs, err := sub.Subscribe(ctx, messaging.PoisonTopic)
	if err != nil {
		t.Fatalf("subscribe to %s: %v", messaging.PoisonTopic, err)
	}
	got := map[string]int{}
	var unexpected []string
	for len(got) < len(want) {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("poison subscription closed after %d of %d malformed messages", len(got), len(want))
			}
			g, known := want[m.UUID]
			switch {
			case !known:
				unexpected = append(unexpected, fmt.Sprintf("%s (reason %q, topic %q)", m.UUID, m.Metadata.Get(router.PoisonReasonMetadata), m.Metadata.Get(router.PoisonTopicMetadata)))
			default:
				got[m.UUID]++
				reason := m.Metadata.Get(router.PoisonReasonMetadata)
				if reason == "" {
					t.Errorf("poisoned %s from %s has no %s metadata: %v", m.UUID, g.topic, router.PoisonReasonMetadata, m.Metadata)
				}
				if pt := m.Metadata.Get(router.PoisonTopicMetadata); pt != g.topic {
					t.Errorf("poisoned %s: %s = %q, want %q", m.UUID, router.PoisonTopicMetadata, pt, g.topic)
				}
				if string(m.Payload) != string(g.msg.Payload) {
					t.Errorf("poisoned %s: payload %q, want the original %q", m.UUID, m.Payload, g.msg.Payload)
				}
				t.Logf("poisoned from %s (name %q): %s", g.topic, g.msg.Metadata.Get("name"), reason)
			}
			m.Ack()
		case <-ctx.Done():
			var missing []string
			for u, g := range want {
				if got[u] == 0 {
					missing = append(missing, fmt.Sprintf("%s on %s (name %q)", u, g.topic, g.msg.Metadata.Get("name")))
				}
			}
			sort.Strings(missing)
			t.Fatalf("the poison topic holds %d of %d malformed messages within %s; missing: %v", len(got), len(want), waitLimit, missing)
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("the poison topic holds messages nobody poisoned on purpose: %v", unexpected)
	}
}
