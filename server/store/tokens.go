package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/pki/token"
)

// Token prefixes: enrollment tokens and API (user) tokens are not
// interchangeable.
const (
	EnrollTokenPrefix = "vge"
	UserTokenPrefix   = "vgu"
)

// MaxEnrollTokenTTL bounds how long an enrollment token may live.
const MaxEnrollTokenTTL = 30 * 24 * time.Hour

// EnrollToken describes an enrollment token (never its secret).
type EnrollToken struct {
	ID        string    `json:"id"`
	Entity    string    `json:"entity"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
	UsedBy    string    `json:"used_by,omitempty"`
	CreatedBy string    `json:"created_by,omitempty"`
	// RevokedAt is when the token was revoked (zero: it was not); a
	// revoked token never enrolls.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
}

// ensureEntity creates the entity row if it does not exist yet.
func (db *DB) ensureEntity(ctx context.Context, tx *sql.Tx, entity string) error {
	if !pki.ValidName(entity) {
		return fmt.Errorf("entity %q: %w", entity, ErrInvalid)
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO entities(name, created_at) VALUES (?, ?)`,
		entity, db.now().UnixNano()); err != nil {
		return fmt.Errorf("create entity %s: %w", entity, err)
	}
	return nil
}

// CreateEnrollToken creates a one-time enrollment token bound to entity,
// valid for ttl, and returns its plaintext (shown once, stored hashed).
func (db *DB) CreateEnrollToken(ctx context.Context, entity string, ttl time.Duration, actor string) (string, error) {
	p, _, err := db.CreateEnrollTokenInfo(ctx, entity, ttl, actor)
	return p, err
}

// CreateEnrollTokenInfo is CreateEnrollToken that also returns the token's
// stored description (id, expiry).
func (db *DB) CreateEnrollTokenInfo(ctx context.Context, entity string, ttl time.Duration, actor string) (string, EnrollToken, error) {
	if ttl <= 0 || ttl > MaxEnrollTokenTTL {
		return "", EnrollToken{}, fmt.Errorf("create enroll token: ttl %s out of range (0, %s]: %w", ttl, MaxEnrollTokenTTL, ErrInvalid)
	}
	plain, id, hash, err := token.New(EnrollTokenPrefix)
	if err != nil {
		return "", EnrollToken{}, fmt.Errorf("create enroll token: %w", err)
	}
	now := db.now()
	t := EnrollToken{ID: id, Entity: entity, CreatedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC(), CreatedBy: actor}
	err = db.withTx(ctx, func(tx *sql.Tx) error {
		if err := db.ensureEntity(ctx, tx, entity); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO enroll_tokens(id, entity, hash, created_at, expires_at, created_by)
			VALUES (?, ?, ?, ?, ?, ?)`, id, entity, hash, now.UnixNano(), t.ExpiresAt.UnixNano(), actor); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		return db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "token.create", Target: id, Entity: entity,
			Detail: "expires " + t.ExpiresAt.Format(time.RFC3339)})
	})
	if err != nil {
		return "", EnrollToken{}, fmt.Errorf("create enroll token: %w", err)
	}
	return plain, t, nil
}

// ConsumeEnrollToken checks an enrollment token and marks it used, in one
// transaction: a token is accepted once. It returns the entity the token is
// bound to. Every refusal wraps ErrTokenInvalid.
func (db *DB) ConsumeEnrollToken(ctx context.Context, plaintext string, now time.Time) (string, error) {
	id, secret, err := token.Parse(plaintext, EnrollTokenPrefix)
	if err != nil {
		return "", fmt.Errorf("consume enroll token: malformed: %w", ErrTokenInvalid)
	}
	var entity string
	err = db.withTx(ctx, func(tx *sql.Tx) error {
		var (
			hash          []byte
			expires       int64
			used, revoked sql.NullInt64
		)
		err := tx.QueryRowContext(ctx, `SELECT entity, hash, expires_at, used_at, revoked_at FROM enroll_tokens WHERE id = ?`, id).
			Scan(&entity, &hash, &expires, &used, &revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("unknown token id %s: %w", id, ErrTokenInvalid)
		}
		if err != nil {
			return fmt.Errorf("look up: %w", err)
		}
		if !token.Verify(hash, secret) {
			return fmt.Errorf("token %s: wrong secret: %w", id, ErrTokenInvalid)
		}
		if used.Valid {
			return fmt.Errorf("token %s: already used: %w", id, ErrTokenInvalid)
		}
		if revoked.Valid {
			return fmt.Errorf("token %s: revoked: %w", id, ErrTokenInvalid)
		}
		if !now.Before(time.Unix(0, expires)) {
			return fmt.Errorf("token %s: expired: %w", id, ErrTokenInvalid)
		}
		res, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL`,
			now.UnixNano(), id)
		if err != nil {
			return fmt.Errorf("mark used: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("token %s: already used or revoked: %w", id, ErrTokenInvalid)
		}
		return db.appendAudit(ctx, tx, AuditEntry{Actor: "enroll", Action: "token.consume", Target: id, Entity: entity})
	})
	if err != nil {
		return "", fmt.Errorf("consume enroll token: %w", err)
	}
	return entity, nil
}

