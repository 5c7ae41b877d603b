// Package webhook sends notifications to webhooks over HTTP and lets receivers written in Go check them.
//
// # The request
//
// Each delivery is one POST of a JSON body:
//
//	{"id": "<delivery id>", "type": "step.finished", "job_id": "...", "tenant": "acme", "step": 2,
//	 "at": "2026-11-26T10:19:10.123456Z", "data": {...}}
//
// "step" is present for step.started and step.finished only. "data" depends on the type (job_type;
// attempt, total, succeeded, failed; reason, counts; seq where the engine's event has one). The headers:
//
//	Content-Type:      application/json
//	Jobmill-Event:     the type, as in the body
//	Jobmill-Delivery:  the delivery id, the same on every retry and redelivery: receivers deduplicate by it
//	Jobmill-Timestamp: unix seconds when this attempt was signed
//	Jobmill-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//
// # Checking a request
//
// A receiver recomputes the HMAC over the timestamp header, a dot and the raw body, with the secret it was
// given when the webhook was created, compares it in constant time with the signature header, and refuses
// timestamps far from its own clock, so that a captured request cannot be replayed later. Verify does all
// of it. The signature header may carry several comma-separated values; one matching v1 suffices.
//
// A 2xx answer is success. Anything else, a redirect (never followed), no answer within the time-out or a
// connection error is a failed attempt, retried with back-off; the status and up to 512 bytes of the
// answer are kept as the delivery's last error.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jobmill/jobmill/app/notify"
)

// Headers of a delivery.
const (
	HeaderEvent     = "Jobmill-Event"
	HeaderDelivery  = "Jobmill-Delivery"
	HeaderTimestamp = "Jobmill-Timestamp"
	HeaderSignature = "Jobmill-Signature"
)

// SignatureVersion prefixes the signatures of the current scheme.
const SignatureVersion = "v1"

// DefaultTolerance is how far a request's timestamp may be from the receiver's clock.
const DefaultTolerance = 5 * time.Minute

var (
	// ErrNoSignature: the request carries no timestamp or no v1 signature.
	ErrNoSignature = errors.New("webhook request is not signed")
	// ErrBadSignature: no signature matches the body and timestamp under the secret.
	ErrBadSignature = errors.New("webhook signature does not match")
	// ErrStaleTimestamp: the timestamp is outside the tolerance (a replayed or badly delayed request).
	ErrStaleTimestamp = errors.New("webhook timestamp outside tolerance")
)

// Payload is the JSON body of a delivery.
type Payload struct {
	ID     string          `json:"id"`
	Type   string          `json:"type"`
	JobID  string          `json:"job_id"`
	Tenant string          `json:"tenant"`
	Step   int             `json:"step,omitempty"`
	At     time.Time       `json:"at"`
	Data   json.RawMessage `json:"data"`
}

// Body is the JSON body of a delivery.
func Body(d notify.Delivery) ([]byte, error) {
	data := d.Data
	if len(data) == 0 {
		data = json.RawMessage(`{}`)
	}
	return json.Marshal(Payload{ID: d.ID, Type: string(d.Type), JobID: d.JobID, Tenant: d.Tenant, Step: d.Step,
		At: d.At.UTC(), Data: data})
}

// Sign is the signature header value of body sent at timestamp (unix seconds).
func Sign(secret string, timestamp int64, body []byte) string {
	return SignatureVersion + "=" + hex.EncodeToString(mac(secret, strconv.FormatInt(timestamp, 10), body))
}

