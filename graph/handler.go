// Package graph serves jobmill's GraphQL API (schema.graphqls): queries, mutations and subscriptions
// over HTTP (GET, POST, server-sent events) and websockets (graphql-transport-ws and the legacy
// graphql-ws), with authentication by API token, tenant isolation, rate limits and cost limits.
package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/jobmill/jobmill/app"
	"github.com/jobmill/jobmill/app/access"
	"github.com/jobmill/jobmill/app/notify"
	"github.com/jobmill/jobmill/app/query"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/app/timeline"
	"github.com/jobmill/jobmill/graph/generated"
	"github.com/jobmill/jobmill/graph/model"
)

// Config configures the GraphQL endpoint. Zero fields take the defaults.
type Config struct {
	App app.Application
	// Stats, Timeline and Webhooks are the read models of the event log behind Job.stats and
	// Query.stats, Job.timeline, and the webhooks; a field left nil answers UNAVAILABLE.
	Stats    *stats.Projection
	Timeline *timeline.Projection
	Webhooks *notify.Service
	// AuthRequired makes every request present an API token (Authorization: Bearer <token>, or the
	// connection_init payload on websockets); the token's tenant scopes everything the request sees and
	// does. Without it, requests read every tenant's jobs and start jobs in command.DefaultTenant.
	AuthRequired bool
	// AllowedOrigins are the origin patterns (path.Match syntax on the host, as in
	// github.com/coder/websocket) whose pages may open websockets; empty: same origin only. Requests
	// without an Origin header (programs, not browsers) are always accepted.
	AllowedOrigins []string
	// RateLimit is the sustained requests per second per API token (per remote address when
	// authentication is off, and for websocket handshakes); default 20. Each operation on a websocket
	// counts as a request.
	RateLimit float64
	// RateBurst is how many requests may come at once; default twice RateLimit.
	RateBurst int
	// MaxBodyBytes bounds an HTTP request body; default 1 MiB.
	MaxBodyBytes int64
	// MaxMessageBytes bounds one websocket message from a client; default 64 KiB.
	MaxMessageBytes int64
	// ComplexityLimit bounds an operation's cost: each field costs 1 plus its children, and a page of a
	// list costs first times its children; default 10,000 (a full page of 500 jobs with a dozen fields).
	ComplexityLimit int
	Logger          *slog.Logger
}

// Defaults of Config and fixed limits.
const (
	DefaultRateLimit       = 20
	DefaultMaxBodyBytes    = 1 << 20
	DefaultMaxMessageBytes = 64 << 10
	DefaultComplexityLimit = 10_000

	// parserTokenLimit bounds the lexical tokens of one query document; the introspection query of
	// GraphiQL has about 300.
	parserTokenLimit = 10_000
)

// Keep-alive timing; variables so that tests can shorten them.
var (
	wsInitTimeout  = 10 * time.Second
	wsPingInterval = 15 * time.Second
	sseKeepAlive   = 15 * time.Second
)

// Websocket close codes of a rejected connection_init. On 4401 the graphql-ws client stops instead of
// reconnecting in a tight loop, as it would after 1000; 1011 is a server fault.
const (
	wsCloseUnauthorized = 4401
	wsCloseInternalErr  = 1011
)

