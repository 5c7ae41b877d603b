package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// EnvPrefix starts the name of every environment variable Load reads.
const EnvPrefix = "JOBMILL_"

// EnvConfigFile names the environment variable that points Load at a YAML
// file when no file is given explicitly.
const EnvConfigFile = EnvPrefix + "CONFIG"

// flagKeys maps each flag RegisterFlags defines to the key it sets. It is
// explicit because flag names use "-" where keys use "." or "_".
var flagKeys = map[string]string{
	"transport":        "transport",
	"log":              "log",
	"queue":            "queue",
	"store":            "store",
	"sqlite-path":      "sqlite.path",
	"listen":           "listen",
	"auth":             "auth",
	"notifications":    "notifications",
	"workers":          "workers",
	"roles":            "roles",
	"tick":             "tick",
	"dispatch-window":  "dispatch_window",
	"outbox-dir":       "outbox_dir",
	"log-level":        "log_level",
	"log-format":       "log_format",
	"postgres-url":     "postgres.url",
	"mysql-dsn":        "mysql.dsn",
	"amqp-url":         "amqp.url",
	"kafka-brokers":    "kafka.brokers",
	"connect-timeout":  "connect_timeout",
	"kafka-partitions": "kafka.partitions",
}

// RegisterFlags defines jobmill's configuration flags on fs, so every
// command shares the same names, defaults and help. Pass the same FlagSet to
// Load after parsing; only flags the user actually set take effect there, so
// the defaults shown in help never mask the file or the environment.
func RegisterFlags(fs *pflag.FlagSet) {
	d := Default()
	backends := strings.Join(transportBackends, "|")
	fs.String("config", "", "YAML configuration file (default $"+EnvConfigFile+")")
	fs.String("transport", d.Transport, "backend for both event log and work queue: "+backends)
	fs.String("log", "", "event log backend, overriding --transport: "+backends)
	fs.String("queue", "", "work queue backend, overriding --transport: "+backends)
	fs.String("store", "", "job store backend: "+strings.Join(storeBackends, "|")+
		" (default: the transport if it is postgres or mysql, else sqlite)")
	fs.String("sqlite-path", d.SQLite.Path, "SQLite database file")
	fs.String("listen", d.Listen, "host:port the HTTP API listens on")
	fs.String("notifications", d.Notifications, "how notifications are delivered: webhooks|log|off")
	fs.String("auth", d.Auth, "whether API requests need a token: required|off (off only on a loopback address)")
	fs.Int("workers", d.Workers, "concurrent sub-job executions in this process")
	fs.StringSlice("roles", d.Roles, "roles this process runs: "+strings.Join(allRoles, ","))
	fs.Duration("tick", d.Tick, "periodic tick interval (at least 10ms)")
	fs.Int("dispatch-window", d.DispatchWindow, "maximum sub-jobs in flight per job")
	fs.String("outbox-dir", d.OutboxDir, "folder the built-in invoices job type writes its emails to")
	fs.String("log-level", d.LogLevel, "debug|info|warn|error")
	fs.String("log-format", d.LogFormat, "text|json")
	fs.String("postgres-url", d.Postgres.URL, "PostgreSQL connection URL")
	fs.String("mysql-dsn", d.MySQL.DSN, "MySQL/MariaDB DSN (go-sql-driver format)")
	fs.String("amqp-url", d.AMQP.URL, "RabbitMQ URL")
	fs.StringSlice("kafka-brokers", d.Kafka.Brokers, "Kafka bootstrap brokers")
	fs.Duration("connect-timeout", d.ConnectTimeout, "how long start-up retries an unreachable database or broker")
	fs.Int("kafka-partitions", d.Kafka.Partitions, "partitions of the Kafka topics jobmill creates")
}

// Load builds the configuration from defaults, then the YAML file, then
// JOBMILL_* environment variables, then flags, and validates the result.
//
// If file is empty, a changed --config flag in flags names the file, else
// the JOBMILL_CONFIG environment variable does, else no file is read. A
// named file must exist. flags may be nil; only flags whose Changed is set
// override. Environment variables are named JOBMILL_ plus the key in upper
// case with "." replaced by "_" (JOBMILL_WORKERS, JOBMILL_SQLITE_PATH,
// JOBMILL_DISPATCH_WINDOW); list values are comma-separated
// (JOBMILL_ROLES=manager,worker). Variables set to the empty string are
// ignored, and so are JOBMILL_* variables that name no key, as the
// environment is shared with other tools.
//
// Log and Queue default to Transport; Store defaults to Transport when that
// is postgres or mysql, and to sqlite otherwise.
//
// Every error is an *Error.
func Load(file string, flags *pflag.FlagSet) (Config, error) {
	return load(file, flags, os.Environ)
}

