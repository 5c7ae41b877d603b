package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/jobmill/jobmill/adapters/metrics"
)

// lagDialTimeout bounds the connection a lag query opens when it has none.
const lagDialTimeout = 5 * time.Second

// LagMonitor reads how many messages wait in the queues of the log's consumer groups and in the work
// queues, over one connection kept between calls (a scrape every few seconds should not open a
// connection each time). It connects on first use and again after the connection is lost. Safe for
// concurrent use; calls run one at a time.
//
// RabbitMQ reports the messages ready for delivery: those delivered and not yet acknowledged are not
// counted (the protocol does not expose them), so a queue whose consumers hold many messages reads lower
// than the work left.
type LagMonitor struct {
	url string

	mu     sync.Mutex
	conn   *amqp091.Connection
	closed bool
}

// NewLagMonitor returns a monitor of the broker at url; it does not connect yet.
func NewLagMonitor(url string) *LagMonitor { return &LagMonitor{url: url} }

// LogLag reports the messages waiting in each group's queue of the log topic ("<topic>_<group>"). A
// group whose queue does not exist is left out: nothing is kept for it.
func (m *LagMonitor) LogLag(ctx context.Context, topic string, groups ...string) ([]metrics.Lag, error) {
	names := make([]queueOf, len(groups))
	for i, g := range groups {
		names[i] = queueOf{lag: metrics.Lag{Consumer: g, Topic: topic}, queue: logConfig(m.url, g).Queue.GenerateName(topic)}
	}
	return m.count(ctx, names)
}

// QueueLag reports the messages waiting in each work queue, under metrics.WorkQueueConsumer. A queue that
// does not exist is left out.
func (m *LagMonitor) QueueLag(ctx context.Context, topics ...string) ([]metrics.Lag, error) {
	names := make([]queueOf, len(topics))
	for i, topic := range topics {
		names[i] = queueOf{
			lag:   metrics.Lag{Consumer: metrics.WorkQueueConsumer, Topic: topic},
			queue: queueConfig(m.url).Queue.GenerateName(topic),
		}
	}
	return m.count(ctx, names)
}

type queueOf struct {
	lag   metrics.Lag
	queue string
}

func (m *LagMonitor) count(ctx context.Context, queues []queueOf) ([]metrics.Lag, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("amqp: lag monitor closed")
	}
	if m.conn == nil || m.conn.IsClosed() {
		conn, err := dial(ctx, m.url, lagDialTimeout)
		if err != nil {
			return nil, err
		}
		m.conn = conn
	}
	out := make([]metrics.Lag, 0, len(queues))
	var ch *amqp091.Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	for _, q := range queues {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if ch == nil {
			var err error
			if ch, err = m.conn.Channel(); err != nil {
				return nil, fmt.Errorf("amqp: open channel: %w", err)
			}
		}
		// Passive: reads the queue without creating it, and fails if it does not exist.
		info, err := ch.QueueDeclarePassive(q.queue, false, false, false, false, nil)
		if err != nil {
			var aerr *amqp091.Error
			if errors.As(err, &aerr) && aerr.Code == amqp091.NotFound {
				ch = nil // the broker closed the channel with the error
				continue
			}
			return nil, fmt.Errorf("amqp: read queue %s: %w", q.queue, err)
		}
		l := q.lag
		l.Messages = int64(info.Messages)
		out = append(out, l)
	}
	return out, nil
}

// Close closes the monitor's connection; later calls fail.
func (m *LagMonitor) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.conn == nil {
		return nil
	}
	err := closeConn(m.conn)
	m.conn = nil
	return err
}
