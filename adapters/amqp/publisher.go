package amqp

import (
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Publisher publishes persistent messages with publisher confirms, in watermill-amqp's wire format
// (its DefaultMarshaler and topology), so watermill-amqp subscribers read them. Unlike watermill-amqp's
// publisher, which awaits each message's confirm before sending the next, it sends all the messages
// of a Publish call and then awaits their confirms together: a dispatch window of thousands of
// commands costs one round trip, not thousands.
//
// It dials lazily and redials after the connection drops; a Publish while the broker is unreachable
// fails (nothing is buffered) and the caller retries.
type Publisher struct {
	url      string
	config   wamqp.Config
	logger   watermill.LoggerAdapter
	declared sync.Map // exchange names already declared

	// mu: Publish holds it shared, Close exclusively, so Close waits for running publishes.
	mu     sync.RWMutex
	closed bool

	connMu sync.Mutex
	conn   *amqp091.Connection

	slots chan struct{}         // bounds the channels in use
	idle  chan *amqp091.Channel // confirm-mode channels ready for reuse
}

func newPublisher(url string, config wamqp.Config, logger watermill.LoggerAdapter) (*Publisher, error) {
	p := &Publisher{
		url:    url,
		config: config,
		logger: orNop(logger),
		slots:  make(chan struct{}, publishChannels),
		idle:   make(chan *amqp091.Channel, publishChannels),
	}
	// Fail at construction, as watermill-amqp does, when the broker cannot be reached.
	if _, err := p.connection(); err != nil {
		return nil, err
	}
	return p, nil
}

// Publish sends msgs to topic and returns once the broker has confirmed every one. On error some
// may have been stored; the caller retries the whole call (consumers tolerate duplicates).
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return errors.New("amqp: publisher closed")
	}
	if len(msgs) == 0 {
		return nil
	}
	p.slots <- struct{}{}
	defer func() { <-p.slots }()
	ch, err := p.channel()
	if err != nil {
		return err
	}
	err = p.publish(ch, topic, msgs)
	if err != nil || ch.IsClosed() {
		// A channel that saw an error may be closed or hold unconfirmed publishes: never reuse it.
		_ = ch.Close()
		return err
	}
	p.idle <- ch
	return nil
}

func (p *Publisher) publish(ch *amqp091.Channel, topic string, msgs []*message.Message) error {
	exchange := p.config.Exchange.GenerateName(topic)
	if exchange != "" {
		if _, ok := p.declared.Load(exchange); !ok {
			if err := p.config.TopologyBuilder.ExchangeDeclare(ch, exchange, p.config); err != nil {
				return fmt.Errorf("amqp: declare exchange %s: %w", exchange, err)
			}
			p.declared.Store(exchange, struct{}{})
		}
	}
	key := p.config.Publish.GenerateRoutingKey(topic)
	confirms := make([]*amqp091.DeferredConfirmation, len(msgs))
	for i, msg := range msgs {
		pub, err := p.config.Marshaler.Marshal(msg)
		if err != nil {
			return fmt.Errorf("amqp: marshal message %s: %w", msg.UUID, err)
		}
		confirms[i], err = ch.PublishWithDeferredConfirmWithContext(msg.Context(), exchange, key, false, false, pub)
		if err != nil {
			return fmt.Errorf("amqp: publish to %s: %w", topic, err)
		}
	}
	for i, c := range confirms {
		ok, err := c.WaitContext(msgs[i].Context())
		if err != nil {
			return fmt.Errorf("amqp: confirm of message %s on %s: %w", msgs[i].UUID, topic, err)
		}
		if !ok {
			return fmt.Errorf("amqp: broker refused message %s on %s", msgs[i].UUID, topic)
		}
	}
	p.logger.Trace("Published to AMQP", watermill.LogFields{"topic": topic, "messages": len(msgs)})
	return nil
}

// channel returns an idle confirm-mode channel, or opens one.
func (p *Publisher) channel() (*amqp091.Channel, error) {
	for {
		select {
		case ch := <-p.idle:
			if !ch.IsClosed() {
				return ch, nil
			}
			continue
		default:
		}
		break
	}
	conn, err := p.connection()
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp: open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("amqp: enable publisher confirms: %w", err)
	}
	return ch, nil
}

// connection returns the open connection, dialling again when the last one dropped.
func (p *Publisher) connection() (*amqp091.Connection, error) {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.conn != nil && !p.conn.IsClosed() {
		return p.conn, nil
	}
	cfg := amqp091.Config{Properties: amqp091.Table{"connection_name": "jobmill publisher"}}
	conn, err := amqp091.DialConfig(p.url, cfg)
	if err != nil {
		return nil, fmt.Errorf("amqp: connect to %s: %w", redactURL(p.url), redactErr(err, p.url))
	}
	if p.conn != nil {
		p.logger.Info("Reconnected to AMQP", nil)
	}
	p.conn = conn
	return conn, nil
}

// Close waits for running publishes and closes the connection.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	for {
		select {
		case ch := <-p.idle:
			_ = ch.Close()
			continue
		default:
		}
		break
	}
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.conn == nil {
		return nil
	}
	return closeConn(p.conn)
}