func (c Config) withDefaults() (Config, error) {
	if c.RateLimit < 0 || math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) {
		return c, fmt.Errorf("graph: rate limit must be a positive number (got %v)", c.RateLimit)
	}
	if c.RateBurst < 0 || c.MaxBodyBytes < 0 || c.MaxMessageBytes < 0 || c.ComplexityLimit < 0 {
		return c, errors.New("graph: limits must not be negative")
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.RateBurst == 0 {
		c.RateBurst = max(1, int(math.Ceil(2*c.RateLimit)))
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.ComplexityLimit == 0 {
		c.ComplexityLimit = DefaultComplexityLimit
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// apiHandler authenticates, rate-limits and bounds requests before the GraphQL server sees them.
type apiHandler struct {
	srv          *handler.Server
	tokens       access.Tokens
	authRequired bool
	limiter      *limiter
	maxBody      int64
	logger       *slog.Logger
}

// NewHandler returns the GraphQL endpoint; the caller mounts it (at /query). Subscriptions end when
// the client leaves, when the request's context ends (cancel the http.Server's BaseContext on
// shutdown: Shutdown alone does not close websockets) or when App.Live closes.
func NewHandler(cfg Config) (http.Handler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &apiHandler{
		tokens:       cfg.App.Tokens,
		authRequired: cfg.AuthRequired,
		limiter:      newLimiter(cfg.RateLimit, cfg.RateBurst),
		maxBody:      cfg.MaxBodyBytes,
		logger:       cfg.Logger,
	}
	res := &Resolver{app: cfg.App, stats: cfg.Stats, timeline: cfg.Timeline, webhooks: cfg.Webhooks,
		authRequired: cfg.AuthRequired, logger: cfg.Logger}
	es := generated.NewExecutableSchema(generated.Config{Resolvers: res, Complexity: complexity()})
	srv := handler.New(es)

	// The first transport that supports a request serves it: SSE must come before POST, which would
	// take the same request and deliver one event only.
	srv.AddTransport(transport.SSE{KeepAlivePingInterval: sseKeepAlive})
	readLimit := cfg.MaxMessageBytes
	srv.AddTransport(transport.Websocket{
		Implementation: transport.CoderWebsocketImplementation{AcceptOptions: websocket.AcceptOptions{
			// graphql-transport-ws first: a client offering both gets the maintained protocol.
			Subprotocols:   []string{"graphql-transport-ws", "graphql-ws"},
			OriginPatterns: cfg.AllowedOrigins,
		}},
		InitFunc:              h.initWebsocket,
		InitTimeout:           wsInitTimeout,
		KeepAlivePingInterval: wsPingInterval, // graphql-ws
		PingPongInterval:      wsPingInterval, // graphql-transport-ws: a silent client is dropped
		PayloadReadLimit:      &readLimit,
		ErrorFunc: func(ctx context.Context, err error) {
			cfg.Logger.DebugContext(ctx, "graphql websocket", "err", err)
		},
	})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})

	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	srv.SetParserTokenLimit(parserTokenLimit)
	srv.Use(documentLimits{tokenLimit: parserTokenLimit})
	srv.Use(extension.Introspection{})
	srv.Use(extension.FixedComplexityLimit(cfg.ComplexityLimit))
	srv.AroundOperations(h.limitWebsocketOperations)
	srv.SetErrorPresenter(func(ctx context.Context, err error) *gqlerror.Error {
		var gqlErr *gqlerror.Error
		if errors.As(err, &gqlErr) {
			return graphql.DefaultErrorPresenter(ctx, err)
		}
		// Resolvers return only errors meant for clients; anything else is logged, never shown.
		cfg.Logger.ErrorContext(ctx, "graphql: unexpected error", "err", err)
		e := publicError(codeInternal, "internal server error")
		if fc := graphql.GetFieldContext(ctx); fc != nil {
			e.Path = fc.Path()
		}
		return e
	})
	srv.SetRecoverFunc(func(ctx context.Context, p any) error {
		cfg.Logger.ErrorContext(ctx, "graphql: panic in a resolver", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return publicError(codeInternal, "internal server error")
	})
	h.srv = srv
	return h, nil
}

// Costs of the fields that read the statistics: each reads several tables, and Query.stats every job
// of the tenant that the filter selects.
const (
	jobStatsCost       = 20
	aggregateStatsCost = 200
	// errorCountFields is the most an ErrorCount's selection costs (error, count, __typename).
	errorCountFields = 3
)

// complexity prices the list fields by the page they ask for, or by the longest list they can return.
// A first outside 1..MaxPageSize costs 1: the resolver rejects it with a clear message before doing
// any work.
func complexity() generated.ComplexityRoot {
	var c generated.ComplexityRoot
	c.Query.Jobs = func(child int, _ *model.JobFilter, first *int, _ *string) int {
		return pageCost(child, first)
	}
	c.Query.Subjobs = func(child int, _ string, _ *model.SubjobState, first *int, _ *string) int {
		return pageCost(child, first)
	}
	c.Job.Timeline = func(child int, first *int, _ *string) int {
		return pageCost(child, first)
	}
	c.Job.Stats = func(child int) int {
		return jobStatsCost + child
	}
	c.Job.SubjobActivity = func(child int, _ *model.SubjobState, first *int, _ *string) int {
		return pageCost(child, first)
	}
	c.Job.ActivitySummary = func(child int) int {
		// One read of the status view per job, like Job.stats of the statistics view.
		return jobStatsCost + child
	}
	c.SubjobActivitySummary.SubjobsByState = func(child int) int {
		return listCost(child, len(model.AllSubjobState))
	}
	c.Query.Stats = func(child int, _ *model.StatsFilter, _ *int, topErrors *int) int {
		// child prices stats.DefaultTopErrors error texts; each further one costs at most its fields.
		extra := 0
		if topErrors != nil && *topErrors > stats.DefaultTopErrors && *topErrors <= maxTopErrors {
			extra = (*topErrors - stats.DefaultTopErrors) * errorCountFields
		}
		return aggregateStatsCost + child + extra
	}
	c.JobStats.Throughput = func(child int) int {
		return listCost(child, stats.MaxBuckets)
	}
	c.JobStats.TopErrors = func(child int) int {
		// Job.stats lists stats.DefaultTopErrors; Query.stats adds the price of the rest.
		return listCost(child, stats.DefaultTopErrors)
	}
	c.Query.Webhooks = func(child int) int {
		return listCost(child, notify.MaxWebhooksPerTenant)
	}
	c.Webhook.Deliveries = func(child int, _ *model.WebhookDeliveryState, first *int) int {
		return pageCost(child, first)
	}
	return c
}

// listCost prices a list of at most n items.
func listCost(child, n int) int {
	return 1 + n*max(child, 1)
}

func pageCost(child int, first *int) int {
	n := 50
	if first != nil {
		n = *first
	}
	if n < 1 || n > query.MaxPageSize {
		return 1
	}
	return 1 + n*max(child, 1)
}

func (h *apiHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isWebsocketUpgrade(r) {
		// Browsers cannot set headers on a websocket: the token comes in connection_init, checked by
		// initWebsocket. Handshakes are limited per address.
		if !h.allow(w, "ip:"+remoteIP(r)) {
			return
		}
		ctx := withHandshake(r.Context(), handshake{authorization: r.Header.Get("Authorization"), remoteIP: remoteIP(r)})
		h.srv.ServeHTTP(w, r.WithContext(ctx))
		return
	}

	key := "ip:" + remoteIP(r)
	var p access.Principal
	if h.authRequired {
		token := bearerToken(r.Header.Get("Authorization"))
		var err error
		p, err = h.authenticate(r.Context(), token)
		switch {
		case errors.Is(err, access.ErrUnauthenticated):
			// Failed attempts count against the address, so that floods of them are throttled too.
			if !h.allow(w, key) {
				return
			}
			challenge := `Bearer realm="jobmill"`
			if token != "" {
				challenge += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
			writeError(w, http.StatusUnauthorized, codeUnauthenticated, "missing or invalid API token: send Authorization: Bearer <token>")
			return
		case err != nil:
			h.logger.ErrorContext(r.Context(), "graphql: authentication failed", "err", err)
			writeError(w, http.StatusInternalServerError, codeInternal, "internal server error")
			return
		}
		key = "token:" + p.TokenID
	}
	if !h.allow(w, key) {
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > h.maxBody {
			h.tooLarge(w)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, h.maxBody+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, codeBadUserInput, "could not read the request body")
			return
		}
		if int64(len(body)) > h.maxBody {
			h.tooLarge(w)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	h.srv.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
}

func (h *apiHandler) tooLarge(w http.ResponseWriter) {
	writeError(w, http.StatusRequestEntityTooLarge, codeRequestTooLarge,
		fmt.Sprintf("request body is larger than %d bytes", h.maxBody))
}

// allow takes a request from key's bucket, or answers 429 with Retry-After.
func (h *apiHandler) allow(w http.ResponseWriter, key string) bool {
	d := h.limiter.wait(key)
	if d == 0 {
		return true
	}
	secs := int(math.Ceil(d.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	writeError(w, http.StatusTooManyRequests, codeRateLimited, "rate limit exceeded: retry later")
	return false
}

// wsKey marks operations that arrive over a websocket and names the bucket they count against.
type wsKey struct{}

// initWebsocket authenticates a websocket from its connection_init payload or, failing that, the
// handshake's Authorization header. A rejected connection is closed with 4401 and a reason, which
// graphql-ws clients treat as final instead of reconnecting at once.
func (h *apiHandler) initWebsocket(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	hs := handshakeFrom(ctx)
	key := "ip:" + hs.remoteIP
	var p access.Principal
	if h.authRequired {
		token := initToken(payload)
		if token == "" {
			token = bearerToken(hs.authorization)
		}
		var err error
		p, err = h.authenticate(ctx, token)
		switch {
		case errors.Is(err, access.ErrUnauthenticated) && token == "":
			return rejectWebsocket(ctx, wsCloseUnauthorized, "missing API token")
		case errors.Is(err, access.ErrUnauthenticated):
			return rejectWebsocket(ctx, wsCloseUnauthorized, "invalid API token")
		case err != nil:
			h.logger.ErrorContext(ctx, "graphql: websocket authentication failed", "err", err)
			return rejectWebsocket(ctx, wsCloseInternalErr, "internal server error")
		}
		key = "token:" + p.TokenID
	}
	ctx = withPrincipal(ctx, p)
	ctx = context.WithValue(ctx, wsKey{}, key)
	return ctx, nil, nil
}

func rejectWebsocket(ctx context.Context, code int, reason string) (context.Context, *transport.InitPayload, error) {
	ctx = transport.WithWebsocketCloseCode(ctx, code)
	ctx = transport.AppendCloseReason(ctx, reason)
	return ctx, nil, errors.New(reason)
}

// limitWebsocketOperations applies the rate limit to each operation started on a websocket (HTTP
// requests were counted before they reached the server).
func (h *apiHandler) limitWebsocketOperations(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	key, ok := ctx.Value(wsKey{}).(string)
	if !ok {
		return next(ctx)
	}
	if d := h.limiter.wait(key); d > 0 {
		err := publicError(codeRateLimited, "rate limit exceeded: retry in %d s", max(1, int(math.Ceil(d.Seconds()))))
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{err}})
	}
	return next(ctx)
}

// writeError answers with a GraphQL-style error body.
func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(graphql.Response{Errors: gqlerror.List{{
		Message:    message,
		Extensions: map[string]any{"code": code},
	}}})
}
