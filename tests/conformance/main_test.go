// Package conformance runs the same scenarios against every backend combination a user would pick:
// duplicated delivery on every subscriber, malformed messages on every topic, SIGKILL of the real binary
// during step 2, and server connections dropped mid-run. Each combination gets state of its own: a fresh
// PostgreSQL schema, a fresh MySQL database, purged RabbitMQ queues, a fresh in-process Kafka broker.
//
// Servers: JOBMILL_TEST_POSTGRES (URL), JOBMILL_TEST_MYSQL (DSN without database), JOBMILL_TEST_AMQP
// (URL) override the local defaults. An unreachable server skips its combinations, unless CI=true.
package conformance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// binary is the jobmill executable TestMain builds for the crash scenario.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "jobmill-conformance-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "jobmill")
	build := exec.Command("go", "build", "-o", binary, "./cmd/jobmill")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "conformance: go build ./cmd/jobmill in %s: %v\n%s", root, err, out)
		return 1
	}
	code := m.Run()
	if code == 0 {
		// Every engine, subscriber, broker and pool a test started must be gone.
		if err := goleak.Find(leakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "conformance: goroutines leaked: %v\n", err)
			return 1
		}
	}
	return code
}

func leakOptions() []goleak.Option {
	return []goleak.Option{
		// sarama's metrics registry starts one process-wide ticker that nothing can stop.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
	}
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(abs, "go.mod")); err != nil {
		return "", fmt.Errorf("cannot find the module root: %w", err)
	}
	return abs, nil
}
