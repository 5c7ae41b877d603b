package amqp

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Declare creates, if missing, every work queue of queueTopics, and for every log topic its exchange
// and one queue per consumer group bound to it. Call it at startup before anything publishes: the
// broker drops messages that no queue receives. The declarations are those the publishers and
// subscribers of this package make themselves, so they never conflict.
func Declare(ctx context.Context, url string, queueTopics, logTopics, groups []string) (err error) {
	if len(logTopics) > 0 && len(groups) == 0 {
		return errors.New("amqp: log topics need at least one consumer group, or their messages are dropped")
	}
	conn, err := dial(ctx, url, 10*time.Second)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeConn(conn)) }()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp: open channel: %w", err)
	}
	defer func() {
		if cerr := ch.Close(); cerr != nil && !errors.Is(cerr, amqp091.ErrClosed) {
			err = errors.Join(err, cerr)
		}
	}()

	var builder wamqp.DefaultTopologyBuilder
	logger := watermill.NopLogger{}
	build := func(c wamqp.Config, topic string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		params := wamqp.BuildTopologyParams{
			Topic:        topic,
			QueueName:    c.Queue.GenerateName(topic),
			ExchangeName: c.Exchange.GenerateName(topic),
			RoutingKey:   c.QueueBind.GenerateRoutingKey(topic),
		}
		if err := builder.BuildTopology(ch, params, c, logger); err != nil {
			return fmt.Errorf("amqp: declare %s (queue %s): %w", topic, params.QueueName, err)
		}
		return nil
	}
	qc := queueConfig(url)
	for _, topic := range queueTopics {
		if err := build(qc, topic); err != nil {
			return err
		}
	}
	for _, group := range groups {
		lc := logConfig(url, group)
		for _, topic := range logTopics {
			if err := build(lc, topic); err != nil {
				return err
			}
		}
	}
	return nil
}

// DeleteQueues deletes queues by name (a work queue is named after its topic, a log group's queue
// "<topic>_<group>"), with the messages in them. A missing queue is not an error.
func DeleteQueues(ctx context.Context, url string, queues ...string) (err error) {
	conn, err := dial(ctx, url, 10*time.Second)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, closeConn(conn)) }()
	for _, q := range queues {
		// A failed delete closes the channel, so each queue gets its own.
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("amqp: open channel: %w", err)
		}
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			var aerr *amqp091.Error
			if errors.As(err, &aerr) && aerr.Code == amqp091.NotFound {
				continue
			}
			return fmt.Errorf("amqp: delete queue %s: %w", q, err)
		}
		_ = ch.Close()
	}
	return nil
}

// WaitReachable waits until the broker at url accepts a connection, retrying with back-off, so a
// process started beside its broker does not fail on the first refused connection (watermill-amqp
// does not retry its first dial). After timeout it returns one error naming the broker, without the
// password.
func WaitReachable(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		conn, err := dial(ctx, url, min(timeout, 5*time.Second))
		if err == nil {
			return closeConn(conn)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("amqp: broker at %s not reachable within %v: %w", redactURL(url), timeout, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// dial connects once. Errors never carry the password.
func dial(ctx context.Context, rawURL string, timeout time.Duration) (*amqp091.Connection, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(dl), time.Millisecond))
	}
	conn, err := amqp091.DialConfig(rawURL, amqp091.Config{
		Dial:       amqp091.DefaultDial(timeout),
		Properties: amqp091.Table{"connection_name": "jobmill"},
	})
	if err != nil {
		return nil, fmt.Errorf("amqp: connect to %s: %w", redactURL(rawURL), redactErr(err, rawURL))
	}
	return conn, nil
}

func closeConn(c *amqp091.Connection) error {
	if err := c.Close(); err != nil && !errors.Is(err, amqp091.ErrClosed) {
		return fmt.Errorf("amqp: close connection: %w", err)
	}
	return nil
}

// redactURL shows where a URL points without its password.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable AMQP URL)"
	}
	return u.Redacted()
}

// redactErr removes the URL's password from an error's text, in case a library quoted the URL.
func redactErr(err error, raw string) error {
	u, perr := url.Parse(raw)
	if perr != nil || u.User == nil {
		return err
	}
	pass, ok := u.User.Password()
	if !ok || pass == "" || !strings.Contains(err.Error(), pass) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), pass, "xxxxx"))
}
