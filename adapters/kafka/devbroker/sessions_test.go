package devbroker

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	testGroup          = "g"
	testSessionTimeout = time.Second
)

// groupClient speaks the classic consumer-group protocol by hand, so a test can stop a member at any
// request.
type groupClient struct {
	t      *testing.T
	cl     *kgo.Client
	member string
}

func newGroupClient(t *testing.T, b *Broker) *groupClient {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &groupClient{t: t, cl: cl}
}

func (c *groupClient) joinRequest() *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.Group = testGroup
	req.MemberID = c.member
	req.SessionTimeoutMillis = int32(testSessionTimeout / time.Millisecond)
	req.RebalanceTimeoutMillis = 5000
	req.ProtocolType = "consumer"
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Topics = []string{"t"}
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name, p.Metadata = "range", meta.AppendTo(nil)
	req.Protocols = append(req.Protocols, p)
	return req
}

// getMemberID sends the first JoinGroup, which only hands out a member id.
func (c *groupClient) getMemberID(ctx context.Context) {
	c.t.Helper()
	resp, err := c.joinRequest().RequestWith(ctx, c.cl)
	if err != nil {
		c.t.Fatal(err)
	}
	if kerr.ErrorForCode(resp.ErrorCode) != kerr.MemberIDRequired {
		c.t.Fatalf("first join: %v, want MEMBER_ID_REQUIRED", kerr.ErrorForCode(resp.ErrorCode))
	}
	c.member = resp.MemberID
}

// join joins and, as the leader, assigns every member an empty assignment.
func (c *groupClient) join(ctx context.Context) {
	c.t.Helper()
	resp, err := c.joinRequest().RequestWith(ctx, c.cl)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		c.t.Fatalf("join: %v", err)
	}
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID, sync.Generation = testGroup, c.member, resp.Generation
	for _, m := range resp.Members {
		a := kmsg.NewSyncGroupRequestGroupAssignment()
		a.MemberID = m.MemberID
		sync.GroupAssignment = append(sync.GroupAssignment, a)
	}
	sresp, err := sync.RequestWith(ctx, c.cl)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := kerr.ErrorForCode(sresp.ErrorCode); err != nil {
		c.t.Fatalf("sync: %v", err)
	}
}

// heartbeat sends one heartbeat and says whether the group wants the member to rejoin.
func (c *groupClient) heartbeat(ctx context.Context, generation int32) (rejoin bool) {
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group, req.MemberID, req.Generation = testGroup, c.member, generation
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return false
	}
	return resp.ErrorCode != 0
}

func members(b *Broker) (state string, ids []string) {
	info := b.cluster.GroupInfo(testGroup)
	if info == nil {
		return "", nil
	}
	for _, m := range info.Members {
		ids = append(ids, m.MemberID)
	}
	return info.State, ids
}

// A member whose process dies while the coordinator holds its JoinGroup response is removed once its
// session times out, and the live member then gets the group to itself.
func TestMemberThatDiesDuringAJoinIsRemoved(t *testing.T) {
	b, err := start("127.0.0.1:0", 2, 100*time.Millisecond, kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	live := newGroupClient(t, b)
	live.getMemberID(ctx)
	live.join(ctx)

	// A second member asks to join; the coordinator holds its answer until the live member rejoins.
	dying := newGroupClient(t, b)
	dying.getMemberID(ctx)
	joinDone := make(chan struct{})
	go func() {
		defer close(joinDone)
		_, _ = dying.joinRequest().RequestWith(ctx, dying.cl)
	}()
	for {
		if state, _ := members(b); state == "PreparingRebalance" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The process dies with its JoinGroup unanswered.
	dying.cl.Close()
	<-joinDone

	// The live member rejoins and, as leader, completes the rebalance with the dead member in it.
	gen := func() int32 { return b.cluster.GroupInfo(testGroup).Epoch }
	live.join(ctx)
	if state, ids := members(b); state != "Stable" || !slices.Contains(ids, dying.member) {
		t.Fatalf("after the rebalance: %s %v, want Stable with the dead member %s still in it", state, ids, dying.member)
	}

	// The live member heartbeats (and rejoins when asked); the dead one is gone within a few session
	// timeouts, the live one stays.
	deadline := time.Now().Add(20 * testSessionTimeout)
	for {
		if live.heartbeat(ctx, gen()) {
			live.join(ctx)
		}
		state, ids := members(b)
		if state == "Stable" && !slices.Contains(ids, dying.member) {
			if !slices.Equal(ids, []string{live.member}) {
				t.Fatalf("members %v, want only the live member %s", ids, live.member)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead member %s is still in the group %s after %s: %v", dying.member, state, 20*testSessionTimeout, ids)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A member that keeps heartbeating is never removed.
	for end := time.Now().Add(3 * testSessionTimeout); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if live.heartbeat(ctx, gen()) {
			t.Fatal("the live member was asked to rejoin: the keeper removed a member that heartbeats")
		}
	}
	if _, ids := members(b); !slices.Equal(ids, []string{live.member}) {
		t.Fatalf("members %v, want the live member %s", ids, live.member)
	}
}
