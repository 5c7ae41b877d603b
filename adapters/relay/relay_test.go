package relay_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/relay"
	"github.com/jobmill/jobmill/adapters/sqlite"
)

// capture is a broker stand-in that records what it receives and can fail on demand.
type capture struct {
	mu       sync.Mutex
	byTopic  map[string][]*message.Message
	failNext int
	calls    int
}

func (c *capture) Publish(topic string, msgs ...*message.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.failNext > 0 {
		c.failNext--
		return errors.New("broker unavailable")
	}
	c.byTopic[topic] = append(c.byTopic[topic], msgs...)
	return nil
}

func (c *capture) Close() error { return nil }

func (c *capture) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.byTopic {
		n += len(m)
	}
	return n
}

func TestRelayForwardsOutboxInBatchesKeepingOrderAndIdentity(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const outbox = "test.outbox"
	if err := sqlite.InitializeLogTopics(ctx, db, outbox); err != nil {
		t.Fatal(err)
	}
	// 1,200 messages for two destinations, written by 12 store transactions; one transaction rolls back.
	var want []string
	for tx := 0; tx < 13; tx++ {
		rollback := tx == 5
		err := db.InTx(ctx, func(htx *sqlite.HookTx) error {
			pub, err := sqlite.NewTxLogPublisher(htx, nil)
			if err != nil {
				return err
			}
			out := relay.OutboxPublisher{Next: pub, OutboxTopic: outbox}
			for i := 0; i < 100; i++ {
				m := message.NewMessage(fmt.Sprintf("tx%d-%d", tx, i), []byte("x"))
				m.Metadata.Set("partition_key", "job-1")
				topic := "dest.a"
				if i%3 == 0 {
					topic = "dest.b"
				}
				if err := out.Publish(topic, m); err != nil {
					return err
				}
				if !rollback {
					want = append(want, m.UUID)
				}
			}
			if rollback {
				return errors.New("roll back")
			}
			return nil
		})
		if err != nil && !rollback {
			t.Fatal(err)
		}
	}
	broker := &capture{byTopic: map[string][]*message.Message{}, failNext: 2}
	done := make(chan error, 1)
	go func() {
		done <- relay.Run(ctx, relay.Config{
			DB: db.Beginner(), Schema: sqlite.LogSchema{SubscribeBatchSize: 500}, Offsets: sqlite.LogOffsets{},
			Topic: outbox, ConsumerGroup: "relay", Out: broker, PollInterval: time.Millisecond,
		})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for broker.count() < len(want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // anything forwarded twice would show up now
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := broker.count(); got != len(want) {
		t.Fatalf("forwarded %d messages, want %d (each exactly once)", got, len(want))
	}
	seen := map[string]bool{}
	for topic, msgs := range broker.byTopic {
		last := -1
		for _, m := range msgs {
			if m.Metadata.Get(relay.DestinationMetadata) != "" {
				t.Errorf("destination metadata leaked to the broker on %s", topic)
			}
			if m.Metadata.Get("partition_key") != "job-1" {
				t.Errorf("message %s lost its metadata", m.UUID)
			}
			if seen[m.UUID] {
				t.Errorf("message %s forwarded twice", m.UUID)
			}
			seen[m.UUID] = true
			pos := indexOf(want, m.UUID)
			if pos < last {
				t.Errorf("%s: message %s out of outbox order", topic, m.UUID)
			}
			last = pos
		}
	}
	for _, id := range want {
		if !seen[id] {
			t.Errorf("message %s never forwarded", id)
		}
	}
	// 1,200 messages in batches of at most 500, two topics per batch, plus the two failed attempts.
	if broker.calls > 2+2*4 {
		t.Errorf("%d publish calls for %d messages: not batched", broker.calls, len(want))
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
