package config

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// redactedPassword replaces passwords; it matches what url.URL.Redacted uses.
const redactedPassword = "xxxxx"

// passwordParam matches password parameters in a URL query or a libpq
// key=value string, quoted or not.
var passwordParam = regexp.MustCompile(`(?i)\b((?:ssl)?password=)('(?:[^'\\]|\\.)*'|[^\s&]*)`)

// Redacted returns a copy of c with every password in postgres.url,
// amqp.url and mysql.dsn replaced by "xxxxx", fit for logs and error
// reports. c itself is not modified. Malformed values are redacted on a
// best-effort basis rather than passed through.
func (c Config) Redacted() Config {
	r := c
	r.Roles = slices.Clone(c.Roles)
	r.Kafka.Brokers = slices.Clone(c.Kafka.Brokers)
	r.Postgres.URL = passwordParam.ReplaceAllString(redactURL(c.Postgres.URL), "${1}"+redactedPassword)
	r.AMQP.URL = redactURL(c.AMQP.URL)
	r.MySQL.DSN = redactMySQLDSN(c.MySQL.DSN)
	return r
}

// redactURL hides the password in the userinfo of a URL.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	// Unparsable, e.g. a password with an unescaped "/" or "%": fall back to
	// treating everything between "scheme://user:" and the last "@" as the
	// password, which errs on the side of hiding too much.
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return raw
	}
	colon := strings.Index(rest[:at], ":")
	if colon < 0 {
		return raw
	}
	start := len(raw) - len(rest)
	return raw[:start+colon+1] + redactedPassword + raw[start+at:]
}

// redactMySQLDSN hides the password in a go-sql-driver/mysql DSN,
// [user[:password]@][net[(addr)]]/dbname[?params]. It splits the DSN the way
// the driver does (last "/", then the last "@" before it, then the first
// ":"), so a password containing "@", ":" or "/" is still hidden whole.
func redactMySQLDSN(dsn string) string {
	end := strings.LastIndex(dsn, "/")
	if end < 0 {
		end = len(dsn)
	}
	at := strings.LastIndex(dsn[:end], "@")
	if at < 0 {
		return dsn
	}
	colon := strings.Index(dsn[:at], ":")
	if colon < 0 {
		return dsn
	}
	return dsn[:colon+1] + redactedPassword + dsn[at:]
}
