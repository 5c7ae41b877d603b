// Package config defines jobmill's typed configuration and loads it from,
// lowest to highest precedence: built-in defaults, a YAML file, JOBMILL_*
// environment variables and command-line flags.
//
// Every problem is reported as an *Error whose one-line message names the
// offending key (or environment variable, or file), so an operator can fix
// it without reading code.
package config

import (
	"log/slog"
	"slices"
	"time"
)

// Backend names accepted by the transport, log, queue and store keys.
const (
	BackendSQLite   = "sqlite"
	BackendPostgres = "postgres"
	BackendMySQL    = "mysql"
	BackendKafka    = "kafka"
	BackendAMQP     = "amqp"
)

// Roles a jobmill process can take on; see Config.Roles.
const (
	RoleAPI       = "api"
	RoleManager   = "manager"
	RoleWorker    = "worker"
	RoleProjector = "projector"
	RoleTicker    = "ticker"
)

// Notification senders; see Config.Notifications.
const (
	NotifyWebhooks = "webhooks"
	NotifyLog      = "log"
	NotifyOff      = "off"
)

// Auth modes of the API; see Config.Auth.
const (
	AuthRequired = "required"
	AuthOff      = "off"
)

// Allowed values, in the order they are listed in error messages.
var (
	transportBackends = []string{BackendSQLite, BackendPostgres, BackendMySQL, BackendKafka, BackendAMQP}
	storeBackends     = []string{BackendSQLite, BackendPostgres, BackendMySQL}
	allRoles          = []string{RoleAPI, RoleManager, RoleWorker, RoleProjector, RoleTicker}
	logLevels         = []string{"debug", "info", "warn", "error"}
	logFormats        = []string{"text", "json"}
	authModes         = []string{AuthRequired, AuthOff}
	notifyModes       = []string{NotifyWebhooks, NotifyLog, NotifyOff}
)

// Config is the complete configuration of one jobmill process.
//
// The koanf tags are the keys used in the YAML file; nested keys are joined
// with "." in error messages (e.g. "sqlite.path") and with "_" in environment
// variable names (e.g. JOBMILL_SQLITE_PATH).
type Config struct {
	// Transport is the backend used for both the event log and the work
	// queue unless Log or Queue name another: sqlite, postgres, mysql,
	// kafka or amqp.
	Transport string `koanf:"transport"`
	// Log is the event log backend; Load defaults it to Transport.
	Log string `koanf:"log"`
	// Queue is the work queue backend; Load defaults it to Transport.
	Queue string `koanf:"queue"`
	// Store is the job store backend: sqlite, postgres or mysql. Load
	// defaults it to Transport when that is postgres or mysql (one database
	// serves everything), and to sqlite otherwise.
	Store string `koanf:"store"`

	SQLite   SQLiteConfig   `koanf:"sqlite"`
	Postgres PostgresConfig `koanf:"postgres"`
	MySQL    MySQLConfig    `koanf:"mysql"`
	AMQP     AMQPConfig     `koanf:"amqp"`
	Kafka    KafkaConfig    `koanf:"kafka"`

	// Listen is the host:port the HTTP API listens on.
	Listen string `koanf:"listen"`
	// Auth is whether API requests need a token: required or off. Off is accepted only on a loopback
	// listen address, for local development.
	Auth string    `koanf:"auth"`
	API  APIConfig `koanf:"api"`
	// Notifications is how the projector delivers notifications: webhooks (to each tenant's registered
	// webhooks), log (writes each notification to the process log, for local use) or off.
	Notifications string `koanf:"notifications"`
	// Workers is the number of sub-job executions this process runs
	// concurrently. It may be 0 only when the worker role is not enabled.
	Workers int `koanf:"workers"`
	// Roles lists the parts of the engine this process runs; any subset of
	// api, manager, worker, projector and ticker.
	Roles []string `koanf:"roles"`
	// Tick is the interval of the periodic tick (timeouts, schedules).
	// At least 10ms, so a typo cannot turn it into a busy loop.
	Tick time.Duration `koanf:"tick"`
	// DispatchWindow caps the sub-jobs one job may have in flight at once.
	DispatchWindow int `koanf:"dispatch_window"`
	// ConnectTimeout is how long start-up keeps retrying, with backoff, a database or broker that does
	// not answer yet (0: try once).
	ConnectTimeout time.Duration `koanf:"connect_timeout"`
	// OutboxDir is where the built-in invoices job type writes its emails.
	OutboxDir string `koanf:"outbox_dir"`
	// LogLevel is the minimum level logged: debug, info, warn or error.
	LogLevel string `koanf:"log_level"`
	// LogFormat is the log line format: text or json.
	LogFormat string `koanf:"log_format"`
}

// SQLiteConfig configures the SQLite backend.
type SQLiteConfig struct {
	// Path is the database file; its directory is created on demand.
	Path string `koanf:"path"`
}

// PostgresConfig configures the PostgreSQL backend.
type PostgresConfig struct {
	// URL is a postgres:// or postgresql:// connection URL. It may carry a
	// password; use Config.Redacted before logging it.
	URL string `koanf:"url"`
}

