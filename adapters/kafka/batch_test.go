package kafka_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/kafka"
)

// recordingBatch is a Batch that remembers the messages handled in it and how it ended.
type recordingBatch struct {
	rec  *batchRecorder
	id   int
	fail bool
}

type batchKey struct{}

func (b *recordingBatch) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, batchKey{}, b)
}

func (b *recordingBatch) Commit() error {
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	if b.fail {
		b.rec.failed++
		return errors.New("commit refused")
	}
	b.rec.committed = append(b.rec.committed, b.id)
	return nil
}

func (b *recordingBatch) Rollback() error {
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	b.rec.rolledBack++
	return nil
}

type batchRecorder struct {
	mu         sync.Mutex
	begun      int
	committed  []int
	failed     int
	rolledBack int
	// failFirst makes the first batch's commit fail.
	failFirst bool
}

func (r *batchRecorder) begin() kafka.Batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.begun++
	return &recordingBatch{rec: r, id: r.begun, fail: r.failFirst && r.begun == 1}
}

func (r *batchRecorder) isCommitted(id int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.committed {
		if c == id {
			return true
		}
	}
	return false
}

func batchSubscribe(t *testing.T, cfg kafka.Config, group, topic string, rec *batchRecorder, maxMessages int) <-chan *message.Message {
	t.Helper()
	sub, err := kafka.NewBatchSubscriber(cfg, group, kafka.BatchConfig{Begin: rec.begin, MaxMessages: maxMessages, MaxAge: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return subscribeWith(t, sub, topic)
}

// publishSeq publishes n messages of one key, with seq 0..n-1.
func publishSeq(t *testing.T, cfg kafka.Config, topic string, n int) {
	t.Helper()
	pub := newPublisher(t, cfg)
	for i := range n {
		if err := pub.Publish(topic, keyed("job", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// A partition's ready messages are handled in shared batches of at most MaxMessages, each batch commits
// once, and the group's offsets reach the end only through committed batches.
func TestBatchSubscriberHandlesAPartitionInBatches(t *testing.T) {
	cfg := testConfig(1)
	topic := newTopic(t, cfg)
	const n = 50
	publishSeq(t, cfg, topic, n)
	rec := &batchRecorder{}
	ch := batchSubscribe(t, cfg, "batched", topic, rec, 10)
	sizes := map[*recordingBatch]int{}
	for i := range n {
		m := receive(t, ch)
		if m.Metadata.Get("seq") != strconv.Itoa(i) {
			t.Fatalf("message %d has seq %s: order lost", i, m.Metadata.Get("seq"))
		}
		b, ok := m.Context().Value(batchKey{}).(*recordingBatch)
		if !ok {
			t.Fatalf("message %d carries no batch", i)
		}
		if rec.isCommitted(b.id) {
			t.Fatalf("message %d joined batch %d after it committed", i, b.id)
		}
		sizes[b]++
		m.Ack()
	}
	for b, size := range sizes {
		if size > 10 {
			t.Fatalf("batch %d held %d messages, more than MaxMessages", b.id, size)
		}
	}
	if len(sizes) < n/10 {
		t.Fatalf("%d batches for %d messages of at most 10", len(sizes), n)
	}
	waitFor(t, "every batch committed", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.committed) == len(sizes)
	})
	waitLagZero(t, cfg, topic, "batched")
}

// A batch that fails to commit marks no offset: its messages come again, in a new batch.
func TestBatchSubscriberRedeliversABatchThatFailedToCommit(t *testing.T) {
	cfg := testConfig(1)
	topic := newTopic(t, cfg)
	publishSeq(t, cfg, topic, 5)
	rec := &batchRecorder{failFirst: true}
	ch := batchSubscribe(t, cfg, "refused", topic, rec, 100)
	seen := map[string]int{}
	for {
		m := receive(t, ch)
		b := m.Context().Value(batchKey{}).(*recordingBatch)
		seen[m.Metadata.Get("seq")]++
		m.Ack()
		if b.id > 1 && m.Metadata.Get("seq") == "4" {
			break
		}
	}
	if seen["0"] < 2 {
		t.Fatalf("the first message was not delivered again after its batch failed to commit: %v", seen)
	}
	waitFor(t, "a later batch committed", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.failed == 1 && len(rec.committed) > 0
	})
	waitLagZero(t, cfg, topic, "refused")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitLagZero(t *testing.T, cfg kafka.Config, topic, group string) {
	t.Helper()
	mon, err := kafka.NewLagMonitor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	waitFor(t, "the group's offsets reached the end", func() bool {
		lags, err := mon.Lag(testCtx(t), topic, group)
		return err == nil && len(lags) == 1 && lags[0].Messages == 0
	})
}

// A nack rolls the open batch back (its transaction may be broken): the messages acked in it come again,
// and the partition goes on once the nacked message is acked.
func TestBatchSubscriberRollsBackABatchOnNack(t *testing.T) {
	cfg := testConfig(1)
	topic := newTopic(t, cfg)
	publishSeq(t, cfg, topic, 5)
	rec := &batchRecorder{}
	ch := batchSubscribe(t, cfg, "nacked", topic, rec, 100)
	seen := map[string]int{}
	var nackedBatch *recordingBatch
	ackedIn := map[*recordingBatch][]string{} // first deliveries acked in each batch
	for seen["4"] == 0 {
		m := receive(t, ch)
		seq := m.Metadata.Get("seq")
		seen[seq]++
		// Nil after the nack: until the claim restarts, messages are handled outside a batch.
		b, _ := m.Context().Value(batchKey{}).(*recordingBatch)
		if seq == "2" && nackedBatch == nil {
			if b == nil {
				t.Fatal("the first delivery came outside a batch")
			}
			nackedBatch = b
			m.Nack()
			continue
		}
		if seen[seq] == 1 && b != nil {
			ackedIn[b] = append(ackedIn[b], seq)
		}
		m.Ack()
	}
	waitFor(t, "a batch committed", rec.hasCommitted)
	// Which messages shared the nacked one's batch depends on what the partition had ready; each of
	// them must come again.
	for _, seq := range ackedIn[nackedBatch] {
		if seen[seq] < 2 {
			t.Fatalf("message %s, acked in the rolled-back batch, was not delivered again: %v", seq, seen)
		}
	}
	if seen["2"] < 2 {
		t.Fatalf("the nacked message was not delivered again: %v", seen)
	}
	rec.mu.Lock()
	rolledBack := rec.rolledBack
	rec.mu.Unlock()
	if rolledBack == 0 {
		t.Fatal("the batch with the nacked message was not rolled back")
	}
	waitLagZero(t, cfg, topic, "nacked")
}

func (r *batchRecorder) hasCommitted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.committed) > 0
}
