package kafka_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/jobmill/jobmill/adapters/kafka"
	"github.com/jobmill/jobmill/adapters/kafka/devbroker"
	"github.com/jobmill/jobmill/adapters/messaging"
)

var brokers []string

// withBroker runs the tests against one in-process broker, closed before goleak looks for leftovers.
type withBroker struct{ m *testing.M }

func (w withBroker) Run() int {
	b, err := devbroker.Start("127.0.0.1:0", 4)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start dev broker:", err)
		return 1
	}
	defer b.Close()
	brokers = b.Addrs()
	return w.m.Run()
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(withBroker{m},
		// sarama's metrics registry starts one process-wide meter ticker that never stops.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}

func testConfig(partitions int) kafka.Config {
	return kafka.Config{Brokers: brokers, Partitions: partitions, NackResendSleep: 50 * time.Millisecond}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newTopic(t testing.TB, cfg kafka.Config) string {
	t.Helper()
	topic := "test." + t.Name() + "." + watermill.NewShortUUID()
	if err := kafka.CreateTopics(testCtx(t), cfg, topic); err != nil {
		t.Fatal(err)
	}
	return topic
}

func newPublisher(t testing.TB, cfg kafka.Config) message.Publisher {
	t.Helper()
	pub, err := kafka.NewPublisher(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pub.Close(); err != nil {
			t.Error(err)
		}
	})
	return pub
}

func subscribe(t testing.TB, cfg kafka.Config, group, topic string) <-chan *message.Message {
	t.Helper()
	sub, err := kafka.NewSubscriber(cfg, group, nil)
	if err != nil {
		t.Fatal(err)
	}
	return subscribeWith(t, sub, topic)
}

// subscribeWith subscribes sub to topic until the test ends.
func subscribeWith(t testing.TB, sub message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := sub.Close(); err != nil {
			t.Error(err)
		}
	})
	return ch
}

func keyed(key string, seq int) *message.Message {
	m := message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(seq)))
	m.Metadata.Set(messaging.PartitionKeyMetadata, key)
	m.Metadata.Set("seq", strconv.Itoa(seq))
	return m
}

func receive(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no message within 20s")
		return nil
	}
}

// receiveAll acks n messages and returns them in arrival order.
func receiveAll(t testing.TB, ch <-chan *message.Message, n int) []*message.Message {
	t.Helper()
	out := make([]*message.Message, 0, n)
	for len(out) < n {
		m := receive(t, ch)
		m.Ack()
		out = append(out, m)
	}
	return out
}

