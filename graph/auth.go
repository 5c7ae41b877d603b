package graph

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/jobmill/jobmill/app/access"
)

type principalKey struct{}

// withPrincipal records who a request acts for.
func withPrincipal(ctx context.Context, p access.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principalFrom(ctx context.Context) (access.Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(access.Principal)
	return p, ok
}

// handshake is what the websocket transport's InitFunc needs to know about the HTTP request that
// opened the connection.
type handshake struct {
	authorization string
	remoteIP      string
}

type handshakeKey struct{}

func withHandshake(ctx context.Context, h handshake) context.Context {
	return context.WithValue(ctx, handshakeKey{}, h)
}

func handshakeFrom(ctx context.Context) handshake {
	h, _ := ctx.Value(handshakeKey{}).(handshake)
	return h
}

// bearerToken takes the token out of an Authorization value ("Bearer <token>", scheme in any case).
func bearerToken(header string) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// initToken takes the token out of a connection_init payload: {"Authorization": "Bearer T"},
// {"authorization": "Bearer T"} or {"token": "T"}.
func initToken(payload map[string]any) string {
	for _, k := range []string{"Authorization", "authorization"} {
		if v, ok := payload[k].(string); ok && v != "" {
			return bearerToken(v)
		}
	}
	if v, ok := payload["token"].(string); ok {
		return strings.TrimSpace(v)
	}
	return ""
}

// authenticate checks a token. ErrUnauthenticated means the client's fault; any other error is ours.
func (h *apiHandler) authenticate(ctx context.Context, token string) (p access.Principal, err error) {
	if token == "" {
		return access.Principal{}, access.ErrUnauthenticated
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("authenticate: %v (is the application's token store configured?)", r)
		}
	}()
	p, err = h.tokens.Authenticate(ctx, token)
	if err == nil && p.Tenant == "" {
		// A token always belongs to a tenant; an empty one would read every tenant's jobs.
		return access.Principal{}, errors.New("authenticate: token has no tenant")
	}
	return p, err
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func isWebsocketUpgrade(r *http.Request) bool {
	// The same test as the websocket transport's: every request it would take goes through InitFunc.
	return r.Header.Get("Upgrade") != ""
}