// load is Load with the environment injected, so tests do not depend on the
// JOBMILL_* variables of the machine they run on.
func load(path string, flags *pflag.FlagSet, environ func() []string) (Config, error) {
	c := unresolvedDefault()

	if path == "" && flags != nil {
		if f := flags.Lookup("config"); f != nil && f.Changed {
			path = f.Value.String()
		}
	}
	if path == "" {
		path = lookupEnv(environ, EnvConfigFile)
	}
	if path != "" {
		if err := loadFile(&c, path); err != nil {
			return Config{}, err
		}
	}
	if err := loadEnv(&c, environ); err != nil {
		return Config{}, err
	}
	if flags != nil {
		if err := loadFlags(&c, flags); err != nil {
			return Config{}, err
		}
	}

	c.resolve()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func lookupEnv(environ func() []string, name string) string {
	for _, kv := range environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// loadFile applies the YAML file at path to c. Unknown keys are errors
// because a misspelt key would otherwise be silently ignored.
func loadFile(c *Config, path string) error {
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return &Error{Key: path, Problem: "cannot read file: " + pe.Err.Error()}
		}
		// yaml errors already carry the line ("yaml: line 3: ..."), but
		// some span several lines; keep the message on one.
		msg := strings.Join(strings.Fields(err.Error()), " ")
		msg = strings.TrimPrefix(msg, "yaml: ")
		msg = strings.TrimPrefix(msg, "unmarshal errors: ")
		msg = strings.ReplaceAll(msg, "into map[string]interface {}", "into a mapping of keys")
		return &Error{Key: path, Problem: "malformed YAML: " + msg}
	}

	name := filepath.Base(path)
	values := k.All()
	for _, key := range sortedKeys(values) {
		raw := values[key]
		if raw == nil {
			// "key:" with no value reads as null; treat it as unset.
			continue
		}
		f, ok := fieldByKey[key]
		if !ok {
			if sections[key] {
				if m, isMap := raw.(map[string]any); isMap && len(m) == 0 {
					continue
				}
				return &Error{Key: key, Problem: "must be a mapping of keys, in " + name}
			}
			return &Error{Key: key, Problem: "unknown key in " + name + suggest(key)}
		}
		if err := f.set(c, raw); err != nil {
			return &Error{Key: key, Problem: err.Error() + ", in " + name}
		}
	}
	return nil
}

// suggest offers the known key a near miss such as "Workers" or
// "dispatch-window" was probably meant to be.
func suggest(key string) string {
	norm := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	if _, ok := fieldByKey[norm]; ok {
		return fmt.Sprintf(" (did you mean %q?)", norm)
	}
	return ""
}

// loadEnv applies JOBMILL_* environment variables to c.
func loadEnv(c *Config, environ func() []string) error {
	k := koanf.New(".")
	p := env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: environ,
		TransformFunc: func(name, value string) (string, any) {
			key, ok := envKeys[name]
			if !ok || value == "" {
				return "", nil
			}
			return key, value
		},
	})
	if err := k.Load(p, nil); err != nil {
		return &Error{Key: EnvPrefix + "*", Problem: err.Error()}
	}
	values := k.All()
	for _, key := range sortedKeys(values) {
		if err := fieldByKey[key].set(c, values[key]); err != nil {
			return &Error{Key: envName(key), Problem: err.Error()}
		}
	}
	return nil
}

// loadFlags applies the flags the user set to c. Flags that are not
// configuration flags (e.g. a command's own) are ignored.
func loadFlags(c *Config, flags *pflag.FlagSet) error {
	k := koanf.New(".")
	// A nil koanf makes posflag skip every flag that was not Changed.
	p := posflag.ProviderWithFlag(flags, ".", nil, func(f *pflag.Flag) (string, any) {
		key, ok := flagKeys[f.Name]
		if !ok {
			return "", nil
		}
		return key, posflag.FlagVal(flags, f)
	})
	if err := k.Load(p, nil); err != nil {
		return &Error{Key: "flags", Problem: err.Error()}
	}
	values := k.All()
	for _, key := range sortedKeys(values) {
		if err := fieldByKey[key].set(c, values[key]); err != nil {
			return &Error{Key: "--" + flagName(key), Problem: err.Error()}
		}
	}
	return nil
}

func flagName(key string) string {
	for name, k := range flagKeys {
		if k == key {
			return name
		}
	}
	return key
}

