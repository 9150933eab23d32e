package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// AuditEntry is one line of the append-only audit log. Each entry's Hash is
// SHA-256 over the previous entry's hash and this entry's fields, so removing
// or editing an entry breaks the chain (VerifyAudit).
type AuditEntry struct {
	ID       int64     `json:"id"`
	Time     time.Time `json:"time"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"`
	Target   string    `json:"target,omitempty"`
	Entity   string    `json:"entity,omitempty"`
	Detail   string    `json:"detail,omitempty"`
	Remote   string    `json:"remote,omitempty"`
	PrevHash string    `json:"prev_hash"`
	Hash     string    `json:"hash"`
}

// AuditFilter selects audit entries, newest first.
type AuditFilter struct {
	Entity   string // "" = all
	BeforeID int64  // cursor: only entries with id < BeforeID (0 = from the newest)
	Limit    int    // default 100, at most 1000
}

type remoteKey struct{}

// WithRemote returns a context that carries the remote address of the request
// being served; audit entries written under it record that address.
func WithRemote(ctx context.Context, remote string) context.Context {
	return context.WithValue(ctx, remoteKey{}, remote)
}

func remoteFrom(ctx context.Context) string {
	s, _ := ctx.Value(remoteKey{}).(string)
	return s
}

// genesisHash is the prev_hash of the first entry.
var genesisHash = strings.Repeat("0", 64)

func auditHash(e *AuditEntry) string {
	h := sha256.New()
	var b [8]byte
	field := func(s string) {
		binary.BigEndian.PutUint64(b[:], uint64(len(s)))
		h.Write(b[:])
		h.Write([]byte(s))
	}
	field(e.PrevHash)
	binary.BigEndian.PutUint64(b[:], uint64(e.ID))
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(e.Time.UnixNano()))
	h.Write(b[:])
	for _, s := range []string{e.Actor, e.Action, e.Target, e.Entity, e.Detail, e.Remote} {
		field(s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// appendAudit appends e inside tx (the caller's write transaction, so the
// change and its audit line commit together). Time and Remote default to now
// and the context's remote address.
func (db *DB) appendAudit(ctx context.Context, tx *sql.Tx, e AuditEntry) error {
	if e.Actor == "" || e.Action == "" {
		return fmt.Errorf("audit: actor and action required: %w", ErrInvalid)
	}
	if e.Time.IsZero() {
		e.Time = db.now()
	}
	if e.Remote == "" {
		e.Remote = remoteFrom(ctx)
	}
	var lastID int64
	prev := genesisHash
	err := tx.QueryRowContext(ctx, `SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1`).Scan(&lastID, &prev)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("audit: read chain head: %w", err)
	}
	e.ID = lastID + 1
	e.PrevHash = prev
	e.Hash = auditHash(&e)
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_log(id, time, actor, action, target, entity, detail, remote, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.Time.UnixNano(), e.Actor, e.Action, e.Target, e.Entity, e.Detail, e.Remote, e.PrevHash, e.Hash)
	if err != nil {
		return fmt.Errorf("audit: insert: %w", err)
	}
	return nil
}

// Audit appends one entry to the audit log in its own transaction.
func (db *DB) Audit(ctx context.Context, e AuditEntry) error {
	return db.withTx(ctx, func(tx *sql.Tx) error { return db.appendAudit(ctx, tx, e) })
}

// ListAudit returns audit entries, newest first.
func (db *DB) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	limit := clampLimit(f.Limit)
	var (
		where []string
		args  []any
	)
	if f.Entity != "" {
		where = append(where, "entity = ?")
		args = append(args, f.Entity)
	}
	if f.BeforeID > 0 {
		where = append(where, "id < ?")
		args = append(args, f.BeforeID)
	}
	q := `SELECT id, time, actor, action, target, entity, detail, remote, prev_hash, hash FROM audit_log`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}

func scanAudit(rows *sql.Rows) (AuditEntry, error) {
	var (
		e AuditEntry
		t int64
	)
	if err := rows.Scan(&e.ID, &t, &e.Actor, &e.Action, &e.Target, &e.Entity, &e.Detail, &e.Remote, &e.PrevHash, &e.Hash); err != nil {
		return e, err
	}
	e.Time = time.Unix(0, t).UTC()
	return e, nil
}

// ErrAuditTampered is returned (wrapped) by VerifyAudit when the chain is broken.
var ErrAuditTampered = errors.New("audit log chain broken")

// VerifyAudit walks the whole audit log and checks the hash chain. It returns
// the number of entries checked.
func (db *DB) VerifyAudit(ctx context.Context) (int, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, time, actor, action, target, entity, detail, remote, prev_hash, hash FROM audit_log ORDER BY id`)
	if err != nil {
		return 0, fmt.Errorf("verify audit: %w", err)
	}
	defer rows.Close()
	prev, n, lastID := genesisHash, 0, int64(0)
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return n, fmt.Errorf("verify audit: %w", err)
		}
		if e.ID != lastID+1 {
			return n, fmt.Errorf("entry %d follows %d: %w", e.ID, lastID, ErrAuditTampered)
		}
		if e.PrevHash != prev {
			return n, fmt.Errorf("entry %d: prev_hash does not match entry %d: %w", e.ID, lastID, ErrAuditTampered)
		}
		if auditHash(&e) != e.Hash {
			return n, fmt.Errorf("entry %d: hash does not match its content: %w", e.ID, ErrAuditTampered)
		}
		prev, lastID = e.Hash, e.ID
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("verify audit: %w", err)
	}
	return n, nil
}

func clampLimit(n int) int {
	switch {
	case n <= 0:
		return 100
	case n > 1000:
		return 1000
	}
	return n
}
