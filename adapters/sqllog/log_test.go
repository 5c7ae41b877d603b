package sqllog

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The real topic name: dots must work as table names on both servers.
const topic = "jobmill.events"

type server struct {
	dialect Dialect
	db      *sql.DB
}

func forEachServer(t *testing.T, fn func(t *testing.T, s server)) {
	t.Run("postgres", func(t *testing.T) { fn(t, server{DialectPostgres, openPostgres(t)}) })
	t.Run("mysql", func(t *testing.T) { fn(t, server{DialectMySQL, openMySQL(t)}) })
}

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

func newSub(t testing.TB, s server, group string) message.Subscriber {
	t.Helper()
	sub, err := NewSubscriber(s.db, s.dialect, group, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

func publish(t testing.TB, s server, msgs []*message.Message) {
	t.Helper()
	pub, err := NewPublisher(s.db, s.dialect)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}
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
			t.Fatalf("unexpected message %s", m.UUID)
		}
	case <-time.After(d):
	}
}

// Two consumer groups each receive every message, in publish order, exactly once; and the metadata and
// payload come back as published.
func TestTwoGroupsReceiveAllInOrder(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		if err := Initialize(ctx, s.db, s.dialect, topic); err != nil {
			t.Fatal(err)
		}
		const n = 1000
		msgs := newMsgs(n)
		var wg sync.WaitGroup
		results := make([][]*message.Message, 2)
		errs := make([]error, 2)
		for g := range 2 {
			ch, err := newSub(t, s, fmt.Sprintf("group-%d", g)).Subscribe(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for len(results[g]) < n {
					select {
					case m := <-ch:
						results[g] = append(results[g], m)
						m.Ack()
					case <-time.After(20 * time.Second):
						errs[g] = fmt.Errorf("group %d: timeout after %d messages", g, len(results[g]))
						return
					}
				}
				select {
				case m := <-ch:
					errs[g] = fmt.Errorf("group %d: extra message %s", g, m.UUID)
				case <-time.After(100 * time.Millisecond):
				}
			}()
		}
		// Published while the subscribers run: a single message, then batches.
		publish(t, s, msgs[:1])
		for i := 1; i < n; i += 333 {
			publish(t, s, msgs[i:min(i+333, n)])
		}
		wg.Wait()
		for g := range 2 {
			if errs[g] != nil {
				t.Fatal(errs[g])
			}
			for i, m := range results[g] {
				if m.UUID != msgs[i].UUID || string(m.Payload) != string(msgs[i].Payload) || m.Metadata.Get("i") != strconv.Itoa(i) {
					t.Fatalf("group %d: message %d is %s %s %v, want %s", g, i, m.UUID, m.Payload, m.Metadata, msgs[i].UUID)
				}
			}
		}
	})
}

func TestNackRedeliversInOrder(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		msgs := newMsgs(3)
		publish(t, s, msgs)
		ch, err := newSub(t, s, "g").Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		first := receive(t, ch, 5*time.Second)
		if first.UUID != msgs[0].UUID {
			t.Fatalf("first = %s", first.UUID)
		}
		first.Nack()
		var got []string
		for range 3 {
			m := receive(t, ch, 5*time.Second)
			got = append(got, m.UUID)
			m.Ack()
		}
		if want := []string{msgs[0].UUID, msgs[1].UUID, msgs[2].UUID}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after nack got %v, want %v", got, want)
		}
	})
}

// A subscriber closed mid-batch commits only what was acked: its successor of the same group resumes at
// the first unacked message, skipping nothing.
func TestResumesAfterCloseMidBatch(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		msgs := newMsgs(10)
		publish(t, s, msgs)
		sub, err := NewSubscriber(s.db, s.dialect, "g", nil)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := sub.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			m := receive(t, ch, 5*time.Second)
			if m.UUID != msgs[i].UUID {
				t.Fatalf("message %d is %s", i, m.UUID)
			}
			m.Ack()
		}
		unacked := receive(t, ch, 5*time.Second)
		closed := make(chan error, 1)
		go func() { closed <- sub.Close() }()
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		unacked.Ack() // too late: ignored

		ch2, err := newSub(t, s, "g").Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		for i := 4; i < 10; i++ {
			m := receive(t, ch2, 5*time.Second)
			if m.UUID != msgs[i].UUID {
				t.Fatalf("after restart message %d is %s, want %s", i, m.UUID, msgs[i].UUID)
			}
			m.Ack()
		}
	})
}

