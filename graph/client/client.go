// Package client is a typed client for jobmill's GraphQL API: queries and mutations over HTTP POST,
// and the jobEvents subscription over a websocket speaking graphql-transport-ws.
//
// The token travels as "Authorization: Bearer <token>" on HTTP requests and in the payload of the
// websocket's connection_init message. The client never writes it anywhere else: not in errors, not in
// logs.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one jobmill server. It is safe for concurrent use.
type Client struct {
	endpoint string // http(s) URL of the GraphQL endpoint
	display  string // endpoint for messages, without credentials
	token    string
	http     *http.Client

	reconnectAttempts int
	reconnectDelay    time.Duration
	maxDelay          time.Duration
	handshakeTimeout  time.Duration
	keepAlive         time.Duration
}

// Option adjusts a Client.
type Option func(*Client)

// WithReconnect sets how often WatchJob reconnects after losing its connection before it gives up, and
// the delay before the first attempt (it doubles with every further attempt, up to 5s).
// attempts 0 disables reconnecting.
func WithReconnect(attempts int, firstDelay time.Duration) Option {
	return func(c *Client) {
		c.reconnectAttempts = max(0, attempts)
		c.reconnectDelay = max(time.Millisecond, firstDelay)
	}
}

// WithHandshakeTimeout bounds how long a websocket may take to be accepted and acknowledged
// (default 10s).
func WithHandshakeTimeout(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.handshakeTimeout = d
		}
	}
}

// WithKeepAlive sets how long a subscription's connection may stay silent before the client pings
// the server; after twice that without any message the connection counts as lost and is reopened
// (default 20s; 0 disables it). It finds connections that died without being closed, which would
// otherwise wait forever.
func WithKeepAlive(every time.Duration) Option {
	return func(c *Client) { c.keepAlive = max(0, every) }
}

// New returns a client for the server at serverURL: a base URL such as http://127.0.0.1:8080 (the
// endpoint /query is appended), the endpoint's URL itself, or a bare host:port. ws and wss URLs are
// accepted too. token may be empty for a server that runs without authentication. A nil httpClient
// means a default one; its Timeout, if any, bounds each request and each websocket handshake, not a
// whole subscription.
func New(serverURL, token string, httpClient *http.Client, opts ...Option) (*Client, error) {
	u, err := endpointURL(serverURL)
	if err != nil {
		return nil, err
	}
	if httpClient == nil {
		httpClient = &http.Client{}
	}
	c := &Client{
		endpoint:          u.String(),
		display:           u.Redacted(),
		token:             strings.TrimSpace(token),
		http:              httpClient,
		reconnectAttempts: 5,
		reconnectDelay:    250 * time.Millisecond,
		maxDelay:          5 * time.Second,
		handshakeTimeout:  10 * time.Second,
		keepAlive:         20 * time.Second,
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Endpoint is the URL of the GraphQL endpoint the client talks to, for messages.
func (c *Client) Endpoint() string { return c.display }

func endpointURL(server string) (*url.URL, error) {
	s := strings.TrimSpace(server)
	if s == "" {
		return nil, errors.New("no server URL")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("invalid server URL %q: %w", server, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "ws":
		u.Scheme = "http"
	case "https", "wss":
		u.Scheme = "https"
	default:
		return nil, fmt.Errorf("invalid server URL %q: scheme must be http or https", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("invalid server URL %q: no host", u.Redacted())
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/query"
	}
	u.Fragment = ""
	return u, nil
}

// request is a GraphQL request body.
type request struct {
	Query         string         `json:"query"`
	OperationName string         `json:"operationName,omitempty"`
	Variables     map[string]any `json:"variables,omitempty"`
}

// response is a GraphQL response body.
type response struct {
	Data   json.RawMessage `json:"data"`
	Errors GraphQLErrors   `json:"errors"`
}

const maxResponseBytes = 64 << 20

// do posts a query and decodes its data into out.
func (c *Client) do(ctx context.Context, op, query string, vars map[string]any, out any) error {
	body, err := json.Marshal(request{Query: query, OperationName: op, Variables: vars})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/graphql-response+json, application/json;q=0.9")
	c.authorize(req.Header)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return fmt.Errorf("read the answer of %s: %w", c.display, err)
	}
	if err := c.statusError(resp, data); err != nil {
		return err
	}
	var r response
	if err := json.Unmarshal(data, &r); err != nil {
		if resp.StatusCode/100 != 2 {
			return httpError(resp, data)
		}
		return fmt.Errorf("the server at %s sent a malformed GraphQL response: %w", c.display, err)
	}
	if len(r.Errors) > 0 {
		return r.Errors
	}
	if resp.StatusCode/100 != 2 {
		return httpError(resp, data)
	}
	if len(r.Data) == 0 || string(r.Data) == "null" {
		return fmt.Errorf("the server at %s sent a GraphQL response without data", c.display)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return fmt.Errorf("the server at %s sent unexpected data: %w", c.display, err)
	}
	return nil
}

func (c *Client) authorize(h http.Header) {
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
}

// statusError turns the answers that carry no GraphQL response into errors.
func (c *Client) statusError(resp *http.Response, body []byte) error {
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return c.authError()
	case http.StatusTooManyRequests:
		return &RateLimitError{RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return fmt.Errorf("no GraphQL API at %s: %w", c.display, httpError(resp, body))
	}
	return nil
}

func (c *Client) authError() error {
	if c.token == "" {
		return ErrTokenRequired
	}
	return ErrUnauthorized
}

func (c *Client) unreachable(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &UnreachableError{URL: c.display, Err: err}
}

func httpError(resp *http.Response, body []byte) *HTTPError {
	b := strings.TrimSpace(string(body))
	if len(b) > 200 {
		b = b[:200] + "…"
	}
	return &HTTPError{StatusCode: resp.StatusCode, Status: resp.Status, Body: b}
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t).Round(time.Second))
	}
	return 0
}
