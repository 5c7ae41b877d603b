package config

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// source describes the inputs of one Load call.
type source struct {
	file string   // YAML content; "" means no file
	env  []string // KEY=VALUE pairs; the only environment the loader sees
	args []string // command-line arguments parsed by RegisterFlags' flags
}

// run loads the configuration from s without touching the real process
// environment, so tests pass whatever JOBMILL_* variables the machine has.
func (s source) run(t *testing.T) (Config, error) {
	t.Helper()
	path := ""
	if s.file != "" {
		path = writeFile(t, s.file)
	}
	var fs *pflag.FlagSet
	if s.args != nil {
		fs = pflag.NewFlagSet("jobmill", pflag.ContinueOnError)
		RegisterFlags(fs)
		if err := fs.Parse(s.args); err != nil {
			t.Fatalf("parse flags %v: %v", s.args, err)
		}
	}
	return load(path, fs, func() []string { return s.env })
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jobmill.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefault(t *testing.T) {
	d := Default()
	want := Config{
		Transport: "sqlite",
		Log:       "sqlite",
		Queue:     "sqlite",
		Store:     "sqlite",
		SQLite:    SQLiteConfig{Path: "jobmill-data/jobmill.db"},
		Postgres:  PostgresConfig{URL: "postgres://postgres@127.0.0.1:5432/postgres"},
		MySQL:     MySQLConfig{DSN: "root@tcp(127.0.0.1:3306)/test"},
		AMQP:      AMQPConfig{URL: "amqp://guest:guest@127.0.0.1:5672/"},
		Kafka:     KafkaConfig{Brokers: []string{"127.0.0.1:9092"}, Partitions: 8},
		Listen:    "127.0.0.1:8080",
		Auth:      "required",
		API:       APIConfig{RateLimit: 50},
		Workers:   32,

		Notifications: "webhooks",
		Roles:         []string{"api", "manager", "worker", "projector", "ticker"},
		Tick:          time.Second,

		DispatchWindow: 4096,
		ConnectTimeout: 30 * time.Second,
		OutboxDir:      "jobmill-data/outbox",
		LogLevel:       "info",
		LogFormat:      "text",
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("Default() =\n%+v\nwant\n%+v", d, want)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}

	// Default must not share slices between calls.
	d.Roles[0] = "changed"
	if Default().Roles[0] != "api" {
		t.Fatal("Default() shares its Roles slice between calls")
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name string
		src  source
		want func(*Config) // applied to Default() to get the expected result
	}{
		{
			name: "defaults",
			want: func(*Config) {},
		},
		{
			name: "defaults with empty flag set",
			src:  source{args: []string{}},
			want: func(*Config) {},
		},
		{
			name: "file overrides defaults",
			src: source{file: `
transport: postgres
workers: 8
listen: ":9090"
tick: 250ms
dispatch_window: 16
roles: [api, manager]
sqlite:
  path: /var/lib/jobmill/db.sqlite
postgres:
  url: postgres://jobmill:pw@db:5432/jobmill
kafka:
  brokers: [k1:9092, k2:9092]
  partitions: 3
outbox_dir: /tmp/outbox
log_level: debug
log_format: json
`},
			want: func(c *Config) {
				c.Transport, c.Log, c.Queue, c.Store = "postgres", "postgres", "postgres", "postgres"
				c.Workers = 8
				c.Listen = ":9090"
				c.Tick = 250 * time.Millisecond
				c.DispatchWindow = 16
				c.Roles = []string{"api", "manager"}
				c.SQLite.Path = "/var/lib/jobmill/db.sqlite"
				c.Postgres.URL = "postgres://jobmill:pw@db:5432/jobmill"
				c.Kafka = KafkaConfig{Brokers: []string{"k1:9092", "k2:9092"}, Partitions: 3}
				c.OutboxDir = "/tmp/outbox"
				c.LogLevel = "debug"
				c.LogFormat = "json"
			},
		},
		{
			name: "kafka transport keeps the sqlite store",
			src:  source{file: "transport: kafka\n"},
			want: func(c *Config) {
				c.Transport, c.Log, c.Queue, c.Store = "kafka", "kafka", "kafka", "sqlite"
			},
		},
		{
			name: "amqp transport keeps the sqlite store",
			src:  source{env: []string{"JOBMILL_TRANSPORT=amqp"}},
			want: func(c *Config) {
				c.Transport, c.Log, c.Queue, c.Store = "amqp", "amqp", "amqp", "sqlite"
			},
		},
		{
			name: "explicit log queue and store beat transport",
			src:  source{file: "transport: mysql\nqueue: amqp\nlog: kafka\nstore: sqlite\n"},
			want: func(c *Config) {
				c.Transport, c.Log, c.Queue, c.Store = "mysql", "kafka", "amqp", "sqlite"
			},
		},
		{
			name: "mysql transport sets store",
			src:  source{args: []string{"--transport", "mysql", "--queue", "kafka"}},
			want: func(c *Config) {
				c.Transport, c.Log, c.Queue, c.Store = "mysql", "mysql", "kafka", "mysql"
			},
		},
		{
			name: "empty file and null values change nothing",
			src:  source{file: "# nothing here\nworkers:\nsqlite: {}\n"},
			want: func(*Config) {},
		},
		{
			name: "comma-separated roles in file",
			src:  source{file: "roles: manager, worker\n"},
			want: func(c *Config) { c.Roles = []string{"manager", "worker"} },
		},
		{
			name: "env overrides file",
			src: source{
				file: "workers: 8\nsqlite:\n  path: from-file.db\nroles: [api]\n",
				env: []string{
					"JOBMILL_WORKERS=16",
					"JOBMILL_SQLITE_PATH=from-env.db",
					"JOBMILL_ROLES=manager, worker",
					"JOBMILL_KAFKA_BROKERS=a:9092,b:9092",
					"JOBMILL_POSTGRES_URL=postgres://u:p@pg:5432/db",
					"JOBMILL_DISPATCH_WINDOW=64",
					"JOBMILL_TICK=2s",
					"JOBMILL_LOG_LEVEL=warn",
					"JOBMILL_LOG=postgres",
				},
			},
			want: func(c *Config) {
				c.Workers = 16
				c.SQLite.Path = "from-env.db"
				c.Roles = []string{"manager", "worker"}
				c.Kafka.Brokers = []string{"a:9092", "b:9092"}
				c.Postgres.URL = "postgres://u:p@pg:5432/db"
				c.DispatchWindow = 64
				c.Tick = 2 * time.Second
				c.LogLevel = "warn"
				c.Log = "postgres"
			},
		},
		{
			name: "empty and unknown env variables are ignored",
			src: source{
				file: "workers: 8\n",
				env:  []string{"JOBMILL_WORKERS=", "JOBMILL_NOT_A_KEY=1", "WORKERS=3", "HOME=/root"},
			},
			want: func(c *Config) { c.Workers = 8 },
		},
		{
			name: "flag overrides env",
			src: source{
				file: "workers: 8\ntick: 3s\n",
				env:  []string{"JOBMILL_WORKERS=16", "JOBMILL_ROLES=api", "JOBMILL_SQLITE_PATH=env.db"},
				args: []string{
					"--workers=4", "--roles", "manager,worker", "--sqlite-path", "flag.db",
					"--tick", "50ms", "--dispatch-window", "10", "--listen", "0.0.0.0:80",
					"--transport", "postgres", "--log", "kafka", "--store", "mysql",
				},
			},
			want: func(c *Config) {
				c.Workers = 4
				c.Roles = []string{"manager", "worker"}
				c.SQLite.Path = "flag.db"
				c.Tick = 50 * time.Millisecond
				c.DispatchWindow = 10
				c.Listen = "0.0.0.0:80"
				c.Transport, c.Log, c.Queue, c.Store = "postgres", "kafka", "postgres", "mysql"
			},
		},
		{
			name: "unset flags do not override env or file",
			src: source{
				file: "workers: 8\n",
				env:  []string{"JOBMILL_LISTEN=:7000"},
				args: []string{"--tick", "2s"},
			},
			want: func(c *Config) {
				c.Workers = 8
				c.Listen = ":7000"
				c.Tick = 2 * time.Second
			},
		},
		{
			name: "zero workers allowed without the worker role",
			src:  source{env: []string{"JOBMILL_WORKERS=0", "JOBMILL_ROLES=api,manager"}},
			want: func(c *Config) {
				c.Workers = 0
				c.Roles = []string{"api", "manager"}
			},
		},
		{
			name: "settings of unused backends are not checked",
			src:  source{file: "postgres:\n  url: not a url\nkafka:\n  brokers: []\n"},
			want: func(c *Config) {
				c.Postgres.URL = "not a url"
				c.Kafka.Brokers = []string{}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.src.run(t)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestLoadConfigFileSelection(t *testing.T) {
	fromEnv := writeFile(t, "workers: 5\n")
	fromFlag := writeFile(t, "workers: 6\n")
	explicit := writeFile(t, "workers: 7\n")

	tests := []struct {
		name string
		file string
		args []string
		want int
	}{
		{"JOBMILL_CONFIG names the file", "", nil, 5},
		{"--config beats JOBMILL_CONFIG", "", []string{"--config", fromFlag}, 6},
		{"explicit file beats --config", explicit, []string{"--config", fromFlag}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fs *pflag.FlagSet
			if tt.args != nil {
				fs = pflag.NewFlagSet("jobmill", pflag.ContinueOnError)
				RegisterFlags(fs)
				if err := fs.Parse(tt.args); err != nil {
					t.Fatal(err)
				}
			}
			env := func() []string { return []string{"JOBMILL_CONFIG=" + fromEnv} }
			got, err := load(tt.file, fs, env)
			if err != nil {
				t.Fatal(err)
			}
			if got.Workers != tt.want {
				t.Fatalf("workers = %d, want %d", got.Workers, tt.want)
			}
		})
	}
}

// TestLoadProcessEnvironment covers the exported entry point, which reads
// the real environment.
func TestLoadProcessEnvironment(t *testing.T) {
	t.Setenv("JOBMILL_CONFIG", writeFile(t, "workers: 9\nlisten: 127.0.0.1:9999\n"))
	t.Setenv("JOBMILL_WORKERS", "11")
	got, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Workers != 11 || got.Listen != "127.0.0.1:9999" {
		t.Fatalf("workers=%d listen=%q, want 11 and 127.0.0.1:9999", got.Workers, got.Listen)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		src     source
		key     string // expected Error.Key; "<file>" stands for the file's path
		problem string // substring of Error.Problem
	}{
		// Validation of each key.
		{"zero workers with worker role", source{file: "workers: 0\n"}, "workers", "must be at least 1 (got 0)"},
		{"negative workers", source{env: []string{"JOBMILL_WORKERS=-1", "JOBMILL_ROLES=api"}}, "workers", "must be at least 0 (got -1)"},
		{"bad transport", source{file: "transport: redis\n"}, "transport", `must be one of sqlite, postgres, mysql, kafka, amqp (got "redis")`},
		{"bad log", source{args: []string{"--log", "file"}}, "log", `(got "file")`},
		{"bad queue", source{env: []string{"JOBMILL_QUEUE=nats"}}, "queue", `(got "nats")`},
		{"store cannot be kafka", source{file: "store: kafka\n"}, "store", `must be one of sqlite, postgres, mysql (got "kafka")`},
		{"empty sqlite path", source{args: []string{"--sqlite-path", ""}}, "sqlite.path", "must not be empty"},
		{"postgres url scheme", source{file: "transport: postgres\npostgres:\n  url: mysql://u@h/db\n"}, "postgres.url", "scheme is mysql"},
		{"postgres url empty", source{file: "store: postgres\npostgres:\n  url: ''\n"}, "postgres.url", "not empty"},
		{"postgres url invalid", source{file: "transport: postgres\npostgres:\n  url: 'postgres://u:p@h:port/db'\n"}, "postgres.url", "is not a valid URL"},
		{"mysql dsn without slash", source{file: "transport: mysql\nmysql:\n  dsn: root@tcp(h:3306)\n"}, "mysql.dsn", `missing "/"`},
		{"mysql dsn empty", source{env: []string{"JOBMILL_STORE=mysql"}, args: []string{}, file: "mysql: {dsn: ''}\n"}, "mysql.dsn", "must not be empty"},
		{"amqp url scheme", source{file: "queue: amqp\namqp:\n  url: http://h/\n"}, "amqp.url", "scheme is http"},
		{"kafka no brokers", source{file: "transport: kafka\nkafka:\n  brokers: []\n"}, "kafka.brokers", "at least one broker"},
		{"kafka broker without port", source{env: []string{"JOBMILL_LOG=kafka", "JOBMILL_KAFKA_BROKERS=a:9092,b"}}, "kafka.brokers", `entry 2 "b" must be host:port`},
		{"kafka partitions", source{file: "kafka:\n  partitions: 0\n"}, "kafka.partitions", "must be at least 1 (got 0)"},
		{"listen without port", source{args: []string{"--listen", "localhost"}}, "listen", "must be host:port"},
		{"no roles", source{file: "roles: []\n"}, "roles", "must name at least one"},
		{"unknown role", source{args: []string{"--roles", "api,scheduler"}}, "roles", `unknown role "scheduler"`},
		{"duplicate role", source{env: []string{"JOBMILL_ROLES=api,api"}}, "roles", `role "api" is listed twice`},
		{"tick too short", source{args: []string{"--tick", "5ms"}}, "tick", "must be at least 10ms (got 5ms)"},
		{"dispatch window", source{file: "dispatch_window: 0\n"}, "dispatch_window", "must be at least 1 (got 0)"},
		{"empty outbox dir", source{env: []string{"JOBMILL_OUTBOX_DIR= "}}, "outbox_dir", "must not be empty"},
		{"bad log level", source{file: "log_level: verbose\n"}, "log_level", `must be one of debug, info, warn, error (got "verbose")`},
		{"bad log format", source{file: "log_format: xml\n"}, "log_format", `must be one of text, json (got "xml")`},
		{"bad notifications", source{args: []string{"--notifications", "email"}}, "notifications", `must be one of webhooks, log, off (got "email")`},
		{"bad auth", source{env: []string{"JOBMILL_AUTH=maybe"}}, "auth", `must be one of required, off (got "maybe")`},
		{"auth off on every interface", source{args: []string{"--auth", "off", "--listen", "0.0.0.0:8080"}}, "auth", "allowed only on a loopback"},
		{"auth off with empty host", source{file: "auth: off\nlisten: ':8080'\n"}, "auth", "allowed only on a loopback"},
		{"auth off on a public address", source{env: []string{"JOBMILL_AUTH=off", "JOBMILL_LISTEN=10.1.2.3:80"}}, "auth", "loopback"},
		{"rate limit", source{file: "api:\n  rate_limit: 0\n"}, "api.rate_limit", "at least 1"},

		// Problems in the file.
		{"unknown key", source{file: "workers: 4\nbogus: 1\n"}, "bogus", "unknown key in jobmill.yaml"},
		{"unknown nested key", source{file: "sqlite:\n  path: a.db\n  journal: wal\n"}, "sqlite.journal", "unknown key"},
		{"misspelt key gets a suggestion", source{file: "dispatch-window: 4\n"}, "dispatch-window", `did you mean "dispatch_window"?`},
		{"section given a scalar", source{file: "kafka: localhost:9092\n"}, "kafka", "must be a mapping"},
		{"malformed YAML", source{file: "workers: 4\nroles: [api\nlisten: x\n"}, "<file>", "malformed YAML: line"},
		{"YAML not a mapping", source{file: "- a\n- b\n"}, "<file>", "malformed YAML: line 1"},
		{"non-numeric workers in file", source{file: "workers: many\n"}, "workers", `must be an integer (got "many"), in jobmill.yaml`},
		{"fractional workers in file", source{file: "workers: 1.5\n"}, "workers", "must be an integer (got 1.5)"},
		{"bare number tick in file", source{file: "tick: 5\n"}, "tick", "must be a duration"},
		{"list for a string key", source{file: "listen: [a, b]\n"}, "listen", "must be a single value, not a list"},
		{"mapping inside a list", source{file: "roles:\n  - {name: api}\n"}, "roles", "entry 1 is a mapping"},

		// Problems in the environment name the variable.
		{"non-numeric JOBMILL_WORKERS", source{env: []string{"JOBMILL_WORKERS=lots"}}, "JOBMILL_WORKERS", `must be an integer (got "lots")`},
		{"bad JOBMILL_TICK", source{env: []string{"JOBMILL_TICK=fast"}}, "JOBMILL_TICK", "must be a duration"},
		{"bad JOBMILL_KAFKA_PARTITIONS", source{env: []string{"JOBMILL_KAFKA_PARTITIONS=x"}}, "JOBMILL_KAFKA_PARTITIONS", "must be an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.src.run(t)
			if err == nil {
				t.Fatal("load succeeded, want an error")
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if tt.key == "<file>" {
				if filepath.Base(ce.Key) != "jobmill.yaml" {
					t.Fatalf("key = %q, want the file path", ce.Key)
				}
			} else if ce.Key != tt.key {
				t.Fatalf("key = %q, want %q (error: %v)", ce.Key, tt.key, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "invalid configuration: "+ce.Key+": ") {
				t.Errorf("message %q does not start with the key", msg)
			}
			if !strings.Contains(ce.Problem, tt.problem) {
				t.Errorf("problem %q does not contain %q", ce.Problem, tt.problem)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("message spans several lines: %q", msg)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	c := Default()
	c.Workers = 0
	err := c.Validate()
	const want = `invalid configuration: workers: must be at least 1 (got 0); 0 is allowed only when role "worker" is not enabled`
	if err == nil || err.Error() != want {
		t.Fatalf("Validate() = %v, want %s", err, want)
	}
	if !strings.HasPrefix(want, "invalid configuration: workers: must be at least 1 (got 0)") {
		t.Fatal("unexpected message form")
	}
}

func TestLoadMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.yaml")
	_, err := load(missing, nil, func() []string { return nil })
	var ce *Error
	if !errors.As(err, &ce) || ce.Key != missing || !strings.Contains(ce.Problem, "cannot read file") {
		t.Fatalf("load(missing) = %v, want a cannot-read error naming the file", err)
	}
}

func TestValidationErrorsHideSecrets(t *testing.T) {
	tests := []struct {
		name string
		mut  func(*Config)
	}{
		{"postgres wrong scheme", func(c *Config) {
			c.Store = "postgres"
			c.Postgres.URL = "mysql://admin:s3cr3t@db/x"
		}},
		{"postgres bad port", func(c *Config) {
			c.Store = "postgres"
			c.Postgres.URL = "postgres://admin:s3cr3t@db:port/x"
		}},
		{"amqp wrong scheme", func(c *Config) {
			c.Queue = "amqp"
			c.AMQP.URL = "http://admin:s3cr3t@mq/"
		}},
		{"mysql no slash", func(c *Config) {
			c.Store = "mysql"
			c.MySQL.DSN = "admin:s3cr3t@tcp(db)"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mut(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate succeeded, want an error")
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	tests := []struct {
		name string
		set  func(*Config, string)
		get  func(Config) string
		in   string
		want string
	}{
		{"postgres url", setPostgres, getPostgres,
			"postgres://jobmill:s3cr3t@db:5432/jobmill?sslmode=disable",
			"postgres://jobmill:xxxxx@db:5432/jobmill?sslmode=disable"},
		{"postgres url escaped password", setPostgres, getPostgres,
			"postgres://jobmill:s3cr%2Ft@db/jobmill",
			"postgres://jobmill:xxxxx@db/jobmill"},
		{"postgres password query parameter", setPostgres, getPostgres,
			"postgres://db/jobmill?user=jobmill&password=s3cr3t&sslmode=require",
			"postgres://db/jobmill?user=jobmill&password=xxxxx&sslmode=require"},
		{"postgres unparsable url", setPostgres, getPostgres,
			"postgres://jobmill:s3c%zzr3t@db/jobmill",
			"postgres://jobmill:xxxxx@db/jobmill"},
		{"postgres without password", setPostgres, getPostgres,
			"postgres://postgres@127.0.0.1:5432/postgres",
			"postgres://postgres@127.0.0.1:5432/postgres"},
		{"amqp url", setAMQP, getAMQP,
			"amqp://guest:s3cr3t@127.0.0.1:5672/",
			"amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"amqps url with vhost", setAMQP, getAMQP,
			"amqps://app:s3cr3t@mq.example:5671/prod",
			"amqps://app:xxxxx@mq.example:5671/prod"},
		{"mysql dsn", setMySQL, getMySQL,
			"jobmill:s3cr3t@tcp(127.0.0.1:3306)/jobmill?parseTime=true",
			"jobmill:xxxxx@tcp(127.0.0.1:3306)/jobmill?parseTime=true"},
		{"mysql dsn password with @ : and /", setMySQL, getMySQL,
			"jobmill:s3c@r:3/t@tcp(db:3306)/jobmill",
			"jobmill:xxxxx@tcp(db:3306)/jobmill"},
		{"mysql dsn without password", setMySQL, getMySQL,
			"root@tcp(127.0.0.1:3306)/test",
			"root@tcp(127.0.0.1:3306)/test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.set(&c, tt.in)
			r := c.Redacted()
			if got := tt.get(r); got != tt.want {
				t.Errorf("redacted = %q, want %q", got, tt.want)
			}
			if got := tt.get(c); got != tt.in {
				t.Errorf("Redacted modified the original: %q", got)
			}
			if strings.Contains(tt.get(r), "s3c") {
				t.Errorf("redacted value still holds the password: %q", tt.get(r))
			}
		})
	}
}

func setPostgres(c *Config, s string) { c.Postgres.URL = s }
func getPostgres(c Config) string     { return c.Postgres.URL }
func setAMQP(c *Config, s string)     { c.AMQP.URL = s }
func getAMQP(c Config) string         { return c.AMQP.URL }
func setMySQL(c *Config, s string)    { c.MySQL.DSN = s }
func getMySQL(c Config) string        { return c.MySQL.DSN }

func TestRedactedCopiesSlices(t *testing.T) {
	c := Default()
	r := c.Redacted()
	r.Roles[0] = "changed"
	r.Kafka.Brokers[0] = "changed"
	if c.Roles[0] != "api" || c.Kafka.Brokers[0] != "127.0.0.1:9092" {
		t.Fatal("Redacted shares slices with the original")
	}
}

func TestLogValueHidesSecrets(t *testing.T) {
	c := Default()
	c.Postgres.URL = "postgres://u:s3cr3t@db/x"
	c.AMQP.URL = "amqp://u:s3cr3t@mq/"
	c.MySQL.DSN = "u:s3cr3t@tcp(db)/x"
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", c)
	out := buf.String()
	if strings.Contains(out, "s3cr3t") {
		t.Fatalf("log line leaks a password: %s", out)
	}
	for _, want := range []string{`"workers":32`, `"postgres.url":"postgres://u:xxxxx@db/x"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log line %s lacks %s", out, want)
		}
	}
}

func TestHasRole(t *testing.T) {
	c := Config{Roles: []string{RoleManager, RoleWorker}}
	for role, want := range map[string]bool{
		RoleManager: true, RoleWorker: true, RoleAPI: false, RoleTicker: false, "": false,
	} {
		if got := c.HasRole(role); got != want {
			t.Errorf("HasRole(%q) = %v, want %v", role, got, want)
		}
	}
}

func TestRegisterFlags(t *testing.T) {
	fs := pflag.NewFlagSet("jobmill", pflag.ContinueOnError)
	RegisterFlags(fs)

	d := Default()
	defaults := map[string]string{
		"config":          "",
		"transport":       d.Transport,
		"log":             "",
		"queue":           "",
		"store":           "",
		"sqlite-path":     d.SQLite.Path,
		"listen":          d.Listen,
		"workers":         "32",
		"roles":           "[api,manager,worker,projector,ticker]",
		"tick":            "1s",
		"dispatch-window": "4096",
	}
	for name, want := range defaults {
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("flag --%s not registered", name)
			continue
		}
		if f.DefValue != want {
			t.Errorf("--%s default = %q, want %q", name, f.DefValue, want)
		}
		if f.Usage == "" {
			t.Errorf("--%s has no help text", name)
		}
	}
	// Every flag that sets a key must be registered, and vice versa.
	for name, key := range flagKeys {
		if fs.Lookup(name) == nil {
			t.Errorf("flag --%s (key %s) not registered", name, key)
		}
		if _, ok := fieldByKey[key]; !ok {
			t.Errorf("flag --%s maps to unknown key %q", name, key)
		}
	}
}

// TestEveryFieldIsLoadable guards against a Config field that no source can
// set, e.g. one added without a koanf tag.
func TestEveryFieldIsLoadable(t *testing.T) {
	want := []string{
		"amqp.url", "api.allowed_origins", "api.rate_limit", "auth", "connect_timeout", "notifications", "dispatch_window", "kafka.brokers", "kafka.partitions", "listen", "log",
		"log_format", "log_level", "mysql.dsn", "outbox_dir", "postgres.url", "queue", "roles",
		"sqlite.path", "store", "tick", "transport", "workers",
	}
	var got []string
	for k := range fieldByKey {
		got = append(got, k)
	}
	if len(got) != len(want) {
		t.Fatalf("keys = %v, want %v", got, want)
	}
	for _, k := range want {
		if _, ok := fieldByKey[k]; !ok {
			t.Errorf("key %q is not loadable", k)
		}
		if envKeys[envName(k)] != k {
			t.Errorf("no environment variable for %q", k)
		}
	}
}

func TestAuthOffOnLoopback(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:8080", "localhost:9000", "[::1]:8080"} {
		c, err := source{env: []string{"JOBMILL_AUTH=off", "JOBMILL_LISTEN=" + listen}}.run(t)
		if err != nil {
			t.Fatalf("auth off on %s: %v", listen, err)
		}
		if c.Auth != AuthOff {
			t.Fatalf("auth = %q, want off", c.Auth)
		}
	}
	// Off is fine on any address when this process serves no API.
	if _, err := (source{env: []string{"JOBMILL_AUTH=off", "JOBMILL_LISTEN=0.0.0.0:8080", "JOBMILL_ROLES=worker"}}).run(t); err != nil {
		t.Fatalf("auth off without the api role: %v", err)
	}
}