// envName is the environment variable that sets key.
func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// field is one settable leaf of Config, found by reflection so that adding a
// field with a koanf tag is enough to make it loadable from every source.
type field struct {
	index []int
	typ   reflect.Type
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	// fieldByKey maps every leaf key ("workers", "sqlite.path") to its field.
	fieldByKey = map[string]field{}
	// sections holds the keys of nested structs ("sqlite", "kafka").
	sections = map[string]bool{}
	// envKeys maps environment variable names to keys. Matching whole names
	// against known keys resolves the "_" ambiguity: JOBMILL_DISPATCH_WINDOW
	// is dispatch_window while JOBMILL_SQLITE_PATH is sqlite.path.
	envKeys = map[string]string{}
)

func init() {
	collectFields(reflect.TypeFor[Config](), nil, "")
	for key := range fieldByKey {
		envKeys[envName(key)] = key
	}
}

func collectFields(t reflect.Type, index []int, prefix string) {
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("koanf")
		if tag == "" || !sf.IsExported() {
			continue
		}
		key := prefix + tag
		idx := append(slices.Clone(index), i)
		if sf.Type.Kind() == reflect.Struct {
			sections[key] = true
			collectFields(sf.Type, idx, key+".")
			continue
		}
		fieldByKey[key] = field{index: idx, typ: sf.Type}
	}
}

// set converts raw, as produced by the YAML parser, the environment or a
// flag, to the field's type and stores it in c. The error describes the
// problem without naming the key; callers add the name fitting the source.
func (f field) set(c *Config, raw any) error {
	v := reflect.ValueOf(c).Elem().FieldByIndex(f.index)
	switch {
	case f.typ == durationType:
		d, err := toDuration(raw)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
	case f.typ.Kind() == reflect.String:
		s, err := toString(raw)
		if err != nil {
			return err
		}
		v.SetString(s)
	case f.typ.Kind() == reflect.Int:
		n, err := toInt(raw)
		if err != nil {
			return err
		}
		v.SetInt(int64(n))
	case f.typ.Kind() == reflect.Slice && f.typ.Elem().Kind() == reflect.String:
		l, err := toStrings(raw)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(l))
	default:
		// Only reachable if Config gains a field of a type not handled above.
		return fmt.Errorf("has unsupported type %s", f.typ)
	}
	return nil
}

// toString accepts any scalar, since YAML users rarely quote values such as
// a numeric directory name.
func toString(raw any) (string, error) {
	switch v := raw.(type) {
	case string:
		return v, nil
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(v), nil
	}
	return "", fmt.Errorf("must be a single value, not %s", describe(raw))
}

func toInt(raw any) (int, error) {
	switch v := raw.(type) {
	case int:
		return v, nil
	case int64:
		if v >= math.MinInt && v <= math.MaxInt {
			return int(v), nil
		}
	case uint64:
		if v <= math.MaxInt {
			return int(v), nil
		}
	case float64:
		if v == math.Trunc(v) && v >= math.MinInt && v <= math.MaxInt {
			return int(v), nil
		}
	case string:
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("must be an integer (got %s)", describe(raw))
}

// toDuration rejects bare numbers: "tick: 5" has no unit, and guessing
// seconds or nanoseconds would be wrong half the time.
func toDuration(raw any) (time.Duration, error) {
	switch v := raw.(type) {
	case time.Duration:
		return v, nil
	case string:
		if d, err := time.ParseDuration(strings.TrimSpace(v)); err == nil {
			return d, nil
		}
	}
	return 0, fmt.Errorf("must be a duration such as 500ms or 2s (got %s)", describe(raw))
}

// toStrings accepts a list, or a comma-separated string as environment
// variables and YAML one-liners naturally give.
func toStrings(raw any) ([]string, error) {
	switch v := raw.(type) {
	case string:
		var out []string
		for s := range strings.SplitSeq(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	case []string:
		out := make([]string, len(v))
		for i, s := range v {
			out[i] = strings.TrimSpace(s)
		}
		return out, nil
	case []any:
		out := make([]string, len(v))
		for i, e := range v {
			s, err := toString(e)
			if err != nil {
				return nil, fmt.Errorf("must be a list of strings (entry %d is %s)", i+1, describe(e))
			}
			out[i] = strings.TrimSpace(s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("must be a list of strings (got %s)", describe(raw))
}

// describe renders a rejected value for an error message: scalars quoted,
// structures by kind only, to keep messages on one short line.
func describe(raw any) string {
	switch v := raw.(type) {
	case nil:
		return "nothing"
	case string:
		return strconv.Quote(v)
	case map[string]any:
		return "a mapping"
	case []any, []string:
		return "a list"
	default:
		return fmt.Sprint(v)
	}
}
