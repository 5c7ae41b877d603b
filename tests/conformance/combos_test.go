package conformance

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/jobmill/jobmill/adapters/kafka/devbroker"
	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/config"
)

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

var (
	postgresURL = envOr("JOBMILL_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	mysqlDSN    = envOr("JOBMILL_TEST_MYSQL", "root@tcp(127.0.0.1:3306)/")
	amqpURL     = envOr("JOBMILL_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
)

// combo is one backend combination: event log, work queue and job store.
type combo struct {
	name              string
	log, queue, store string
	// twiceSubJobs is the size of the job in the duplicated-delivery scenario.
	twiceSubJobs int
}

// combos are the combinations users pick (config/examples). Kafka and AMQP combinations run as soon as
// service accepts those transports; until then service.New reports ErrUnsupportedBackend and their
// scenarios skip with that message.
var combos = []combo{
	{name: "sqlite", log: "sqlite", queue: "sqlite", store: "sqlite", twiceSubJobs: 10000},
	{name: "postgres", log: "postgres", queue: "postgres", store: "postgres", twiceSubJobs: 10000},
	{name: "mysql", log: "mysql", queue: "mysql", store: "mysql", twiceSubJobs: 2000},
	{name: "kafka+amqp/postgres", log: "kafka", queue: "amqp", store: "postgres", twiceSubJobs: 2000},
	{name: "kafka+kafka/sqlite", log: "kafka", queue: "kafka", store: "sqlite", twiceSubJobs: 2000},
	{name: "amqp+amqp/sqlite", log: "amqp", queue: "amqp", store: "sqlite", twiceSubJobs: 2000},
	{name: "kafka+postgres/postgres", log: "kafka", queue: "postgres", store: "postgres", twiceSubJobs: 2000},
}

func (c combo) uses(b string) bool { return c.log == b || c.queue == b || c.store == b }

// env is the isolated state of one scenario on one combination.
type env struct {
	combo combo
	dir   string
	cfg   config.Config
	// appName tags the engine's PostgreSQL sessions (application_name), so that only they are dropped.
	appName string
	// mysqlDB is the scenario's own MySQL database.
	mysqlDB string
	broker  *devbroker.Broker
	// vhost is the scenario's own RabbitMQ virtual host ("" when rabbitmqctl is missing and the default
	// vhost's jobmill queues are deleted instead).
	vhost string
}

func unreachable(t testing.TB, server string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is unreachable: %v", server, err)
	}
	t.Skipf("%s is unreachable (%v); start it or set CI=true to fail instead", server, err)
}

func scratchName() string {
	return "jmc_" + strings.ToLower(strings.ReplaceAll(watermill.NewShortUUID(), "-", ""))
}

func pingDB(db *sql.DB) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

func withParam(u, kv string) string {
	if strings.Contains(u, "?") {
		return u + "&" + kv
	}
	return u + "?" + kv
}

// amqpQueues are every queue jobmill declares, plus the poison readers' queues of this suite.
func amqpQueues() []string {
	q := slices.Clone(messaging.WorkTopics())
	q = append(q, messaging.EventsTopic+"_"+messaging.ManagerGroup)
	q = append(q, messaging.PoisonTopic+"_"+poisonReaderGroup)
	return q
}

// newEnv prepares fresh state for a scenario. Cleanups registered here run after those the scenario
// registers later (the engine stops before its schema is dropped).
func newEnv(t *testing.T, c combo) *env {
	t.Helper()
	e := &env{combo: c, dir: t.TempDir()}
	cfg := config.Default()
	cfg.Transport = c.log
	cfg.Log, cfg.Queue, cfg.Store = c.log, c.queue, c.store
	cfg.SQLite.Path = filepath.Join(e.dir, "data", "jobmill.db")
	cfg.OutboxDir = filepath.Join(e.dir, "outbox")
	cfg.Listen = "127.0.0.1:0"
	cfg.Workers = 8
	cfg.ConnectTimeout = 10 * time.Second
	cfg.LogLevel = "warn"

	if c.uses(config.BackendPostgres) {
		admin, err := sql.Open("pgx", postgresURL)
		if err != nil {
			t.Fatal(err)
		}
		if err := pingDB(admin); err != nil {
			admin.Close()
			unreachable(t, "PostgreSQL ("+postgresURL+")", err)
		}
		schema := scratchName()
		if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
			admin.Close()
			t.Fatal(err)
		}
		e.appName = schema
		cfg.Postgres.URL = withParam(withParam(postgresURL, "search_path="+schema), "application_name="+schema)
		t.Cleanup(func() {
			// Sessions left by a killed process would hold locks on the schema's tables.
			_, _ = admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, schema)
			if _, err := admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
				t.Errorf("drop schema %s: %v", schema, err)
			}
			admin.Close()
		})
	}
	if c.uses(config.BackendMySQL) {
		admin, err := sql.Open("mysql", mysqlDSN)
		if err != nil {
			t.Fatal(err)
		}
		if err := pingDB(admin); err != nil {
			admin.Close()
			unreachable(t, "MySQL/MariaDB ("+mysqlDSN+")", err)
		}
		name := scratchName()
		if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
			admin.Close()
			t.Fatal(err)
		}
		e.mysqlDB = name
		cfg.MySQL.DSN = strings.Replace(mysqlDSN, ")/", ")/"+name, 1)
		t.Cleanup(func() {
			killMySQLSessions(t, admin, name)
			if _, err := admin.Exec("DROP DATABASE " + name); err != nil {
				t.Errorf("drop database %s: %v", name, err)
			}
			admin.Close()
		})
	}
	if c.uses(config.BackendAMQP) {
		e.vhost, cfg.AMQP.URL = isolateAMQP(t)
	}
	if c.uses(config.BackendKafka) {
		b, err := devbroker.Start("127.0.0.1:0", 8)
		if err != nil {
			t.Fatalf("start the Kafka dev broker: %v", err)
		}
		e.broker = b
		t.Cleanup(b.Close)
		cfg.Kafka.Brokers = b.Addrs()
		cfg.Kafka.Partitions = 8
	}
	e.cfg = cfg
	return e
}

