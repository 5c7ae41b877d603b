// Package devbroker runs an in-memory Kafka-protocol broker (franz-go's kfake) inside the process, for
// development and tests where no Kafka cluster is at hand. It keeps nothing on disk: everything is lost
// when it stops. Never use it in production.
package devbroker

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Broker is a running in-memory single-node Kafka cluster.
type Broker struct {
	cluster  *kfake.Cluster
	sessions *sessionKeeper
	addrs    []string
	closing  sync.Once
}

// Start listens on addr ("127.0.0.1:9092", or port 0 for any free port) and serves the Kafka protocol.
// Topics created without a partition count, and topics auto-created on first use, get partitions
// partitions. Clients reach it at Addrs, which is the listening address as bound.
func Start(addr string, partitions int) (*Broker, error) {
	return start(addr, partitions, time.Second)
}

// start is Start with the interval at which silent group members are looked for, and kfake options for
// tests.
func start(addr string, partitions int, sessionCheck time.Duration, opts ...kfake.Opt) (*Broker, error) {
	if partitions < 1 {
		return nil, fmt.Errorf("devbroker: partitions must be positive (got %d)", partitions)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devbroker: listen on %s: %w", addr, err)
	}
	used := false
	cluster, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1),
		// kfake binds 127.0.0.1 itself; hand it our listener so any address works. It advertises the
		// listener's address in metadata, which is what clients then connect to.
		kfake.ListenFn(func(string, string) (net.Listener, error) {
			if used {
				return nil, errors.New("devbroker: one listener only")
			}
			used = true
			return ln, nil
		}),
		kfake.DefaultNumPartitions(partitions),
		kfake.AllowAutoTopicCreation(),
		kfake.ClusterID("jobmill-dev"),
	}, opts...)...)
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("devbroker: start: %w", err)
	}
	b := &Broker{cluster: cluster, addrs: cluster.ListenAddrs()}
	if b.sessions, err = startSessionKeeper(cluster, b.addrs, sessionCheck); err != nil {
		cluster.Close()
		return nil, fmt.Errorf("devbroker: start: %w", err)
	}
	return b, nil
}

// Addrs are the bootstrap addresses for clients.
func (b *Broker) Addrs() []string { return append([]string(nil), b.addrs...) }

// Close stops the broker and drops everything it held. It is safe to call more than once.
func (b *Broker) Close() {
	b.closing.Do(func() {
		b.sessions.close()
		b.cluster.Close()
	})
}