func mac(secret, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a request's signature header against its raw body and timestamp header, under secret,
// and that the timestamp is within tolerance of now (DefaultTolerance when tolerance is 0).
func Verify(secret, timestamp, signature string, body []byte, tolerance time.Duration) error {
	return VerifyAt(secret, timestamp, signature, body, tolerance, time.Now())
}

// VerifyAt is Verify with the receiver's clock given.
func VerifyAt(secret, timestamp, signature string, body []byte, tolerance time.Duration, now time.Time) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if timestamp == "" || signature == "" {
		return ErrNoSignature
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q is not unix seconds", ErrStaleTimestamp, timestamp)
	}
	if skew := now.Sub(time.Unix(ts, 0)); skew > tolerance || skew < -tolerance {
		return fmt.Errorf("%w: %s from now", ErrStaleTimestamp, skew.Round(time.Second))
	}
	want := mac(secret, timestamp, body)
	signed := false
	for _, part := range strings.Split(signature, ",") {
		version, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || version != SignatureVersion {
			continue
		}
		signed = true
		got, err := hex.DecodeString(value)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	if !signed {
		return ErrNoSignature
	}
	return ErrBadSignature
}

// VerifyRequest reads r's body and checks it with Verify. It returns the body, to be decoded as Payload.
func VerifyRequest(r *http.Request, secret string, tolerance time.Duration, maxBody int64) ([]byte, error) {
	if maxBody <= 0 {
		maxBody = 1 << 20
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read webhook body: %w", err)
	}
	if int64(len(body)) > maxBody {
		return nil, fmt.Errorf("webhook body larger than %d bytes", maxBody)
	}
	if err := Verify(secret, r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body, tolerance); err != nil {
		return nil, err
	}
	return body, nil
}

// Config tunes the Sender; zero fields take the defaults.
type Config struct {
	// Timeout bounds one request, connecting included (default 10s). The deliverer's own time-out
	// applies as well.
	Timeout time.Duration
	// UserAgent is sent with each request (default "jobmill-webhooks/1").
	UserAgent string
	// BlockPrivateNetworks refuses to connect to loopback, private (RFC 1918, fc00::/7) and shared
	// (100.64.0.0/10) addresses, for deployments where tenants must not reach the internal network.
	// Link-local addresses (cloud metadata services), multicast and unspecified addresses are refused
	// always. The check is on the address actually dialled, after DNS resolution.
	BlockPrivateNetworks bool
}

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.UserAgent == "" {
		c.UserAgent = "jobmill-webhooks/1"
	}
	return c
}

// errorBodyLimit is how much of a failed answer is kept for the delivery's last error.
const errorBodyLimit = 512

// Sender posts deliveries over HTTP (notify.Sender).
type Sender struct {
	cfg    Config
	client *http.Client
	now    func() time.Time
}

var _ notify.Sender = (*Sender)(nil)

// NewSender returns a sender with its own connection pool. It ignores proxy settings of the environment:
// webhooks are called directly, so the address checks apply to the receiver.
func NewSender(cfg Config) *Sender {
	cfg = cfg.withDefaults()
	dialer := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second, ControlContext: addressGuard(cfg.BlockPrivateNetworks)}
	transport := &http.Transport{
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
	}
	return &Sender{cfg: cfg, now: time.Now, client: &http.Client{
		Transport: transport,
		Timeout:   cfg.Timeout,
		// A redirect is a failed attempt: following it would send the signed body somewhere the tenant
		// did not register.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Close releases idle connections.
func (s *Sender) Close() { s.client.CloseIdleConnections() }

// Send implements notify.Sender.
func (s *Sender) Send(ctx context.Context, t notify.Target, d notify.Delivery) (int, error) {
	body, err := Body(d)
	if err != nil {
		return 0, fmt.Errorf("encode delivery: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	ts := s.now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.cfg.UserAgent)
	req.Header.Set(HeaderEvent, string(d.Type))
	req.Header.Set(HeaderDelivery, d.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(string(t.Secret), ts, body))
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, requestError(err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	// Read a little more so that the connection can be reused after short answers.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, nil
	}
	msg := fmt.Sprintf("HTTP %d", resp.StatusCode)
	if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
		msg += " (redirect to " + strings.ToValidUTF8(loc, "?") + " not followed)"
	}
	if text := strings.TrimSpace(strings.ToValidUTF8(string(snippet), "?")); text != "" {
		msg += ": " + text
	}
	return resp.StatusCode, errors.New(msg)
}

// requestError describes a failed request without its URL (which may hold a token the tenant put there).
func requestError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var blocked *blockedAddressError
	switch {
	case errors.As(err, &blocked):
		return blocked
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return fmt.Errorf("request timed out: %w", err)
	}
	return fmt.Errorf("request failed: %w", err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// blockedAddressError is a connection refused by the address checks.
type blockedAddressError struct{ addr netip.Addr }

func (e *blockedAddressError) Error() string {
	return fmt.Sprintf("address %s is not allowed for webhooks", e.addr)
}

// addressGuard refuses, just before connecting, addresses that a webhook must not reach.
func addressGuard(blockPrivate bool) func(ctx context.Context, network, address string, c syscall.RawConn) error {
	return func(_ context.Context, _, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("webhook address %q: %w", address, err)
		}
		a := ap.Addr().Unmap()
		switch {
		case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast(), a.IsMulticast(), a.IsUnspecified():
			return &blockedAddressError{a}
		case blockPrivate && (a.IsLoopback() || a.IsPrivate() || sharedAddressSpace.Contains(a)):
			return &blockedAddressError{a}
		}
		return nil
	}
}

// sharedAddressSpace is RFC 6598's carrier-grade NAT range, internal like RFC 1918's.
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")
