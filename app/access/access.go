// Package access decides who may use the API: API tokens, each belonging to one tenant. A token is shown
// once when it is created; only its SHA-256 digest is stored. Tokens are 256 random bits, so a plain
// digest is safe to store and lets a request be authenticated with one indexed lookup (a slow password
// hash buys nothing against a secret that cannot be guessed).
package access

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// TokenPrefix starts every token, so that a leaked token is easy to recognise in code or logs.
const TokenPrefix = "jm_"

var (
	// ErrUnauthenticated: no token, or one that is unknown or revoked.
	ErrUnauthenticated = errors.New("missing or invalid API token")
	// ErrTokenNotFound: the store has no token with that digest.
	ErrTokenNotFound = errors.New("token not found")
)

// Token is a stored API token: never the token itself, only its digest.
type Token struct {
	ID        string
	Tenant    string
	Name      string
	Hash      string // hex SHA-256 of the token
	CreatedAt time.Time
}

// TokenStore keeps tokens.
type TokenStore interface {
	SaveToken(ctx context.Context, t Token) error
	// TokenByHash returns the token with that digest, or ErrTokenNotFound.
	TokenByHash(ctx context.Context, hash string) (Token, error)
}

// Principal is who a request acts for.
type Principal struct {
	Tenant string
	// TokenID identifies the token (for rate limits and audit); empty when authentication is off.
	TokenID string
}

var tenantName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateTenant checks a tenant name: 1–64 letters, digits, '.', '_' or '-', not starting with a symbol.
func ValidateTenant(name string) error {
	if !tenantName.MatchString(name) {
		return fmt.Errorf("invalid tenant name %q: use 1-64 letters, digits, '.', '_' or '-'", name)
	}
	return nil
}

// HashToken is the digest under which a token is stored.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Tokens creates and checks API tokens.
type Tokens struct {
	store TokenStore
	now   func() time.Time
}

// NewTokens refuses nil dependencies.
func NewTokens(store TokenStore, now func() time.Time) (Tokens, error) {
	if store == nil || now == nil {
		return Tokens{}, errors.New("tokens: store and clock are required")
	}
	return Tokens{store: store, now: now}, nil
}

// Create makes a token for tenant and returns it in clear text: the only time it is ever visible.
func (t Tokens) Create(ctx context.Context, tenant, name string) (string, Token, error) {
	if err := ValidateTenant(tenant); err != nil {
		return "", Token{}, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", Token{}, err
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return "", Token{}, err
	}
	plain := TokenPrefix + base64.RawURLEncoding.EncodeToString(secret)
	tok := Token{ID: hex.EncodeToString(id), Tenant: tenant, Name: name, Hash: HashToken(plain), CreatedAt: t.now()}
	if err := t.store.SaveToken(ctx, tok); err != nil {
		return "", Token{}, fmt.Errorf("save token: %w", err)
	}
	return plain, tok, nil
}

// Authenticate returns the principal a token acts for. Anything but a known token is ErrUnauthenticated.
func (t Tokens) Authenticate(ctx context.Context, token string) (Principal, error) {
	token = strings.TrimSpace(token)
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 128 {
		return Principal{}, ErrUnauthenticated
	}
	tok, err := t.store.TokenByHash(ctx, HashToken(token))
	if errors.Is(err, ErrTokenNotFound) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("look up token: %w", err)
	}
	return Principal{Tenant: tok.Tenant, TokenID: tok.ID}, nil
}
