package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// minTick keeps a mistyped tick from turning the ticker into a busy loop.
const minTick = 10 * time.Millisecond

// Validate checks every key against its allowed values and returns the first
// problem found, as an *Error, or nil. Connection settings are checked only
// for backends the log, queue or store use. Combinations that are valid but
// that the engine cannot run yet pass here; the engine reports those itself.
//
// Error messages never include connection strings, which may hold secrets.
func (c Config) Validate() error {
	if err := c.validate(); err != nil {
		return err
	}
	// Returned separately so a nil *Error never becomes a non-nil error.
	return nil
}

func (c Config) validate() *Error {
	if err := oneOf("transport", c.Transport, transportBackends); err != nil {
		return err
	}
	if err := oneOf("log", c.Log, transportBackends); err != nil {
		return err
	}
	if err := oneOf("queue", c.Queue, transportBackends); err != nil {
		return err
	}
	if err := oneOf("store", c.Store, storeBackends); err != nil {
		return err
	}

	if c.uses(BackendSQLite) && strings.TrimSpace(c.SQLite.Path) == "" {
		return &Error{Key: "sqlite.path", Problem: "must not be empty when a backend is sqlite"}
	}
	if c.uses(BackendPostgres) {
		if err := checkURL("postgres.url", c.Postgres.URL, "postgres", "postgresql"); err != nil {
			return err
		}
	}
	if c.uses(BackendMySQL) {
		switch {
		case strings.TrimSpace(c.MySQL.DSN) == "":
			return &Error{Key: "mysql.dsn", Problem: "must not be empty when a backend is mysql"}
		case !strings.Contains(c.MySQL.DSN, "/"):
			// The driver needs the "/" before the database name even when
			// the name is empty; catching it here names the key.
			return &Error{Key: "mysql.dsn", Problem: `must have the form [user[:password]@][net[(addr)]]/dbname[?params] (missing "/")`}
		}
	}
	if c.uses(BackendAMQP) {
		if err := checkURL("amqp.url", c.AMQP.URL, "amqp", "amqps"); err != nil {
			return err
		}
	}
	if c.uses(BackendKafka) {
		if len(c.Kafka.Brokers) == 0 {
			return &Error{Key: "kafka.brokers", Problem: "must list at least one broker when a backend is kafka"}
		}
		for i, b := range c.Kafka.Brokers {
			if err := checkHostPort(b); err != nil {
				return &Error{Key: "kafka.brokers", Problem: fmt.Sprintf("entry %d %q %s", i+1, b, err)}
			}
		}
	}
	if c.Kafka.Partitions < 1 {
		return &Error{Key: "kafka.partitions", Problem: fmt.Sprintf("must be at least 1 (got %d)", c.Kafka.Partitions)}
	}

	if err := checkHostPort(c.Listen); err != nil {
		return &Error{Key: "listen", Problem: fmt.Sprintf("%s (got %q)", err, c.Listen)}
	}

	if err := oneOf("notifications", c.Notifications, notifyModes); err != nil {
		return err
	}
	if err := oneOf("auth", c.Auth, authModes); err != nil {
		return err
	}
	if c.Auth == AuthOff && c.HasRole(RoleAPI) && !isLoopback(c.Listen) {
		return &Error{Key: "auth", Problem: fmt.Sprintf("off is allowed only on a loopback listen address (listen is %q): "+
			"create a token with `jobmill token create --tenant NAME` and keep auth required", c.Listen)}
	}
	if c.API.RateLimit < 1 {
		return &Error{Key: "api.rate_limit", Problem: fmt.Sprintf("must be at least 1 request per second (got %d)", c.API.RateLimit)}
	}

	if len(c.Roles) == 0 {
		return &Error{Key: "roles", Problem: "must name at least one of " + strings.Join(allRoles, ", ")}
	}
	for i, r := range c.Roles {
		if !slices.Contains(allRoles, r) {
			return &Error{Key: "roles", Problem: fmt.Sprintf("unknown role %q (allowed: %s)", r, strings.Join(allRoles, ", "))}
		}
		if slices.Contains(c.Roles[:i], r) {
			return &Error{Key: "roles", Problem: fmt.Sprintf("role %q is listed twice", r)}
		}
	}

	minWorkers := 0
	if c.HasRole(RoleWorker) {
		minWorkers = 1
	}
	if c.Workers < minWorkers {
		p := fmt.Sprintf("must be at least %d (got %d)", minWorkers, c.Workers)
		if minWorkers == 1 && c.Workers == 0 {
			p += `; 0 is allowed only when role "worker" is not enabled`
		}
		return &Error{Key: "workers", Problem: p}
	}

	if c.Tick < minTick {
		return &Error{Key: "tick", Problem: fmt.Sprintf("must be at least %s (got %s)", minTick, c.Tick)}
	}
	if c.ConnectTimeout < 0 {
		return &Error{Key: "connect_timeout", Problem: fmt.Sprintf("must not be negative (got %s)", c.ConnectTimeout)}
	}
	if c.DispatchWindow < 1 {
		return &Error{Key: "dispatch_window", Problem: fmt.Sprintf("must be at least 1 (got %d)", c.DispatchWindow)}
	}
	if strings.TrimSpace(c.OutboxDir) == "" {
		return &Error{Key: "outbox_dir", Problem: "must not be empty"}
	}
	if err := oneOf("log_level", c.LogLevel, logLevels); err != nil {
		return err
	}
	if err := oneOf("log_format", c.LogFormat, logFormats); err != nil {
		return err
	}
	return nil
}

func oneOf(key, value string, allowed []string) *Error {
	if slices.Contains(allowed, value) {
		return nil
	}
	return &Error{Key: key, Problem: fmt.Sprintf("must be one of %s (got %q)", strings.Join(allowed, ", "), value)}
}

// checkURL checks that raw is a URL with one of the given schemes. It never
// quotes raw, which may contain a password.
func checkURL(key, raw string, schemes ...string) *Error {
	want := "a URL starting with " + strings.Join(schemes, ":// or ") + "://"
	if strings.TrimSpace(raw) == "" {
		return &Error{Key: key, Problem: "must be " + want + ", not empty"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL; keep only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &Error{Key: key, Problem: "is not a valid URL: " + err.Error()}
	}
	if !slices.Contains(schemes, u.Scheme) {
		got := u.Scheme
		if got == "" {
			got = "none"
		}
		return &Error{Key: key, Problem: fmt.Sprintf("must be %s (scheme is %s)", want, got)}
	}
	return nil
}

// checkHostPort checks a host:port address; the host may be empty (all
// interfaces) but the port may not.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Errorf("must be host:port: %s", ae.Err)
		}
		return fmt.Errorf("must be host:port")
	}
	if port == "" {
		return fmt.Errorf("must be host:port: missing port")
	}
	return nil
}

// isLoopback reports whether a listen address accepts only local connections. An empty host (":8080")
// listens on every interface, so it is not loopback.
func isLoopback(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
