package devbroker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jobmill/jobmill/adapters/kafka"
	"github.com/jobmill/jobmill/adapters/kafka/devbroker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	)
}

func TestStartServeClose(t *testing.T) {
	b, err := devbroker.Start("127.0.0.1:0", 3)
	if err != nil {
		t.Fatal(err)
	}
	addrs := b.Addrs()
	if len(addrs) != 1 || strings.HasSuffix(addrs[0], ":0") {
		t.Fatalf("addrs %v, want one bound address", addrs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := kafka.Config{Brokers: addrs}
	if err := kafka.WaitReachable(ctx, cfg, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := kafka.CreateTopics(ctx, cfg, "t"); err != nil {
		t.Fatal(err)
	}

	// A second broker cannot take the same address.
	if _, err := devbroker.Start(addrs[0], 1); err == nil {
		t.Fatal("second start on the same address succeeded")
	}

	b.Close()
	b.Close()
	err = kafka.WaitReachable(ctx, cfg, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), addrs[0]) {
		t.Fatalf("after close: %v; want an error naming %s", err, addrs[0])
	}
}

func TestStartRejectsBadInput(t *testing.T) {
	if _, err := devbroker.Start("127.0.0.1:0", 0); err == nil {
		t.Fatal("zero partitions accepted")
	}
	if _, err := devbroker.Start("256.0.0.1:x", 1); err == nil {
		t.Fatal("bad address accepted")
	}
}
