package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

const queueTopic = "jobmill.work"

func newQueueSub(t testing.TB, db *DB, cfg QueueSubscriberConfig) message.Subscriber {
	t.Helper()
	sub, err := NewQueueSubscriber(db, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

func queueRows(t testing.TB, db *DB) int {
	t.Helper()
	var n int
	if err := db.Read.QueryRow(`SELECT count(*) FROM jobmill_queue`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Three subscribers, one of them on a second handle to the file (another
// process), compete for 2,000 messages published concurrently.
func TestQueueCompetingConsumers(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	if err := InitializeQueue(ctx, db); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	msgs := newMsgs(n)

	var (
		mu      sync.Mutex
		acks    = map[string]int{}
		holders = map[string]int{} // concurrent holders of one message
		overlap atomic.Bool
		done    = make(chan struct{})
	)
	subs := []message.Subscriber{
		newQueueSub(t, db, QueueSubscriberConfig{Concurrency: 8}),
		newQueueSub(t, db, QueueSubscriberConfig{Concurrency: 8}),
		newQueueSub(t, reopen(t, db), QueueSubscriberConfig{Concurrency: 8}),
	}
	var handlers sync.WaitGroup
	for _, sub := range subs {
		ch, err := sub.Subscribe(ctx, queueTopic)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for m := range ch {
				handlers.Add(1)
				go func() { // as the router does: one goroutine per message
					defer handlers.Done()
					mu.Lock()
					holders[m.UUID]++
					if holders[m.UUID] > 1 {
						overlap.Store(true)
					}
					mu.Unlock()
					time.Sleep(time.Duration(len(m.UUID)%3) * 100 * time.Microsecond)
					mu.Lock()
					holders[m.UUID]--
					acks[m.UUID]++
					if len(acks) == n {
						select {
						case <-done:
						default:
							close(done)
						}
					}
					mu.Unlock()
					m.Ack()
				}()
			}
		}()
	}

	pub := NewQueuePublisher(db)
	var pubs sync.WaitGroup
	for p := range 4 {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			part := msgs[p*n/4 : (p+1)*n/4]
			for i := 0; i < len(part); i += 50 {
				if err := pub.Publish(queueTopic, part[i:min(i+50, len(part))]...); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	pubs.Wait()

	select {
	case <-done:
	case <-time.After(20 * time.Second):
		mu.Lock()
		t.Fatalf("only %d of %d messages acked", len(acks), n)
	}
	for _, sub := range subs {
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
	}
	handlers.Wait()

	total := 0
	for _, c := range acks {
		total += c
	}
	if total != n {
		t.Fatalf("%d acks for %d messages: duplicates", total, n)
	}
	if overlap.Load() {
		t.Fatal("a message was held by two handlers at once")
	}
	if rows := queueRows(t, db); rows != 0 {
		t.Fatalf("%d rows left after all acks were flushed", rows)
	}
}

func TestQueueUnackedMessageGoesToAnotherSubscriberOnClose(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	a, err := NewQueueSubscriber(db, QueueSubscriberConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	chA, err := a.Subscribe(ctx, queueTopic)
	if err != nil {
		t.Fatal(err)
	}
	msgs := newMsgs(1)
	if err := NewQueuePublisher(db).Publish(queueTopic, msgs...); err != nil {
		t.Fatal(err)
	}
	m := receive(t, chA, 5*time.Second)
	if m.Metadata.Get(DeliveriesMetadataKey) != "1" {
		t.Fatalf("deliveries = %q", m.Metadata.Get(DeliveriesMetadataKey))
	}

	// Lease is 30s: only the release on Close can make this fast.
	chB, err := newQueueSub(t, db, QueueSubscriberConfig{}).Subscribe(ctx, queueTopic)
	if err != nil {
		t.Fatal(err)
	}
	expectNothing(t, chB, 100*time.Millisecond)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Context().Done():
	default:
		t.Fatal("message context not canceled by Close")
	}
	m.Ack() // too late: ignored

	again := receive(t, chB, time.Second)
	if again.UUID != m.UUID || again.Metadata.Get(DeliveriesMetadataKey) != "2" {
		t.Fatalf("got %s deliveries %s", again.UUID, again.Metadata.Get(DeliveriesMetadataKey))
	}
	again.Ack()
}

func TestQueueNackRedeliversAfterDelay(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	const delay = 200 * time.Millisecond
	ch, err := newQueueSub(t, db, QueueSubscriberConfig{NackDelay: delay, PollInterval: time.Hour}).Subscribe(ctx, queueTopic)
	if err != nil {
		t.Fatal(err)
	}
	msgs := newMsgs(1)
	if err := NewQueuePublisher(db).Publish(queueTopic, msgs...); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, time.Second)
	nackedAt := time.Now()
	m.Nack()
	again := receive(t, ch, 2*time.Second)
	elapsed := time.Since(nackedAt)
	if again.UUID != m.UUID || again.Metadata.Get(DeliveriesMetadataKey) != "2" {
		t.Fatalf("got %s deliveries %s", again.UUID, again.Metadata.Get(DeliveriesMetadataKey))
	}
	if elapsed < delay-5*time.Millisecond || elapsed > delay+150*time.Millisecond {
		t.Fatalf("redelivered after %v, NackDelay %v", elapsed, delay)
	}
	again.Ack()
}

// A claimer that stops heartbeating (a crashed process) loses its lease.
func TestQueueLeaseExpiryRedelivers(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	msgs := newMsgs(1)
	if err := NewQueuePublisher(db).Publish(queueTopic, msgs...); err != nil {
		t.Fatal(err)
	}
	// Claimed by a process that then died.
	const lease = 300 * time.Millisecond
	if _, err := db.Write.Exec(`UPDATE jobmill_queue SET available_at = ?, deliveries = deliveries + 1`,
		time.Now().Add(lease).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ch, err := newQueueSub(t, db, QueueSubscriberConfig{PollInterval: 10 * time.Millisecond}).Subscribe(ctx, queueTopic)
	if err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, 2*time.Second)
	if time.Since(start) < lease-20*time.Millisecond {
		t.Fatalf("redelivered after %v, before the lease expired", time.Since(start))
	}
	if m.Metadata.Get(DeliveriesMetadataKey) != "2" {
		t.Fatalf("deliveries = %s", m.Metadata.Get(DeliveriesMetadataKey))
	}
	m.Ack()
}

// A slow handler keeps its lease through heartbeats; nobody else gets the
// message meanwhile.
func TestQueueHeartbeatKeepsLease(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	cfg := QueueSubscriberConfig{Lease: 150 * time.Millisecond, PollInterval: 5 * time.Millisecond}
	chA, err := newQueueSub(t, db, cfg).Subscribe(ctx, queueTopic)
	if err != nil {
		t.Fatal(err)
	}
	if err := NewQueuePublisher(db).Publish(queueTopic, newMsgs(1)...); err != nil {
		t.Fatal(err)
	}
	m := receive(t, chA, time.Second)
	chB, err := newQueueSub(t, reopen(t, db), cfg).Subscribe(ctx, queueTopic)
	if err != nil {
		t.Fatal(err)
	}
	expectNothing(t, chB, 600*time.Millisecond) // 4 leases
	m.Ack()
	expectNothing(t, chB, 100*time.Millisecond)
	time.Sleep(20 * time.Millisecond) // let the ack flush
	if rows := queueRows(t, db); rows != 0 {
		t.Fatalf("%d rows left", rows)
	}
}

func TestQueueTxPublish(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	ch, err := newQueueSub(t, db, QueueSubscriberConfig{PollInterval: time.Hour}).Subscribe(ctx, queueTopic)
	if err != nil {
		t.Fatal(err)
	}

	err = db.InTx(ctx, func(tx *HookTx) error {
		if err := NewTxQueuePublisher(tx).Publish(queueTopic, newMsgs(3)...); err != nil {
			return err
		}
		return errors.New("rollback")
	})
	if err == nil {
		t.Fatal("expected error")
	}
	expectNothing(t, ch, 100*time.Millisecond)
	if rows := queueRows(t, db); rows != 0 {
		t.Fatalf("%d rows after rollback", rows)
	}

	msgs := newMsgs(2)
	if err := db.InTx(ctx, func(tx *HookTx) error {
		return NewTxQueuePublisher(tx).Publish(queueTopic, msgs...)
	}); err != nil {
		t.Fatal(err)
	}
	// Woken by the commit: the poll interval is an hour.
	got := map[string]bool{}
	for range 2 {
		m := receive(t, ch, time.Second)
		got[m.UUID] = true
		if m.Metadata.Get("i") == "" {
			t.Fatalf("metadata lost: %v", m.Metadata)
		}
		m.Ack()
	}
	if !got[msgs[0].UUID] || !got[msgs[1].UUID] {
		t.Fatalf("got %v", got)
	}
}

func TestQueueTopicsAreSeparate(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	sub := newQueueSub(t, db, QueueSubscriberConfig{})
	chA, err := sub.Subscribe(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	chB, err := sub.Subscribe(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	pub := NewQueuePublisher(db)
	if err := pub.Publish("a", newMsgs(1)...); err != nil {
		t.Fatal(err)
	}
	receive(t, chA, time.Second).Ack()
	expectNothing(t, chB, 50*time.Millisecond)
}

// Ending the Subscribe context ends that subscription only.
func TestQueueSubscribeContextCancel(t *testing.T) {
	db := openTestDB(t)
	sub := newQueueSub(t, db, QueueSubscriberConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, queueTopic)
	if err != nil {
		t.Fatal(err)
	}
	if err := NewQueuePublisher(db).Publish(queueTopic, newMsgs(1)...); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, time.Second)
	cancel()
	for range ch {
	}
	ch2, err := sub.Subscribe(testCtx(t), queueTopic)
	if err != nil {
		t.Fatal(err)
	}
	again := receive(t, ch2, time.Second)
	if again.UUID != m.UUID {
		t.Fatal(fmt.Sprint("got ", again.UUID))
	}
	again.Ack()
}
