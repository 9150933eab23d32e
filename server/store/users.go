package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode"

	"github.com/vigil-edge/vigil/pki/token"
)

// Roles of API users.
const (
	RoleAdmin       = "admin"        // the CERT: everything
	RoleAnalyst     = "analyst"      // the CERT: reads every entity
	RoleEntityAdmin = "entity-admin" // one entity: its agents, tokens, findings
)

// ValidRole reports whether r is a known role.
func ValidRole(r string) bool {
	return r == RoleAdmin || r == RoleAnalyst || r == RoleEntityAdmin
}

// User is an API user (one bearer token per user).
type User struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Entity    string    `json:"entity,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	Disabled  bool      `json:"disabled,omitempty"`
}

func validUserName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) && r != ' ' {
			return false
		}
	}
	return true
}

// CreateUser creates an API user and returns its bearer token (shown once,
// stored hashed). entity is required for entity-admin and must be empty for
// the other roles. Names are unique (ErrConflict).
func (db *DB) CreateUser(ctx context.Context, name, role, entity, actor string) (string, error) {
	if !validUserName(name) {
		return "", fmt.Errorf("create user: name %q: %w", name, ErrInvalid)
	}
	if !ValidRole(role) {
		return "", fmt.Errorf("create user: role %q (want admin, analyst or entity-admin): %w", role, ErrInvalid)
	}
	if (role == RoleEntityAdmin) != (entity != "") {
		return "", fmt.Errorf("create user: an entity is required for entity-admin and only for it: %w", ErrInvalid)
	}
	plain, tokID, hash, err := token.New(UserTokenPrefix)
	if err != nil {
		return "", fmt.Errorf("create user: %w", err)
	}
	var rb [6]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return "", fmt.Errorf("create user: %w", err)
	}
	id := "u-" + hex.EncodeToString(rb[:])
	err = db.withTx(ctx, func(tx *sql.Tx) error {
		if entity != "" {
			if err := db.ensureEntity(ctx, tx, entity); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO users(id, name, role, entity, token_id, token_hash, created_at, created_by)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, name, role, entity, tokID, hash, db.now().UnixNano(), actor)
		if isUniqueViolation(err) {
			return fmt.Errorf("user %q: %w", name, ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		return db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "user.create", Target: id, Entity: entity,
			Detail: "name " + name + " role " + role})
	})
	if err != nil {
		return "", fmt.Errorf("create user: %w", err)
	}
	return plain, nil
}

// Authenticate returns the user that a bearer token belongs to. Every refusal
// (malformed, unknown, wrong secret, disabled) wraps ErrUnauthorized.
func (db *DB) Authenticate(ctx context.Context, bearer string) (User, error) {
	id, secret, err := token.Parse(bearer, UserTokenPrefix)
	if err != nil {
		return User{}, fmt.Errorf("authenticate: malformed token: %w", ErrUnauthorized)
	}
	var (
		u        User
		hash     []byte
		created  int64
		disabled int64
	)
	err = db.r.QueryRowContext(ctx, `SELECT id, name, role, entity, token_hash, created_at, created_by, disabled
		FROM users WHERE token_id = ?`, id).Scan(&u.ID, &u.Name, &u.Role, &u.Entity, &hash, &created, &u.CreatedBy, &disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("authenticate: unknown token: %w", ErrUnauthorized)
	}
	if err != nil {
		return User{}, fmt.Errorf("authenticate: %w", err)
	}
	if !token.Verify(hash, secret) {
		return User{}, fmt.Errorf("authenticate: wrong secret: %w", ErrUnauthorized)
	}
	if disabled != 0 {
		return User{}, fmt.Errorf("authenticate: user %s disabled: %w", u.Name, ErrUnauthorized)
	}
	u.CreatedAt = time.Unix(0, created).UTC()
	return u, nil
}

// ListUsers lists users (of one entity, or all when entity is "").
func (db *DB) ListUsers(ctx context.Context, entity string) ([]User, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, name, role, entity, created_at, created_by, disabled
		FROM users WHERE (? = '' OR entity = ?) ORDER BY name`, entity, entity)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	out := []User{}
	for rows.Next() {
		var (
			u        User
			created  int64
			disabled int64
		)
		if err := rows.Scan(&u.ID, &u.Name, &u.Role, &u.Entity, &created, &u.CreatedBy, &disabled); err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		u.CreatedAt, u.Disabled = time.Unix(0, created).UTC(), disabled != 0
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}