// RevokeEnrollToken revokes the unused enrollment token id, of entity (""
// for any entity): from then on it is refused at enrollment like an unknown
// token. A token of another entity, like an unknown one, wraps ErrNotFound;
// a token already used to enroll wraps ErrTokenUsed. Revoking a revoked
// token changes nothing (the first revocation is kept). The check and the
// change are one write transaction, as is ConsumeEnrollToken's: a token
// revoked while an agent enrolls with it is either used or revoked.
func (db *DB) RevokeEnrollToken(ctx context.Context, id, entity, actor string) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		var (
			owner         string
			used, revoked sql.NullInt64
		)
		err := tx.QueryRowContext(ctx, `SELECT entity, used_at, revoked_at FROM enroll_tokens WHERE id = ?`, id).
			Scan(&owner, &used, &revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("token %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("look up: %w", err)
		}
		if entity != "" && owner != entity { // as if unknown: ids do not leak across entities
			return fmt.Errorf("token %s: %w", id, ErrNotFound)
		}
		switch {
		case used.Valid:
			return fmt.Errorf("token %s: %w", id, ErrTokenUsed)
		case revoked.Valid:
			return nil
		}
		res, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET revoked_at = ?, revoked_by = ?
			WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL`, db.now().UnixNano(), actor, id)
		if err != nil {
			return fmt.Errorf("mark revoked: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 { // cannot happen inside the transaction
			return fmt.Errorf("token %s: changed while revoking", id)
		}
		return db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "token.revoke", Target: id, Entity: owner})
	})
	if err != nil {
		return fmt.Errorf("revoke enroll token: %w", err)
	}
	return nil
}

// ListEnrollTokens lists enrollment tokens (of one entity, or all when entity
// is ""), newest first.
func (db *DB) ListEnrollTokens(ctx context.Context, entity string) ([]EnrollToken, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, entity, created_at, expires_at, used_at, used_by, created_by,
		revoked_at, revoked_by FROM enroll_tokens WHERE (? = '' OR entity = ?) ORDER BY created_at DESC LIMIT 1000`, entity, entity)
	if err != nil {
		return nil, fmt.Errorf("list enroll tokens: %w", err)
	}
	defer rows.Close()
	out := []EnrollToken{}
	for rows.Next() {
		var (
			t                EnrollToken
			created, expires int64
			used, revoked    sql.NullInt64
		)
		if err := rows.Scan(&t.ID, &t.Entity, &created, &expires, &used, &t.UsedBy, &t.CreatedBy, &revoked, &t.RevokedBy); err != nil {
			return nil, fmt.Errorf("list enroll tokens: %w", err)
		}
		t.CreatedAt, t.ExpiresAt, t.UsedAt = time.Unix(0, created).UTC(), time.Unix(0, expires).UTC(), fromNanos(used)
		t.RevokedAt = fromNanos(revoked)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list enroll tokens: %w", err)
	}
	return out, nil
}
