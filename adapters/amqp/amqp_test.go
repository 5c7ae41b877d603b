package amqp_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/jobmill/jobmill/adapters/amqp"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func brokerURL() string {
	if u := os.Getenv("JOBMILL_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// requireRabbit skips when RabbitMQ is down, except on CI, where a missing server is a failure.
func requireRabbit(t testing.TB) string {
	t.Helper()
	url := brokerURL()
	if err := amqp.WaitReachable(context.Background(), url, 2*time.Second); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("RabbitMQ is required on CI: %v", err)
		}
		t.Skipf("RabbitMQ not reachable (start it with `rabbitmq-server -detached`): %v", err)
	}
	return url
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newTopic names a topic unique to the test and removes its queues and exchange afterwards.
func newTopic(t testing.TB, url string, groups ...string) string {
	t.Helper()
	topic := "test." + t.Name() + "." + watermill.NewShortUUID()
	t.Cleanup(func() {
		queues := []string{topic}
		for _, g := range groups {
			queues = append(queues, topic+"_"+g)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := amqp.DeleteQueues(ctx, url, queues...); err != nil {
			t.Error(err)
		}
		conn, err := amqp091.Dial(url)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(topic, false, false)
		}
	})
	return topic
}

func newMessages(n int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i)))
	}
	return msgs
}

func publish(t testing.TB, pub message.Publisher, topic string, msgs []*message.Message) {
	t.Helper()
	for len(msgs) > 0 {
		k := min(len(msgs), 250)
		if err := pub.Publish(topic, msgs[:k]...); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[k:]
	}
}

func closeOnCleanup(t testing.TB, c interface{ Close() error }) {
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
}

func queuePublisher(t testing.TB, url string) message.Publisher {
	t.Helper()
	pub, err := amqp.NewQueuePublisher(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, pub)
	return pub
}

func subscribe(t testing.TB, sub message.Subscriber, topic string) <-chan *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func receive(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(15 * time.Second):
		t.Fatal("no message within 15s")
		return nil
	}
}

func expectNothing(t testing.TB, ch <-chan *message.Message, d time.Duration) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s (payload %s)", m.UUID, m.Payload)
		}
	case <-time.After(d):
	}
}

func TestQueueDeliversEachMessageOnceWithConcurrency(t *testing.T) {
	url := requireRabbit(t)
	topic := newTopic(t, url)
	if err := amqp.Declare(testCtx(t), url, []string{topic}, nil, nil); err != nil {
		t.Fatal(err)
	}
	const n, concurrency = 2000, 8
	msgs := newMessages(n)
	publish(t, queuePublisher(t, url), topic, msgs)

	sub, err := amqp.NewQueueSubscriber(url, concurrency, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, sub)
	ch := subscribe(t, sub, topic)

	// Handle each message in its own goroutine, as the router does, and watch how many run at once.
	var inFlight, maxInFlight atomic.Int64
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range n {
		m := receive(t, ch)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur := inFlight.Add(1)
			for {
				old := maxInFlight.Load()
				if cur <= old || maxInFlight.CompareAndSwap(old, cur) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			mu.Lock()
			seen[m.UUID]++
			mu.Unlock()
			inFlight.Add(-1)
			m.Ack()
		}()
	}
	wg.Wait()
	expectNothing(t, ch, 500*time.Millisecond)

	for _, m := range msgs {
		if seen[m.UUID] != 1 {
			t.Fatalf("message %s delivered %d times", m.UUID, seen[m.UUID])
		}
	}
	if got := maxInFlight.Load(); got < 2 || got > concurrency {
		t.Fatalf("at most %d messages in flight, want between 2 and %d", got, concurrency)
	}
	t.Logf("up to %d of %d messages in flight", maxInFlight.Load(), concurrency)
}

func TestQueueNackedMessageIsRedelivered(t *testing.T) {
	url := requireRabbit(t)
	topic := newTopic(t, url)
	if err := amqp.Declare(testCtx(t), url, []string{topic}, nil, nil); err != nil {
		t.Fatal(err)
	}
	msgs := newMessages(1)
	publish(t, queuePublisher(t, url), topic, msgs)
	sub, err := amqp.NewQueueSubscriber(url, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, sub)
	ch := subscribe(t, sub, topic)

	first := receive(t, ch)
	first.Nack()
	again := receive(t, ch)
	if again.UUID != msgs[0].UUID {
		t.Fatalf("got %s, want %s again", again.UUID, msgs[0].UUID)
	}
	again.Ack()
	expectNothing(t, ch, 300*time.Millisecond)
}

