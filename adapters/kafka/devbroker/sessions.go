package devbroker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// sessionKeeper removes consumer-group members that have sent nothing for their session timeout, the
// way a Kafka broker does.
//
// Written here because kfake starts a member's session timer only once a response reaches the member.
// A member whose process dies while the coordinator holds its JoinGroup response (a rebalance waiting
// for the other members, which is exactly what follows a crash) never gets one: when the leader then
// completes the rebalance without it, the dead member keeps its share of the partitions for good, and
// their messages are never consumed. Kafka starts every member's session timer when a rebalance
// completes, whether or not the response arrived. The keeper watches the group requests that carry a
// member id and sends a LeaveGroup for a member of a stable group that has been silent for longer than
// the session timeout it asked for.
type sessionKeeper struct {
	cluster *kfake.Cluster
	client  *kgo.Client
	// every is how often stable groups are checked.
	every time.Duration

	mu     sync.Mutex
	groups map[string]*groupSessions

	stop func()
	done chan struct{}
}

type groupSessions struct {
	// timeout is the longest session timeout the group's members asked for.
	timeout time.Duration
	// lastSeen is when a request carrying the member's id last came.
	lastSeen map[string]time.Time
	// stableGeneration and stableSince: a member is silent in a stable group only from the moment the
	// group became stable (members send nothing while a rebalance holds their JoinGroup).
	stableGeneration int32
	stableSince      time.Time
}

func startSessionKeeper(cluster *kfake.Cluster, addrs []string, every time.Duration) (*sessionKeeper, error) {
	client, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &sessionKeeper{cluster: cluster, client: client, every: every, groups: map[string]*groupSessions{}, stop: cancel, done: make(chan struct{})}
	for _, key := range []int16{kmsg.JoinGroup.Int16(), kmsg.SyncGroup.Int16(), kmsg.Heartbeat.Int16(), kmsg.OffsetCommit.Int16()} {
		cluster.ControlKey(key, func(req kmsg.Request) (kmsg.Response, error, bool) {
			cluster.KeepControl()
			k.observe(req, time.Now())
			return nil, nil, false // observed only: kfake handles the request as usual
		})
	}
	go k.run(ctx)
	return k, nil
}

func (k *sessionKeeper) close() {
	k.stop()
	<-k.done
	k.client.Close()
}

// observe records a group request.
func (k *sessionKeeper) observe(req kmsg.Request, now time.Time) {
	var group, member string
	var timeout time.Duration
	switch r := req.(type) {
	case *kmsg.JoinGroupRequest:
		group, member, timeout = r.Group, r.MemberID, time.Duration(r.SessionTimeoutMillis)*time.Millisecond
	case *kmsg.SyncGroupRequest:
		group, member = r.Group, r.MemberID
	case *kmsg.HeartbeatRequest:
		group, member = r.Group, r.MemberID
	case *kmsg.OffsetCommitRequest:
		group, member = r.Group, r.MemberID
	default:
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	g := k.groups[group]
	if g == nil {
		if timeout == 0 {
			return // not a group that members join (offsets committed without membership)
		}
		g = &groupSessions{lastSeen: map[string]time.Time{}}
		k.groups[group] = g
	}
	g.timeout = max(g.timeout, timeout)
	if member != "" {
		g.lastSeen[member] = now
	}
}

func (k *sessionKeeper) run(ctx context.Context) {
	defer close(k.done)
	tick := time.NewTicker(k.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for group, members := range k.silentMembers(time.Now()) {
			k.expel(ctx, group, members)
		}
	}
}

// silentMembers returns, by group, the members of stable groups that have been silent for longer than
// their session timeout.
func (k *sessionKeeper) silentMembers(now time.Time) map[string][]string {
	k.mu.Lock()
	names := make([]string, 0, len(k.groups))
	for name := range k.groups {
		names = append(names, name)
	}
	k.mu.Unlock()

	silent := map[string][]string{}
	for _, name := range names {
		info := k.cluster.GroupInfo(name) // outside k.mu: it waits for the cluster's loop
		k.mu.Lock()
		g := k.groups[name]
		if info == nil || info.State != "Stable" {
			g.stableSince = time.Time{}
			k.mu.Unlock()
			continue
		}
		if g.stableSince.IsZero() || g.stableGeneration != info.Epoch {
			g.stableGeneration, g.stableSince = info.Epoch, now
		}
		present := map[string]bool{}
		for _, m := range info.Members {
			present[m.MemberID] = true
			since := g.lastSeen[m.MemberID]
			if since.Before(g.stableSince) {
				since = g.stableSince
			}
			if now.Sub(since) > g.timeout {
				silent[name] = append(silent[name], m.MemberID)
			}
		}
		for id := range g.lastSeen {
			if !present[id] {
				delete(g.lastSeen, id)
			}
		}
		k.mu.Unlock()
	}
	return silent
}

func (k *sessionKeeper) expel(ctx context.Context, group string, members []string) {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	for _, id := range members {
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = id
		req.Members = append(req.Members, m)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := req.RequestWith(ctx, k.client); err != nil {
		slog.Warn("devbroker: could not remove silent group members", "group", group, "members", members, "error", err)
		return
	}
	slog.Info("devbroker: removed group members whose session timed out", "group", group, "members", members)
}