// isolateAMQP gives the scenario RabbitMQ state of its own. jobmill's queue names are fixed, and other
// programs (benchmarks, other test runs) may use the same broker at the same time, so a virtual host of
// the scenario's own is the only real isolation; it needs rabbitmqctl on this machine. Without it, the
// jobmill queues of the URL's vhost are deleted before and after the scenario.
func isolateAMQP(t *testing.T) (vhost, url string) {
	t.Helper()
	if err := deleteAMQPQueues(amqpURL, nil); err != nil {
		unreachable(t, "RabbitMQ ("+amqpURL+")", err)
	}
	u, err := neturl.Parse(amqpURL)
	if err != nil {
		t.Fatalf("JOBMILL_TEST_AMQP %q: %v", amqpURL, err)
	}
	user := u.User.Username()
	if _, err := exec.LookPath("rabbitmqctl"); err == nil {
		name := scratchName()
		ctl := func(args ...string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("rabbitmqctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			}
			return nil
		}
		if err := ctl("add_vhost", name); err == nil {
			t.Cleanup(func() {
				if err := ctl("delete_vhost", name); err != nil {
					t.Errorf("%v", err)
				}
			})
			if err := ctl("set_permissions", "-p", name, user, ".*", ".*", ".*"); err != nil {
				t.Fatal(err)
			}
			u.Path = "/" + name
			return name, u.String()
		} else {
			t.Logf("no RabbitMQ vhost of our own (%v): deleting the jobmill queues of the shared vhost instead; a concurrent user of the broker will interfere", err)
		}
	} else {
		t.Logf("rabbitmqctl not found: deleting the jobmill queues of the shared vhost instead; a concurrent user of the broker will interfere")
	}
	if err := deleteAMQPQueues(amqpURL, amqpQueues()); err != nil {
		t.Fatalf("delete RabbitMQ queues: %v", err)
	}
	t.Cleanup(func() {
		if err := deleteAMQPQueues(amqpURL, amqpQueues()); err != nil {
			t.Errorf("delete RabbitMQ queues: %v", err)
		}
	})
	return "", amqpURL
}

// deleteAMQPQueues deletes queues by name with their messages; a missing queue is fine.
func deleteAMQPQueues(url string, queues []string) error {
	conn, err := amqp091.DialConfig(url, amqp091.Config{Dial: amqp091.DefaultDial(3 * time.Second)})
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			return err
		}
		_, err = ch.QueueDelete(q, false, false, false)
		_ = ch.Close()
		var amqpErr *amqp091.Error
		if err != nil && !(errors.As(err, &amqpErr) && amqpErr.Code == amqp091.NotFound) {
			return fmt.Errorf("delete queue %s: %w", q, err)
		}
	}
	return nil
}

// killMySQLSessions kills every session on database name, except the caller's.
func killMySQLSessions(t testing.TB, admin *sql.DB, name string) int {
	t.Helper()
	rows, err := admin.Query(`SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()`, name)
	if err != nil {
		t.Logf("list MySQL sessions: %v", err)
		return 0
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if rows.Scan(&id) == nil {
			ids = append(ids, id)
		}
	}
	rows.Close()
	n := 0
	for _, id := range ids {
		if _, err := admin.Exec(fmt.Sprintf("KILL %d", id)); err == nil {
			n++
		}
	}
	return n
}

// cliArgs are the flags that select this combination for the jobmill binary.
func (e *env) cliArgs() []string {
	c := e.cfg
	args := []string{
		"--transport", c.Transport, "--log", c.Log, "--queue", c.Queue, "--store", c.Store,
		"--sqlite-path", c.SQLite.Path, "--connect-timeout", c.ConnectTimeout.String(),
	}
	if e.combo.uses(config.BackendPostgres) {
		args = append(args, "--postgres-url", c.Postgres.URL)
	}
	if e.combo.uses(config.BackendMySQL) {
		args = append(args, "--mysql-dsn", c.MySQL.DSN)
	}
	if e.combo.uses(config.BackendAMQP) {
		args = append(args, "--amqp-url", c.AMQP.URL)
	}
	if e.combo.uses(config.BackendKafka) {
		args = append(args, "--kafka-brokers", strings.Join(c.Kafka.Brokers, ","))
	}
	return args
}

// TestConformance runs every scenario on every combination: TestConformance/<combination>/<scenario>.
func TestConformance(t *testing.T) {
	for _, c := range combos {
		t.Run(c.name, func(t *testing.T) {
			t.Run("delivered_twice", func(t *testing.T) { testDeliveredTwice(t, c) })
			t.Run("malformed_messages", func(t *testing.T) { testMalformed(t, c) })
			t.Run("crash_restart", func(t *testing.T) { testCrashRestart(t, c) })
			t.Run("connection_dropped", func(t *testing.T) { testConnectionDropped(t, c) })
			t.Run("live_view_from_another_process", func(t *testing.T) { testLiveViewFromAnotherProcess(t, c) })
		})
	}
}
