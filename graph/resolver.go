package graph

import (
	"context"
	"errors"
	"log/slog"

	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/jobmill/jobmill/app"
	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/notify"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/app/timeline"
)

// Resolver maps the GraphQL schema onto the core's use cases. Every read and write acts for the
// principal that the transport put into the context (see withPrincipal): its tenant scopes everything.
type Resolver struct {
	app          app.Application
	stats        *stats.Projection
	timeline     *timeline.Projection
	webhooks     *notify.Service
	authRequired bool
	logger       *slog.Logger
}

// Error codes in the extensions of GraphQL errors.
const (
	codeBadUserInput    = "BAD_USER_INPUT"
	codeNotFound        = "NOT_FOUND"
	codeUnauthenticated = "UNAUTHENTICATED"
	codeRateLimited     = "RATE_LIMITED"
	codeInternal        = "INTERNAL_SERVER_ERROR"
	codeUnavailable     = "UNAVAILABLE"
	codeRequestTooLarge = "REQUEST_TOO_LARGE"
)

// publicError is an error whose message is meant for the client.
func publicError(code, format string, args ...any) *gqlerror.Error {
	err := gqlerror.Errorf(format, args...)
	err.Extensions = map[string]any{"code": code}
	return err
}

var errNoPrincipal = errors.New("request has no principal")

// readTenant is the tenant whose jobs a request may see: the token's tenant, or "" (every tenant) when
// authentication is off.
func (r *Resolver) readTenant(ctx context.Context) (string, error) {
	p, ok := principalFrom(ctx)
	if !ok {
		if r.authRequired {
			return "", errNoPrincipal
		}
		return "", nil
	}
	return p.Tenant, nil
}

// writeTenant is the tenant that jobs a request starts belong to.
func (r *Resolver) writeTenant(ctx context.Context) (string, error) {
	t, err := r.readTenant(ctx)
	if err != nil {
		return "", err
	}
	if t == "" {
		return command.DefaultTenant, nil
	}
	return t, nil
}

// webhookTenant is the tenant whose webhooks a request manages: the token's, or command.DefaultTenant
// (whose jobs notify) when authentication is off. Unlike jobs, webhooks are never read across tenants.
func (r *Resolver) webhookTenant(ctx context.Context) (string, error) {
	return r.writeTenant(ctx)
}

// unavailable answers for a read model that this process was configured without.
func unavailable(what string) error {
	return publicError(codeUnavailable, "%s is not available", what)
}

// fail turns an error that is not the client's into a generic GraphQL error and logs the real one, so
// that no SQL, path or secret reaches a client.
func (r *Resolver) fail(ctx context.Context, op string, err error) error {
	if errors.Is(err, errNoPrincipal) {
		return publicError(codeUnauthenticated, "missing or invalid API token")
	}
	if ctx.Err() != nil {
		// The client left or the server is shutting down: nothing to report.
		r.logger.DebugContext(ctx, "graphql: request ended", "op", op, "err", err)
		return publicError(codeUnavailable, "request cancelled")
	}
	p, _ := principalFrom(ctx)
	r.logger.ErrorContext(ctx, "graphql: internal error", "op", op, "tenant", p.Tenant, "err", err)
	return publicError(codeInternal, "internal server error")
}