// MySQLConfig configures the MySQL backend.
type MySQLConfig struct {
	// DSN is a go-sql-driver/mysql data source name such as
	// user:password@tcp(host:3306)/db. Use Config.Redacted before logging it.
	DSN string `koanf:"dsn"`
}

// AMQPConfig configures the AMQP (RabbitMQ) backend.
type AMQPConfig struct {
	// URL is an amqp:// or amqps:// URL. Use Config.Redacted before logging it.
	URL string `koanf:"url"`
}

// KafkaConfig configures the Kafka backend.
type KafkaConfig struct {
	// Brokers are the bootstrap brokers, each host:port.
	Brokers []string `koanf:"brokers"`
	// Partitions is the partition count of the topics jobmill creates.
	Partitions int `koanf:"partitions"`
}

// APIConfig limits the GraphQL API.
type APIConfig struct {
	// AllowedOrigins are the origins (host patterns such as "app.example.com" or "*.example.com") whose
	// pages may open websocket subscriptions; empty allows only same-origin pages and non-browser clients.
	AllowedOrigins []string `koanf:"allowed_origins"`
	// RateLimit is how many requests per second one token may make (bursts of twice that).
	RateLimit int `koanf:"rate_limit"`
}

// Default returns the configuration used when no file, environment variable
// or flag sets anything; it is what Load returns in that case.
func Default() Config {
	c := unresolvedDefault()
	c.resolve()
	return c
}

// unresolvedDefault is Default with Log, Queue and Store left empty, so Load
// can tell "not set" apart from "set to the default" and derive them from
// whatever Transport ends up being.
func unresolvedDefault() Config {
	return Config{
		Transport: BackendSQLite,
		SQLite:    SQLiteConfig{Path: "jobmill-data/jobmill.db"},
		Postgres:  PostgresConfig{URL: "postgres://postgres@127.0.0.1:5432/postgres"},
		MySQL:     MySQLConfig{DSN: "root@tcp(127.0.0.1:3306)/test"},
		AMQP:      AMQPConfig{URL: "amqp://guest:guest@127.0.0.1:5672/"},
		Kafka: KafkaConfig{
			Brokers:    []string{"127.0.0.1:9092"},
			Partitions: 8,
		},
		Listen:         "127.0.0.1:8080",
		Auth:           AuthRequired,
		API:            APIConfig{RateLimit: 50},
		Notifications:  NotifyWebhooks,
		Workers:        32,
		Roles:          slices.Clone(allRoles),
		Tick:           time.Second,
		DispatchWindow: 4096,
		ConnectTimeout: 30 * time.Second,
		OutboxDir:      "jobmill-data/outbox",
		LogLevel:       "info",
		LogFormat:      "text",
	}
}

// resolve fills Log, Queue and Store from Transport where they were not set.
func (c *Config) resolve() {
	if c.Log == "" {
		c.Log = c.Transport
	}
	if c.Queue == "" {
		c.Queue = c.Transport
	}
	if c.Store == "" {
		switch c.Transport {
		case BackendPostgres, BackendMySQL:
			c.Store = c.Transport
		default:
			c.Store = BackendSQLite
		}
	}
}

// HasRole reports whether role r is enabled in this process.
func (c Config) HasRole(r string) bool {
	return slices.Contains(c.Roles, r)
}

// uses reports whether any of the log, queue or store runs on backend b, so
// that settings of backends nobody uses are not held against the operator.
func (c Config) uses(b string) bool {
	return c.Log == b || c.Queue == b || c.Store == b
}

// Error is a configuration problem. Key names what is wrong: a
// configuration key such as "workers" or "sqlite.path", an environment
// variable such as "JOBMILL_WORKERS", or a configuration file.
type Error struct {
	Key     string
	Problem string
}

// Error returns "invalid configuration: <key>: <problem>".
func (e *Error) Error() string {
	return "invalid configuration: " + e.Key + ": " + e.Problem
}

// LogValue makes a Config safe to pass to slog: it logs the redacted form,
// so connection secrets never reach the logs.
func (c Config) LogValue() slog.Value {
	r := c.Redacted()
	return slog.GroupValue(
		slog.String("transport", r.Transport),
		slog.String("log", r.Log),
		slog.String("queue", r.Queue),
		slog.String("store", r.Store),
		slog.String("sqlite.path", r.SQLite.Path),
		slog.String("postgres.url", r.Postgres.URL),
		slog.String("mysql.dsn", r.MySQL.DSN),
		slog.String("amqp.url", r.AMQP.URL),
		slog.Any("kafka.brokers", r.Kafka.Brokers),
		slog.Int("kafka.partitions", r.Kafka.Partitions),
		slog.String("listen", r.Listen),
		slog.String("auth", r.Auth),
		slog.Any("api.allowed_origins", r.API.AllowedOrigins),
		slog.Int("api.rate_limit", r.API.RateLimit),
		slog.String("notifications", r.Notifications),
		slog.Int("workers", r.Workers),
		slog.Any("roles", r.Roles),
		slog.Duration("tick", r.Tick),
		slog.Int("dispatch_window", r.DispatchWindow),
		slog.Duration("connect_timeout", r.ConnectTimeout),
		slog.String("outbox_dir", r.OutboxDir),
		slog.String("log_level", r.LogLevel),
		slog.String("log_format", r.LogFormat),
	)
}
