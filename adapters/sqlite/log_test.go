package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
)

const logTopic = "jobmill.events.v1" // dots: table names must be quoted

func publishLog(t testing.TB, db *DB, topic string, msgs []*message.Message) {
	t.Helper()
	pub, err := NewLogPublisher(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(msgs); i += 100 {
		if err := pub.Publish(topic, msgs[i:min(i+100, len(msgs))]...); err != nil {
			t.Fatal(err)
		}
	}
}

func newLogSub(t testing.TB, db *DB, group string) message.Subscriber {
	t.Helper()
	sub, err := NewLogSubscriber(db, group, LogSubscriberConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

func TestLogTwoGroupsReceiveAllInOrder(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	const n = 1000
	msgs := newMsgs(n)

	var wg sync.WaitGroup
	results := make([][]string, 2)
	errs := make([]error, 2)
	for g := range 2 {
		sub := newLogSub(t, db, fmt.Sprintf("group-%d", g))
		ch, err := sub.Subscribe(ctx, logTopic)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for len(results[g]) < n {
				select {
				case m := <-ch:
					results[g] = append(results[g], m.UUID)
					m.Ack()
				case <-time.After(10 * time.Second):
					errs[g] = fmt.Errorf("group %d: timeout after %d messages", g, len(results[g]))
					return
				}
			}
			select {
			case m := <-ch:
				errs[g] = fmt.Errorf("group %d: extra message %s", g, m.UUID)
			case <-time.After(50 * time.Millisecond):
			}
		}()
	}

	// Published while the subscribers run, single messages and batches.
	publishLog(t, db, logTopic, msgs[:1])
	publishLog(t, db, logTopic, msgs[1:])
	wg.Wait()

	for g := range 2 {
		if errs[g] != nil {
			t.Fatal(errs[g])
		}
		for i, id := range results[g] {
			if id != msgs[i].UUID {
				t.Fatalf("group %d: message %d is %s, want %s", g, i, id, msgs[i].UUID)
			}
		}
	}
}

func TestLogMetadataAndPayloadRoundTrip(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	msgs := newMsgs(1)
	msgs[0].Metadata.Set("partition_key", "job-1")
	publishLog(t, db, logTopic, msgs)

	ch, err := newLogSub(t, db, "g").Subscribe(ctx, logTopic)
	if err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, 5*time.Second)
	if m.UUID != msgs[0].UUID || string(m.Payload) != string(msgs[0].Payload) ||
		m.Metadata.Get("partition_key") != "job-1" || m.Metadata.Get("i") != "0" {
		t.Fatalf("got %s %s %v", m.UUID, m.Payload, m.Metadata)
	}
	m.Ack()
}

func TestLogNackRedelivers(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	msgs := newMsgs(3)
	publishLog(t, db, logTopic, msgs)

	sub, err := NewLogSubscriber(db, "g", LogSubscriberConfig{ResendInterval: 10 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(ctx, logTopic)
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
	want := []string{msgs[0].UUID, msgs[1].UUID, msgs[2].UUID}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after nack got %v, want %v", got, want)
	}
}

func TestLogResumesFromCommittedOffset(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	msgs := newMsgs(100)
	publishLog(t, db, logTopic, msgs)

	var got []string
	sub1, err := NewLogSubscriber(db, "g", LogSubscriberConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub1.Subscribe(ctx, logTopic)
	if err != nil {
		t.Fatal(err)
	}
	for range 40 {
		m := receive(t, ch, 5*time.Second)
		got = append(got, m.UUID)
		m.Ack()
	}
	// The 41st is already waiting on the channel, unacked, mid-batch.
	if err := sub1.Close(); err != nil {
		t.Fatal(err)
	}

	ch2, err := newLogSub(t, reopen(t, db), "g").Subscribe(ctx, logTopic)
	if err != nil {
		t.Fatal(err)
	}
	for len(got) < 100 {
		m := receive(t, ch2, 5*time.Second)
		got = append(got, m.UUID)
		m.Ack()
	}
	for i := range msgs {
		if got[i] != msgs[i].UUID {
			t.Fatalf("message %d = %s, want %s (lost or duplicated)", i, got[i], msgs[i].UUID)
		}
	}
	expectNothing(t, ch2, 50*time.Millisecond)
}

// The subscriber's transaction is a *HookTx; writes through it commit
// together with the consumer offset.
func TestLogHandlerWritesCommitWithOffset(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	if _, err := db.Write.Exec("CREATE TABLE effects (uuid TEXT, note TEXT)"); err != nil {
		t.Fatal(err)
	}
	msgs := newMsgs(2)
	publishLog(t, db, logTopic, msgs)

	sub, err := NewLogSubscriber(db, "g", LogSubscriberConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(ctx, logTopic)
	if err != nil {
		t.Fatal(err)
	}

	// Acked message: direct write, a joined InTx that succeeds, one that fails,
	// and a publish from the handler (joins instead of deadlocking).
	m := receive(t, ch, 5*time.Second)
	wtx, ok := wsql.TxFromContext(m.Context())
	if !ok {
		t.Fatal("no tx in message context")
	}
	tx, ok := wtx.(*HookTx)
	if !ok {
		t.Fatalf("tx is %T", wtx)
	}
	committed := make(chan struct{})
	tx.AfterCommit(func() { close(committed) })
	if _, err := tx.ExecContext(m.Context(), "INSERT INTO effects VALUES (?, 'direct')", m.UUID); err != nil {
		t.Fatal(err)
	}
	if err := db.InTx(m.Context(), func(tx *HookTx) error {
		_, err := tx.ExecContext(m.Context(), "INSERT INTO effects VALUES (?, 'joined')", m.UUID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.InTx(m.Context(), func(tx *HookTx) error {
		if _, err := tx.ExecContext(m.Context(), "INSERT INTO effects VALUES (?, 'undone')", m.UUID); err != nil {
			return err
		}
		return errors.New("handler failed")
	}); err == nil {
		t.Fatal("expected error")
	}
	out := message.NewMessage("derived-1", nil)
	out.SetContext(m.Context())
	pub, _ := NewLogPublisher(db, nil)
	if err := pub.Publish("jobmill.derived", out); err != nil {
		t.Fatal(err)
	}
	m.Ack()

	// Second message: written, never acked, subscriber closed. The
	// transaction still commits (with the first message's offset), so the
	// unacked handler's write survives too: handlers must be idempotent.
	m2 := receive(t, ch, 5*time.Second)
	tx2, _ := TxFromContext(m2.Context())
	if tx2 != tx {
		t.Fatal("messages of one batch share the transaction")
	}
	if _, err := tx2.ExecContext(m2.Context(), "INSERT INTO effects VALUES (?, 'unacked')", m2.UUID); err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-committed:
	case <-time.After(5 * time.Second):
		t.Fatal("transaction not committed")
	}

	notes := map[string]bool{}
	rows, err := db.Read.Query("SELECT note FROM effects")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		notes[n] = true
	}
	rows.Close()
	if !notes["direct"] || !notes["joined"] || notes["undone"] || !notes["unacked"] || len(notes) != 3 {
		t.Fatalf("effects = %v", notes)
	}
	var derived int
	if err := db.Read.QueryRow(`SELECT count(*) FROM "watermill_jobmill.derived"`).Scan(&derived); err != nil || derived != 1 {
		t.Fatalf("derived = %d, err %v", derived, err)
	}

	// Offset committed after message 1: message 2 comes again.
	ch2, err := newLogSub(t, db, "g").Subscribe(ctx, logTopic)
	if err != nil {
		t.Fatal(err)
	}
	again := receive(t, ch2, 5*time.Second)
	if again.UUID != msgs[1].UUID {
		t.Fatalf("redelivered %s, want %s", again.UUID, msgs[1].UUID)
	}
	again.Ack()
}

// A publish in a transaction that rolls back reaches nobody; one that commits
// wakes the subscriber well before a long poll interval would.
func TestLogTxPublisherWakesOnCommitOnly(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	sub, err := NewLogSubscriber(db, "g", LogSubscriberConfig{PollInterval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(ctx, logTopic)
	if err != nil {
		t.Fatal(err)
	}

	_ = db.InTx(ctx, func(tx *HookTx) error {
		pub, _ := NewTxLogPublisher(tx, nil)
		if err := pub.Publish(logTopic, newMsgs(1)...); err != nil {
			t.Fatal(err)
		}
		return errors.New("rollback")
	})
	expectNothing(t, ch, 50*time.Millisecond)

	msgs := newMsgs(1)
	if err := db.InTx(ctx, func(tx *HookTx) error {
		pub, _ := NewTxLogPublisher(tx, nil)
		return pub.Publish(logTopic, msgs...)
	}); err != nil {
		t.Fatal(err)
	}
	m := receive(t, ch, time.Second)
	if m.UUID != msgs[0].UUID {
		t.Fatalf("got %s", m.UUID)
	}
	m.Ack()
}

func TestMeasureRawThroughput(t *testing.T) {
	db := openTestDB(t)
	rate, err := MeasureRawThroughput(context.Background(), db, 3000)
	if err != nil {
		t.Fatal(err)
	}
	if rate <= 0 {
		t.Fatalf("rate = %v", rate)
	}
	t.Logf("raw log throughput: %.0f msgs/s", rate)
	var n int
	if err := db.Read.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name LIKE 'watermill_%raw_bench%'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("scratch tables left: %d (err %v)", n, err)
	}
}
