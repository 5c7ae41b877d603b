package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/jobmill/jobmill/adapters/metrics"
)

// lagNetTimeout bounds each request of a lag query: a scrape waits for no broker longer than this.
const lagNetTimeout = 5 * time.Second

// LagMonitor measures consumer-group lag on the cluster, over one client kept between calls (a scrape
// every few seconds should not cost a connection and a metadata fetch each time). It connects on first
// use and again after a failed call. Safe for concurrent use; calls run one at a time.
type LagMonitor struct {
	cfg Config

	mu     sync.Mutex
	client sarama.Client
	admin  sarama.ClusterAdmin
	closed bool
}

// NewLagMonitor returns a monitor of the cluster cfg names; it does not connect yet.
func NewLagMonitor(cfg Config) (*LagMonitor, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &LagMonitor{cfg: cfg}, nil
}

// Lag reports, for each consumer group of groups, how many messages of topic it has not committed yet:
// the sum over the topic's partitions of the newest offset minus the group's committed offset. A
// partition where the group committed nothing counts from the oldest offset the broker still holds,
// which is where a new group starts. Commits happen in the background (every second), so a group that
// keeps up shows a small lag that comes and goes.
func (m *LagMonitor) Lag(ctx context.Context, topic string, groups ...string) ([]metrics.Lag, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("kafka: lag monitor closed")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.connect(); err != nil {
		return nil, err
	}
	out, err := m.lag(ctx, topic, groups)
	if err != nil {
		// The next call starts from fresh connections and metadata.
		_ = m.disconnect()
		return nil, fmt.Errorf("kafka: lag of %s: %w", topic, err)
	}
	return out, nil
}

func (m *LagMonitor) lag(ctx context.Context, topic string, groups []string) ([]metrics.Lag, error) {
	if err := m.client.RefreshMetadata(topic); err != nil {
		return nil, err
	}
	partitions, err := m.client.Partitions(topic)
	if err != nil {
		return nil, err
	}
	newest := make(map[int32]int64, len(partitions))
	for _, p := range partitions {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if newest[p], err = m.client.GetOffset(topic, p, sarama.OffsetNewest); err != nil {
			return nil, fmt.Errorf("newest offset of partition %d: %w", p, err)
		}
	}
	oldest := map[int32]int64{} // read only for partitions some group never committed
	out := make([]metrics.Lag, 0, len(groups))
	for _, group := range groups {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		resp, err := m.admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: partitions})
		if err != nil {
			return nil, fmt.Errorf("offsets of group %s: %w", group, err)
		}
		// A group that never committed is unknown to some brokers and has offsets of -1 on others.
		unknown := errors.Is(resp.Err, sarama.ErrGroupIDNotFound)
		if !unknown && !errors.Is(resp.Err, sarama.ErrNoError) {
			return nil, fmt.Errorf("offsets of group %s: %w", group, resp.Err)
		}
		var total int64
		for _, p := range partitions {
			committed := int64(-1)
			if b := resp.GetBlock(topic, p); b != nil && !unknown && !errors.Is(b.Err, sarama.ErrGroupIDNotFound) {
				if !errors.Is(b.Err, sarama.ErrNoError) {
					return nil, fmt.Errorf("offset of group %s on partition %d: %w", group, p, b.Err)
				}
				committed = b.Offset
			}
			if committed < 0 {
				if _, ok := oldest[p]; !ok {
					if oldest[p], err = m.client.GetOffset(topic, p, sarama.OffsetOldest); err != nil {
						return nil, fmt.Errorf("oldest offset of partition %d: %w", p, err)
					}
				}
				committed = oldest[p]
			}
			total += max(newest[p]-committed, 0)
		}
		out = append(out, metrics.Lag{Consumer: group, Topic: topic, Messages: total})
	}
	return out, nil
}

func (m *LagMonitor) connect() error {
	if m.client != nil {
		return nil
	}
	sc, err := m.cfg.adminSarama()
	if err != nil {
		return err
	}
	sc.Net.DialTimeout, sc.Net.ReadTimeout, sc.Net.WriteTimeout = lagNetTimeout, lagNetTimeout, lagNetTimeout
	sc.Metadata.Retry.Max = 1
	client, err := sarama.NewClient(m.cfg.Brokers, sc)
	if err != nil {
		return fmt.Errorf("kafka: lag client for %s: %w", strings.Join(m.cfg.Brokers, ","), err)
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		_ = client.Close()
		return fmt.Errorf("kafka: lag admin for %s: %w", strings.Join(m.cfg.Brokers, ","), err)
	}
	m.client, m.admin = client, admin
	return nil
}

func (m *LagMonitor) disconnect() error {
	if m.admin == nil {
		return nil
	}
	err := m.admin.Close() // closes the client too
	m.client, m.admin = nil, nil
	if err != nil && !errors.Is(err, sarama.ErrClosedClient) {
		return fmt.Errorf("kafka: close lag client: %w", err)
	}
	return nil
}

// Close releases the monitor's connections; later calls fail.
func (m *LagMonitor) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return m.disconnect()
}
