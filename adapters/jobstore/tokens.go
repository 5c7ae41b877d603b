package jobstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/app/access"
)

const (
	qInsertToken = `INSERT INTO api_tokens (id, tenant, name, hash, created_at) VALUES (?, ?, ?, ?, ?)`
	qTokenByHash = `SELECT id, tenant, name, hash, created_at FROM api_tokens WHERE hash = ?`
)

func validToken(t access.Token) error {
	if t.ID == "" || t.Tenant == "" || t.Hash == "" {
		return errors.New("save token: a token needs an id, a tenant and a hash")
	}
	return nil
}

func tokenArgs(t access.Token) []any {
	return []any{t.ID, t.Tenant, t.Name, t.Hash, micros(t.CreatedAt)}
}

func scanToken(row *sql.Row) (access.Token, error) {
	var t access.Token
	var created int64
	err := row.Scan(&t.ID, &t.Tenant, &t.Name, &t.Hash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return access.Token{}, fmt.Errorf("look up token: %w", access.ErrTokenNotFound)
	}
	if err != nil {
		return access.Token{}, fmt.Errorf("look up token: %w", err)
	}
	t.CreatedAt = fromMicros(created)
	return t, nil
}

// SaveToken stores a new token. A token whose id or hash is already stored is refused.
func (s *SQLite) SaveToken(ctx context.Context, t access.Token) error {
	if err := validToken(t); err != nil {
		return err
	}
	// InTx, not a plain write: inside a log handler the write connection belongs to the handler's batch.
	err := s.db.InTx(ctx, func(htx *sqlite.HookTx) error {
		_, err := htx.SQL().ExecContext(ctx, qInsertToken, tokenArgs(t)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("save token %s: %w", t.ID, err)
	}
	return nil
}

// TokenByHash returns the token with that digest, or an error wrapping access.ErrTokenNotFound.
func (s *SQLite) TokenByHash(ctx context.Context, hash string) (access.Token, error) {
	return scanToken(s.tokenByHash.QueryRowContext(ctx, hash))
}

// SaveToken stores a new token. A token whose id or hash is already stored is refused.
func (s *SQL) SaveToken(ctx context.Context, t access.Token) error {
	if err := validToken(t); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, s.rebind(qInsertToken), tokenArgs(t)...); err != nil {
		return fmt.Errorf("save token %s: %w", t.ID, err)
	}
	return nil
}

// TokenByHash returns the token with that digest, or an error wrapping access.ErrTokenNotFound.
func (s *SQL) TokenByHash(ctx context.Context, hash string) (access.Token, error) {
	return scanToken(s.stmts[qTokenByHash].QueryRowContext(ctx, hash))
}
