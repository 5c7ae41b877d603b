package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

// CreateTopics creates the topics that do not exist yet, with cfg.Partitions partitions and
// cfg.ReplicationFactor replicas. Existing topics are left as they are, whatever their partition count.
func CreateTopics(ctx context.Context, cfg Config, topics ...string) (err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return err
	}
	admin, err := newAdmin(cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeAdmin(admin)) }()
	detail := &sarama.TopicDetail{NumPartitions: int32(cfg.Partitions), ReplicationFactor: cfg.ReplicationFactor}
	for _, topic := range topics {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := admin.CreateTopic(topic, detail, false); err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
			return fmt.Errorf("kafka: create topic %s: %w", topic, err)
		}
	}
	return nil
}

// DeleteTopics deletes topics; a topic that does not exist is not an error.
func DeleteTopics(ctx context.Context, cfg Config, topics ...string) (err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return err
	}
	admin, err := newAdmin(cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeAdmin(admin)) }()
	for _, topic := range topics {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := admin.DeleteTopic(topic); err != nil && !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			return fmt.Errorf("kafka: delete topic %s: %w", topic, err)
		}
	}
	return nil
}

func newAdmin(cfg Config) (sarama.ClusterAdmin, error) {
	sc, err := cfg.adminSarama()
	if err != nil {
		return nil, err
	}
	admin, err := sarama.NewClusterAdmin(cfg.Brokers, sc)
	if err != nil {
		return nil, fmt.Errorf("kafka: admin client for %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	return admin, nil
}

func closeAdmin(a sarama.ClusterAdmin) error {
	if err := a.Close(); err != nil {
		return fmt.Errorf("kafka: close admin client: %w", err)
	}
	return nil
}

// WaitReachable waits until a broker of cfg.Brokers answers a metadata request, retrying with
// back-off, so that a process started beside its broker (compose, systemd) does not fail on the first
// refused connection. After timeout it returns one error naming the addresses and the last cause.
func WaitReachable(ctx context.Context, cfg Config, timeout time.Duration) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	sc, err := cfg.adminSarama()
	if err != nil {
		return err
	}
	// One attempt per round: the loop below is the retry policy.
	sc.Metadata.Retry.Max = 0
	sc.Net.DialTimeout = min(timeout, 5*time.Second)

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	var last error
	for {
		if last = probe(ctx, cfg.Brokers, sc); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: no broker reachable at %s within %v: %w",
				strings.Join(cfg.Brokers, ","), timeout, last)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// probe dials the brokers first, because sarama reports an unreachable cluster only as "run out of
// available brokers" and the dial error says why; then it checks that one speaks Kafka.
func probe(ctx context.Context, brokers []string, sc *sarama.Config) error {
	var dialErr error
	reachable := false
	d := net.Dialer{Timeout: sc.Net.DialTimeout}
	for _, b := range brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err != nil {
			dialErr = err
			continue
		}
		_ = conn.Close()
		reachable = true
		break
	}
	if !reachable {
		return dialErr
	}
	client, err := sarama.NewClient(brokers, sc)
	if err != nil {
		return err
	}
	return client.Close()
}