func TestQueueUnackedMessagesReturnWhenTheSubscriberCloses(t *testing.T) {
	url := requireRabbit(t)
	topic := newTopic(t, url)
	if err := amqp.Declare(testCtx(t), url, []string{topic}, nil, nil); err != nil {
		t.Fatal(err)
	}
	msgs := newMessages(3)
	publish(t, queuePublisher(t, url), topic, msgs)

	first, err := amqp.NewQueueSubscriber(url, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := subscribe(t, first, topic)
	for range msgs {
		receive(t, ch) // taken, never acked: a worker that dies mid-job
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("output still open after Close")
	}

	second, err := amqp.NewQueueSubscriber(url, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, second)
	ch = subscribe(t, second, topic)
	got := map[string]bool{}
	for range msgs {
		m := receive(t, ch)
		got[m.UUID] = true
		m.Ack()
	}
	for _, m := range msgs {
		if !got[m.UUID] {
			t.Fatalf("message %s not redelivered", m.UUID)
		}
	}
}

func TestQueueSubscriptionEndsWithItsContext(t *testing.T) {
	url := requireRabbit(t)
	topic := newTopic(t, url)
	if err := amqp.Declare(testCtx(t), url, []string{topic}, nil, nil); err != nil {
		t.Fatal(err)
	}
	sub, err := amqp.NewQueueSubscriber(url, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, sub)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("message on an empty queue")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("output not closed after the context ended")
	}
	if _, err := amqp.NewQueueSubscriber(url, 0, nil); err == nil {
		t.Fatal("concurrency 0 accepted")
	}
}

func TestLogEveryGroupGetsEveryMessage(t *testing.T) {
	url := requireRabbit(t)
	groups := []string{"manager", "stats"}
	topic := newTopic(t, url, groups...)
	if err := amqp.Declare(testCtx(t), url, nil, []string{topic}, groups); err != nil {
		t.Fatal(err)
	}
	pub, err := amqp.NewLogPublisher(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, pub)
	// Published before any subscriber runs: the declared group queues keep them.
	msgs := newMessages(300)
	publish(t, pub, topic, msgs)

	for _, g := range groups {
		sub, err := amqp.NewLogSubscriber(url, g, nil)
		if err != nil {
			t.Fatal(err)
		}
		closeOnCleanup(t, sub)
		ch := subscribe(t, sub, topic)
		for i, want := range msgs {
			m := receive(t, ch)
			// One consumer on a group queue sees the publishing order.
			if m.UUID != want.UUID {
				t.Fatalf("group %s message %d: got %s, want %s", g, i, m.UUID, want.UUID)
			}
			m.Ack()
		}
		expectNothing(t, ch, 200*time.Millisecond)
	}
}

func TestDeclareBeforePublishPreventsLoss(t *testing.T) {
	url := requireRabbit(t)
	pub := queuePublisher(t, url)

	// Without Declare the broker has nowhere to put the message: it is gone.
	lost := newTopic(t, url)
	publish(t, pub, lost, newMessages(1))
	// With Declare it waits in the queue.
	kept := newTopic(t, url)
	if err := amqp.Declare(testCtx(t), url, []string{kept}, nil, nil); err != nil {
		t.Fatal(err)
	}
	msgs := newMessages(1)
	publish(t, pub, kept, msgs)

	sub, err := amqp.NewQueueSubscriber(url, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, sub)
	expectNothing(t, subscribe(t, sub, lost), 300*time.Millisecond)
	m := receive(t, subscribe(t, sub, kept))
	if m.UUID != msgs[0].UUID {
		t.Fatalf("got %s, want %s", m.UUID, msgs[0].UUID)
	}
	m.Ack()

	// Same for the log: the exchange alone keeps nothing, a declared group queue does.
	logPub, err := amqp.NewLogPublisher(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, logPub)
	logTopic := newTopic(t, url, "late", "early")
	if err := amqp.Declare(testCtx(t), url, nil, []string{logTopic}, []string{"early"}); err != nil {
		t.Fatal(err)
	}
	publish(t, logPub, logTopic, newMessages(1))
	late, err := amqp.NewLogSubscriber(url, "late", nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, late)
	expectNothing(t, subscribe(t, late, logTopic), 300*time.Millisecond)
	early, err := amqp.NewLogSubscriber(url, "early", nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, early)
	receive(t, subscribe(t, early, logTopic)).Ack()

	if err := amqp.Declare(testCtx(t), url, nil, []string{logTopic}, nil); err == nil {
		t.Fatal("log topics without groups accepted")
	}
}

