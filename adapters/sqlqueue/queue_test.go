package sqlqueue

import (
	"context"
	"database/sql"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/jobmill/jobmill/internal/servertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const topic = "jobmill.work.RunSubJobs"

// server is one database under test; second opens another pool on it, standing in for another process.
type server struct {
	dialect Dialect
	db      *sql.DB
	second  func(t *testing.T) *sql.DB
}

func forEachServer(t *testing.T, fn func(t *testing.T, s server)) {
	t.Run("postgres", func(t *testing.T) {
		db := openPostgres(t)
		fn(t, server{DialectPostgres, db, func(t *testing.T) *sql.DB { return reopen(t, db) }})
	})
	t.Run("mysql", func(t *testing.T) {
		db := openMySQL(t)
		fn(t, server{DialectMySQL, db, func(t *testing.T) *sql.DB { return reopen(t, db) }})
	})
}

// reopen opens a second pool on a test pool's schema or database.
func reopen(t *testing.T, db *sql.DB) *sql.DB { return servertest.Reopen(t, db) }

func newMsgs(n int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(`{"i":`+strconv.Itoa(i)+`}`))
		msgs[i].Metadata.Set("i", strconv.Itoa(i))
	}
	return msgs
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSub(t testing.TB, db *sql.DB, d Dialect, cfg SubscriberConfig) *Subscriber {
	t.Helper()
	sub, err := NewSubscriber(db, d, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

func publish(t testing.TB, db *sql.DB, d Dialect, msgs ...*message.Message) {
	t.Helper()
	pub, err := NewPublisher(db, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
}

func rows(t testing.TB, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM ` + Table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func receive(t testing.TB, ch <-chan *message.Message, timeout time.Duration) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %v", timeout)
		return nil
	}
}

func expectNothing(t testing.TB, ch <-chan *message.Message, d time.Duration) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s (metadata %v)", m.UUID, m.Metadata)
		}
	case <-time.After(d):
	}
}

// Three subscribers, one of them on a pool of its own (another process), compete for 2,000 messages
// published concurrently: every message is handled, never by two handlers at once, and acked once.
func TestCompetingConsumers(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		if err := Initialize(ctx, s.db, s.dialect); err != nil {
			t.Fatal(err)
		}
		const n = 2000
		msgs := newMsgs(n)
		var (
			mu      sync.Mutex
			acks    = map[string]int{}
			holders = map[string]int{}
			overlap atomic.Bool
			done    = make(chan struct{})
		)
		subs := []*Subscriber{
			newSub(t, s.db, s.dialect, SubscriberConfig{Concurrency: 8}),
			newSub(t, s.db, s.dialect, SubscriberConfig{Concurrency: 8}),
			newSub(t, s.second(t), s.dialect, SubscriberConfig{Concurrency: 8}),
		}
		var handlers sync.WaitGroup
		for _, sub := range subs {
			ch, err := sub.Subscribe(ctx, topic)
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
						mu.Unlock()
						// Ack before counting: the test closes the subscribers once the count is complete.
						m.Ack()
						mu.Lock()
						acks[m.UUID]++
						if len(acks) == n {
							select {
							case <-done:
							default:
								close(done)
							}
						}
						mu.Unlock()
					}()
				}
			}()
		}

		pub, err := NewPublisher(s.db, s.dialect)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var pubs sync.WaitGroup
		for p := range 4 {
			pubs.Add(1)
			go func() {
				defer pubs.Done()
				part := msgs[p*n/4 : (p+1)*n/4]
				for i := 0; i < len(part); i += 50 {
					if err := pub.Publish(topic, part[i:min(i+50, len(part))]...); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		pubs.Wait()

		select {
		case <-done:
		case <-time.After(45 * time.Second):
			mu.Lock()
			t.Fatalf("only %d of %d messages acked", len(acks), n)
		}
		t.Logf("%s: %d messages through 3 competing subscribers in %v", s.dialect, n, time.Since(start))
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
		if left := rows(t, s.db); left != 0 {
			t.Fatalf("%d rows left after all acks were flushed", left)
		}
	})
}

func TestUnackedMessageGoesToAnotherSubscriberOnClose(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		a, err := NewSubscriber(s.db, s.dialect, SubscriberConfig{Lease: 30 * time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		chA, err := a.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, s.db, s.dialect, newMsgs(1)...)
		m := receive(t, chA, 5*time.Second)
		if m.Metadata.Get(DeliveriesMetadataKey) != "1" {
			t.Fatalf("deliveries = %q", m.Metadata.Get(DeliveriesMetadataKey))
		}
		// The lease is 30s: only the release on Close can make this fast.
		chB, err := newSub(t, s.second(t), s.dialect, SubscriberConfig{Lease: 30 * time.Second}).Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		expectNothing(t, chB, 200*time.Millisecond)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-m.Context().Done():
		default:
			t.Fatal("message context not canceled by Close")
		}
		m.Ack() // too late: ignored

		again := receive(t, chB, 2*time.Second)
		if again.UUID != m.UUID || again.Metadata.Get(DeliveriesMetadataKey) != "2" {
			t.Fatalf("got %s deliveries %s", again.UUID, again.Metadata.Get(DeliveriesMetadataKey))
		}
		if again.Metadata.Get("i") != "0" || string(again.Payload) != `{"i":0}` {
			t.Fatalf("message changed: %v %s", again.Metadata, again.Payload)
		}
		again.Ack()
	})
}

func TestNackRedeliversAfterDelay(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		const delay = 200 * time.Millisecond
		ch, err := newSub(t, s.db, s.dialect, SubscriberConfig{NackDelay: delay}).Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, s.db, s.dialect, newMsgs(1)...)
		m := receive(t, ch, 2*time.Second)
		nackedAt := time.Now()
		m.Nack()
		again := receive(t, ch, 2*time.Second)
		elapsed := time.Since(nackedAt)
		if again.UUID != m.UUID || again.Metadata.Get(DeliveriesMetadataKey) != "2" {
			t.Fatalf("got %s deliveries %s", again.UUID, again.Metadata.Get(DeliveriesMetadataKey))
		}
		if elapsed < delay-5*time.Millisecond || elapsed > delay+200*time.Millisecond {
			t.Fatalf("redelivered after %v, NackDelay %v", elapsed, delay)
		}
		again.Ack()
	})
}

// A claimer that stops heartbeating (a crashed process) loses its lease; until then nobody else gets
// the message.
func TestLeaseExpiryRedelivers(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		publish(t, s.db, s.dialect, newMsgs(1)...)
		// Claimed by a process that then died.
		const lease = 400 * time.Millisecond
		if _, err := s.db.Exec(`UPDATE ` + Table + ` SET available_at = ` + strconv.FormatInt(time.Now().Add(lease).UnixMilli(), 10) +
			`, deliveries = deliveries + 1`); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ch, err := newSub(t, s.db, s.dialect, SubscriberConfig{PollInterval: 10 * time.Millisecond}).Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		m := receive(t, ch, 3*time.Second)
		if time.Since(start) < lease-20*time.Millisecond {
			t.Fatalf("redelivered after %v, before the lease expired", time.Since(start))
		}
		if m.Metadata.Get(DeliveriesMetadataKey) != "2" {
			t.Fatalf("deliveries = %s", m.Metadata.Get(DeliveriesMetadataKey))
		}
		m.Ack()
	})
}

// A slow handler keeps its lease through heartbeats; nobody else gets the message meanwhile.
func TestHeartbeatKeepsLease(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		cfg := SubscriberConfig{Lease: 300 * time.Millisecond, PollInterval: 10 * time.Millisecond}
		chA, err := newSub(t, s.db, s.dialect, cfg).Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, s.db, s.dialect, newMsgs(1)...)
		m := receive(t, chA, 2*time.Second)
		chB, err := newSub(t, s.second(t), s.dialect, cfg).Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		expectNothing(t, chB, 1200*time.Millisecond) // 4 leases
		m.Ack()
		expectNothing(t, chB, 100*time.Millisecond)
		deadline := time.Now().Add(2 * time.Second)
		for rows(t, s.db) != 0 {
			if time.Now().After(deadline) {
				t.Fatal("acked row not deleted")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// A transactional publisher delivers on commit only.
func TestTxPublish(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		if err := Initialize(ctx, s.db, s.dialect); err != nil {
			t.Fatal(err)
		}
		ch, err := newSub(t, s.db, s.dialect, SubscriberConfig{}).Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		inTx := func(msgs []*message.Message, commit bool) {
			tx, err := s.db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := NewTxPublisher(tx, s.dialect)
			if err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(topic, msgs...); err != nil {
				t.Fatal(err)
			}
			if commit {
				err = tx.Commit()
			} else {
				err = tx.Rollback()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		inTx(newMsgs(3), false)
		expectNothing(t, ch, 200*time.Millisecond)
		if n := rows(t, s.db); n != 0 {
			t.Fatalf("%d rows after rollback", n)
		}
		msgs := newMsgs(2)
		inTx(msgs, true)
		got := map[string]bool{}
		for range 2 {
			m := receive(t, ch, 2*time.Second)
			got[m.UUID] = true
			m.Ack()
		}
		if !got[msgs[0].UUID] || !got[msgs[1].UUID] {
			t.Fatalf("got %v", got)
		}
	})
}

func TestTopicsAreSeparate(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		sub := newSub(t, s.db, s.dialect, SubscriberConfig{})
		chA, err := sub.Subscribe(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		chB, err := sub.Subscribe(ctx, "b")
		if err != nil {
			t.Fatal(err)
		}
		pub, err := NewPublisher(s.db, s.dialect)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish("a", newMsgs(1)...); err != nil {
			t.Fatal(err)
		}
		receive(t, chA, 2*time.Second).Ack()
		expectNothing(t, chB, 100*time.Millisecond)
	})
}

// Ending the Subscribe context ends that subscription only, and releases what it held.
func TestSubscribeContextCancel(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		sub := newSub(t, s.db, s.dialect, SubscriberConfig{Lease: 30 * time.Second})
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := sub.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, s.db, s.dialect, newMsgs(1)...)
		m := receive(t, ch, 2*time.Second)
		cancel()
		for range ch {
		}
		ch2, err := sub.Subscribe(testCtx(t), topic)
		if err != nil {
			t.Fatal(err)
		}
		again := receive(t, ch2, 2*time.Second)
		if again.UUID != m.UUID {
			t.Fatalf("got %s", again.UUID)
		}
		again.Ack()
	})
}

func TestUnknownDialect(t *testing.T) {
	if _, err := NewPublisher(&sql.DB{}, "oracle"); err == nil {
		t.Fatal("unknown dialect accepted")
	}
	if _, err := NewSubscriber(&sql.DB{}, "oracle", SubscriberConfig{}, nil); err == nil {
		t.Fatal("unknown dialect accepted")
	}
}