// The outbox: a transactional publisher's messages are delivered if the transaction commits, never if
// it rolls back. Non-JSON payloads are kept as bytes.
func TestTxPublisher(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		if err := Initialize(ctx, s.db, s.dialect, topic); err != nil {
			t.Fatal(err)
		}
		ch, err := newSub(t, s, "g").Subscribe(ctx, topic)
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
		inTx(newMsgs(2), false)
		kept := []*message.Message{message.NewMessage(watermill.NewUUID(), []byte("not json \x00\xff"))}
		inTx(kept, true)
		m := receive(t, ch, 5*time.Second)
		if m.UUID != kept[0].UUID || string(m.Payload) != string(kept[0].Payload) {
			t.Fatalf("got %s %q", m.UUID, m.Payload)
		}
		m.Ack()
		expectNothing(t, ch, 200*time.Millisecond)
	})
}

func TestMeasureRawThroughput(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		rate, err := MeasureRawThroughput(ctx, s.db, s.dialect, 5000)
		if err != nil {
			t.Fatal(err)
		}
		if rate <= 0 {
			t.Fatalf("rate %v", rate)
		}
		t.Logf("%s event log raw throughput: %.0f msgs/s", s.dialect, rate)
		// The scratch topic's tables are gone.
		var n int
		q := `SELECT COUNT(*) FROM information_schema.tables WHERE table_name LIKE 'watermill%raw_bench%' AND table_schema = current_schema()`
		if s.dialect == DialectMySQL {
			q = `SELECT COUNT(*) FROM information_schema.tables WHERE table_name LIKE 'watermill%raw_bench%' AND table_schema = DATABASE()`
		}
		if err := s.db.QueryRow(q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%d scratch tables left", n)
		}
	})
}

// A message whose transaction commits after a later one's is not skipped: the log holds back the later
// message until the earlier transaction ends, and delivers both in offset order.
func TestLateCommitIsNotSkipped(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		if err := Initialize(ctx, s.db, s.dialect, topic); err != nil {
			t.Fatal(err)
		}
		ch, err := newSub(t, s, "g").Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		early := newMsgs(1)
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		txPub, err := NewTxPublisher(tx, s.dialect)
		if err != nil {
			t.Fatal(err)
		}
		if err := txPub.Publish(topic, early...); err != nil {
			t.Fatal(err)
		}
		late := newMsgs(1)
		publish(t, s, late)
		expectNothing(t, ch, 300*time.Millisecond)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		for _, want := range []*message.Message{early[0], late[0]} {
			m := receive(t, ch, 5*time.Second)
			if m.UUID != want.UUID {
				t.Fatalf("got %s, want %s", m.UUID, want.UUID)
			}
			m.Ack()
		}
	})
}

// A handler may publish to the topic it consumes while its message is unacked (the manager emits events
// to the log it reads): the subscriber's transaction must not block that insert.
func TestPublishWhileHandlingDoesNotBlock(t *testing.T) {
	forEachServer(t, func(t *testing.T, s server) {
		ctx := testCtx(t)
		publish(t, s, newMsgs(1))
		ch, err := newSub(t, s, "g").Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		m := receive(t, ch, 5*time.Second)
		pub, err := NewPublisher(s.db, s.dialect)
		if err != nil {
			t.Fatal(err)
		}
		emitted := newMsgs(1)
		pubCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		emitted[0].SetContext(pubCtx)
		if err := pub.Publish(topic, emitted...); err != nil {
			t.Fatalf("publish while a message is being handled: %v", err)
		}
		m.Ack()
		if got := receive(t, ch, 5*time.Second); got.UUID != emitted[0].UUID {
			t.Fatalf("got %s", got.UUID)
		} else {
			got.Ack()
		}
	})
}