func TestPerKeyOrderAcrossPartitions(t *testing.T) {
	cfg := testConfig(4)
	topic := newTopic(t, cfg)
	pub := newPublisher(t, cfg)

	const keys, perKey = 10, 60
	var batch []*message.Message
	for seq := range perKey {
		for k := range keys {
			batch = append(batch, keyed("job-"+strconv.Itoa(k), seq))
		}
		// Mix single-message and batched publishes: both paths must keep the order.
		if seq%3 == 0 {
			for _, m := range batch {
				if err := pub.Publish(topic, m); err != nil {
					t.Fatal(err)
				}
			}
			batch = batch[:0]
		} else if len(batch) >= 4*keys {
			if err := pub.Publish(topic, batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := pub.Publish(topic, batch...); err != nil {
		t.Fatal(err)
	}

	got := receiveAll(t, subscribe(t, cfg, "order", topic), keys*perKey)
	next := map[string]int{}
	partitions := map[int32]bool{}
	for _, m := range got {
		key := m.Metadata.Get(messaging.PartitionKeyMetadata)
		seq, _ := strconv.Atoi(m.Metadata.Get("seq"))
		if seq != next[key] {
			t.Fatalf("key %s: got seq %d, want %d", key, seq, next[key])
		}
		next[key]++
		p, _ := wkafka.MessagePartitionFromCtx(m.Context())
		partitions[p] = true
	}
	for k := range keys {
		if n := next["job-"+strconv.Itoa(k)]; n != perKey {
			t.Errorf("key job-%d: %d messages, want %d", k, n, perKey)
		}
	}
	if len(partitions) < 2 {
		t.Errorf("all keys landed on %d partition(s); the test needs them spread", len(partitions))
	}
}

func TestEveryGroupGetsEverythingFromTheOldest(t *testing.T) {
	cfg := testConfig(4)
	topic := newTopic(t, cfg)
	pub := newPublisher(t, cfg)

	// Published before any group exists: new groups must start from the oldest offset.
	const n = 200
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = keyed("job-"+strconv.Itoa(i%7), i)
	}
	if err := pub.Publish(topic, msgs...); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	results := make([]map[string]bool, 2)
	for g := range results {
		ch := subscribe(t, cfg, "group-"+strconv.Itoa(g), topic)
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := map[string]bool{}
			for len(seen) < n {
				select {
				case m := <-ch:
					m.Ack()
					seen[m.UUID] = true
				case <-time.After(20 * time.Second):
					results[g] = seen
					return
				}
			}
			results[g] = seen
		}()
	}
	wg.Wait()
	for g, seen := range results {
		if len(seen) != n {
			t.Errorf("group %d received %d distinct messages, want %d", g, len(seen), n)
		}
		for _, m := range msgs {
			if !seen[m.UUID] {
				t.Errorf("group %d missed message %s", g, m.UUID)
				break
			}
		}
	}
}

func TestNackedMessageIsOfferedAgain(t *testing.T) {
	cfg := testConfig(1)
	topic := newTopic(t, cfg)
	pub := newPublisher(t, cfg)
	if err := pub.Publish(topic, keyed("job", 0), keyed("job", 1)); err != nil {
		t.Fatal(err)
	}
	ch := subscribe(t, cfg, "nack", topic)
	first := receive(t, ch)
	first.Nack()
	again := receive(t, ch)
	if again.UUID != first.UUID {
		t.Fatalf("after a nack got %s, want %s again (the partition must not move on)", again.UUID, first.UUID)
	}
	again.Ack()
	if m := receive(t, ch); m.Metadata.Get("seq") != "1" {
		t.Fatalf("got seq %s, want 1", m.Metadata.Get("seq"))
	} else {
		m.Ack()
	}
}

func TestCreateTopicsIsIdempotent(t *testing.T) {
	cfg := testConfig(3)
	topic := newTopic(t, cfg)
	if err := kafka.CreateTopics(testCtx(t), testConfig(5), topic); err != nil {
		t.Fatalf("second create: %v", err)
	}
	client, err := sarama.NewClient(brokers, sarama.NewConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 3 {
		t.Fatalf("topic has %d partitions, want the 3 of its first creation", len(parts))
	}
	if err := kafka.DeleteTopics(testCtx(t), cfg, topic, topic+".missing"); err != nil {
		t.Fatal(err)
	}
}

func TestSubscriberNeedsGroup(t *testing.T) {
	if _, err := kafka.NewSubscriber(testConfig(1), "", nil); err == nil {
		t.Fatal("want an error for an empty consumer group")
	}
	if _, err := kafka.NewPublisher(kafka.Config{}, nil); err == nil {
		t.Fatal("want an error without brokers")
	}
}

func TestMeasureRawThroughput(t *testing.T) {
	n := 20_000
	if testing.Short() {
		n = 2_000
	}
	rate, err := kafka.MeasureRawThroughput(testCtx(t), testConfig(8), n)
	if err != nil {
		t.Fatal(err)
	}
	if rate <= 0 {
		t.Fatalf("rate %v", rate)
	}
	t.Logf("kfake + sarama: %.0f messages/s through a consumer group (%d messages, 8 partitions)", rate, n)
}

func TestWaitReachable(t *testing.T) {
	if err := kafka.WaitReachable(testCtx(t), testConfig(1), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkPublish compares watermill-kafka's publisher, which awaits each message of a Publish call
// in turn, with this package's, which sends the call as one batch. Both publish in calls of 500.
func BenchmarkPublish(b *testing.B) {
	cfg := testConfig(8)
	topic := newTopic(b, cfg)
	const per = 500
	run := func(b *testing.B, pub message.Publisher) {
		b.ResetTimer()
		for sent := 0; sent < b.N; sent += per {
			batch := make([]*message.Message, min(per, b.N-sent))
			for i := range batch {
				batch[i] = keyed(strconv.Itoa((sent+i)%64), sent+i)
			}
			if err := pub.Publish(topic, batch...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}
	b.Run("watermill-kafka", func(b *testing.B) {
		sc := wkafka.DefaultSaramaSyncPublisherConfig()
		pub, err := wkafka.NewPublisher(wkafka.PublisherConfig{
			Brokers: brokers, Marshaler: wkafka.NewWithPartitioningMarshaler(messaging.PartitionKey), OverwriteSaramaConfig: sc,
		}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer pub.Close()
		run(b, pub)
	})
	b.Run("batched", func(b *testing.B) {
		pub, err := kafka.NewPublisher(cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer pub.Close()
		run(b, pub)
	})
}

// A tail subscriber hears only what is published after it started, from every partition, and leaves no
// consumer group behind.
func TestTailSubscriberStartsAtTheNewestOffset(t *testing.T) {
	cfg := testConfig(3)
	topic := newTopic(t, cfg)
	pub := newPublisher(t, cfg)
	for i := range 10 {
		if err := pub.Publish(topic, keyed("old-"+strconv.Itoa(i), i)); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := kafka.NewTailSubscriber(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := sub.Close(); err != nil {
			t.Error(err)
		}
	})
	// The partition consumers start asynchronously: publish until the first new message arrives, then
	// check that nothing old ever does.
	want := map[string]bool{}
	got := 0
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; got == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("tail subscriber received nothing")
		}
		key := "new-" + strconv.Itoa(i)
		want[key] = true
		if err := pub.Publish(topic, keyed(key, i)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-ch:
			m.Ack()
			if !want[m.Metadata.Get(messaging.PartitionKeyMetadata)] {
				t.Fatalf("tail received %q, published before it started", m.Metadata.Get(messaging.PartitionKeyMetadata))
			}
			got++
		case <-time.After(200 * time.Millisecond):
		}
	}
}