func TestMeasureRawThroughput(t *testing.T) {
	url := requireRabbit(t)
	n := 20_000
	if testing.Short() {
		n = 2_000
	}
	rate, err := amqp.MeasureRawThroughput(testCtx(t), url, n)
	if err != nil {
		t.Fatal(err)
	}
	if rate <= 0 {
		t.Fatalf("rate %v", rate)
	}
	t.Logf("RabbitMQ: %.0f persistent messages/s published with confirms and consumed with acks (%d messages)", rate, n)
}

func TestWaitReachableNamesTheHostNotThePassword(t *testing.T) {
	url := "amqp://jobmill:s3cr3t-pw@127.0.0.1:1/vhost"
	err := amqp.WaitReachable(context.Background(), url, 300*time.Millisecond)
	if err == nil {
		t.Fatal("reached a closed port")
	}
	if msg := err.Error(); !strings.Contains(msg, "127.0.0.1:1") || strings.Contains(msg, "s3cr3t-pw") {
		t.Fatalf("error %q: want the host and no password", msg)
	}
	if _, err := amqp.NewQueuePublisher(url, nil); err == nil || strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Fatalf("publisher error %v: want an error without the password", err)
	}
}

// BenchmarkQueuePublish compares watermill-amqp's confirming publisher, which awaits each message's
// confirm in turn, with this package's, which awaits a Publish call's confirms together. Both publish
// persistent messages in calls of 500.
func BenchmarkQueuePublish(b *testing.B) {
	url := requireRabbit(b)
	topic := newTopic(b, url)
	if err := amqp.Declare(context.Background(), url, []string{topic}, nil, nil); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, pub message.Publisher) {
		b.ResetTimer()
		for sent := 0; sent < b.N; sent += 500 {
			if err := pub.Publish(topic, newMessages(min(500, b.N-sent))...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}
	b.Run("watermill-amqp", func(b *testing.B) {
		cfg := wamqp.NewDurableQueueConfig(url)
		cfg.Publish.ConfirmDelivery = true
		cfg.Publish.ChannelPoolSize = 1
		pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
		if err != nil {
			b.Fatal(err)
		}
		defer pub.Close()
		run(b, pub)
	})
	b.Run("pipelined", func(b *testing.B) {
		pub, err := amqp.NewQueuePublisher(url, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer pub.Close()
		run(b, pub)
	})
}

// A tail subscriber hears what is published while it is connected, and takes nothing from the durable
// queues of consumer groups.
func TestTailSubscriberHearsOnlyNewMessagesAndTakesNothingFromGroups(t *testing.T) {
	url := requireRabbit(t)
	topic := newTopic(t, url, "manager")
	if err := amqp.Declare(testCtx(t), url, nil, []string{topic}, []string{"manager"}); err != nil {
		t.Fatal(err)
	}
	pub, err := amqp.NewLogPublisher(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, pub)
	publish(t, pub, topic, newMessages(5)) // before the tail: never seen by it

	sub, err := amqp.NewTailSubscriber(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := subscribe(t, sub, topic)
	msgs := newMessages(20)
	publish(t, pub, topic, msgs)
	for i, want := range msgs {
		m := receive(t, ch)
		if m.UUID != want.UUID {
			t.Fatalf("message %d: got %s, want %s", i, m.UUID, want.UUID)
		}
		m.Ack()
	}
	expectNothing(t, ch, 200*time.Millisecond)
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	// The durable group queue still has everything.
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := c.QueueDeclarePassive(topic+"_manager", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 25 {
		t.Fatalf("manager queue holds %d messages, want 25", q.Messages)
	}
}
