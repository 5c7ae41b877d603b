package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// claimBatch is a Batch that says which claim began it.
type claimBatch struct{ claim string }

type claimBatchKey struct{}

func (b *claimBatch) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, claimBatchKey{}, b)
}
func (b *claimBatch) Commit() error   { return nil }
func (b *claimBatch) Rollback() error { return nil }

// channelSubscriber hands out one channel the test feeds.
type channelSubscriber struct{ ch chan *message.Message }

func (s channelSubscriber) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return s.ch, nil
}
func (s channelSubscriber) Close() error { return nil }

// Around a rebalance two claims of one partition overlap in a process: a message forwarded by the claim
// that is ending must not join the batch of the claim that replaced it (that claim would commit or roll
// back its effect while the old claim marks its offset). A message joins its own claim's batch, or none
// once its claim has ended.
func TestMessageJoinsTheBatchOfTheClaimThatForwardedIt(t *testing.T) {
	var current string // the claim whose batch Begin makes: set before each delivery
	reg := &batchRegistry{
		cfg:    BatchConfig{Begin: func() Batch { return &claimBatch{claim: current} }, MaxMessages: 32, MaxAge: time.Second},
		logger: watermill.NopLogger{},
		claims: map[string]*partitionBatch{},
	}
	newClaim := func() *partitionBatch {
		p := &partitionBatch{reg: reg, lastOffset: -1, markedCh: make(chan struct{}, 1), aborted: make(chan struct{})}
		reg.add(p)
		return p
	}
	oldClaim, newerClaim := newClaim(), newClaim()

	in := make(chan *message.Message)
	sub := &batchSubscriber{Subscriber: channelSubscriber{ch: in}, reg: reg}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, err := sub.Subscribe(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(in) // the decorator stops when the subscription's channel closes
		for range out {
		}
	}()
	deliver := func(claim string) *claimBatch {
		t.Helper()
		msg := message.NewMessage(watermill.NewUUID(), nil)
		msg.Metadata.Set(claimHeader, claim)
		current = claim
		in <- msg
		got := <-out
		b, _ := got.Context().Value(claimBatchKey{}).(*claimBatch)
		return b
	}

	if b := deliver(oldClaim.id); b == nil || b.claim != oldClaim.id {
		t.Fatalf("a message of the old claim got batch %+v, want the old claim's", b)
	}
	if b := deliver(newerClaim.id); b == nil || b.claim != newerClaim.id {
		t.Fatalf("a message of the new claim got batch %+v, want the new claim's", b)
	}
	// The old claim ends while one of its messages is still on its way to the handler.
	reg.remove(oldClaim)
	if b := deliver(oldClaim.id); b != nil {
		t.Fatalf("a message of an ended claim joined the batch of claim %s; it must be handled on its own", b.claim)
	}
	if b := deliver(newerClaim.id); b == nil || b.claim != newerClaim.id {
		t.Fatalf("the new claim's next message got batch %+v, want the new claim's", b)
	}
	// A message without a claim (not from a batching claim) is handled on its own.
	if b := deliver(""); b != nil {
		t.Fatalf("a message without a claim joined batch %+v", b)
	}
}
