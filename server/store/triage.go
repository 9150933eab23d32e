package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Triage statuses of a finding.
const (
	StatusNew           = "new"
	StatusAcknowledged  = "acknowledged"
	StatusFalsePositive = "false_positive"
	StatusResolved      = "resolved"
)

// ValidStatus reports whether s is a triage status.
func ValidStatus(s string) bool {
	return s == StatusNew || s == StatusAcknowledged || s == StatusFalsePositive || s == StatusResolved
}

// Bounds of triage input.
const (
	MaxCommentLen  = 4096
	MaxAssigneeLen = 64
)

// Triage is a change to a finding's triage state. Nil fields are left as
// they are; at least one field must be set.
type Triage struct {
	Status   *string
	Assignee *string
	Comment  string
}

// FindingNote is one triage step in a finding's history.
type FindingNote struct {
	ID        int64     `json:"id"`
	FindingID int64     `json:"finding_id"`
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor"`
	Status    string    `json:"status,omitempty"`
	Assignee  string    `json:"assignee,omitempty"`
	Comment   string    `json:"comment,omitempty"`
}

// Suppression tells an entity's agents to stop raising findings of Detector
// whose context matches every non-empty field (DstPort 0 = any). It is
// created when an analyst marks a finding a false positive, and lifted when
// that finding is triaged otherwise again (or by hand).
type Suppression struct {
	ID        int64     `json:"id"`
	Entity    string    `json:"entity"`
	Detector  string    `json:"detector"`
	SrcIP     string    `json:"src_ip,omitempty"`
	DstIP     string    `json:"dst_ip,omitempty"`
	DstPort   uint32    `json:"dst_port,omitempty"`
	Proto     string    `json:"proto,omitempty"`
	Path      string    `json:"path,omitempty"`
	FindingID int64     `json:"finding_id,omitempty"`
	Comment   string    `json:"comment,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
	LiftedAt  time.Time `json:"lifted_at,omitzero"`
	LiftedBy  string    `json:"lifted_by,omitempty"`
}

// Matches reports whether a finding's detector and context fall under the
// suppression: the rule agents apply before raising a finding.
func (s Suppression) Matches(detector string, c FindingContext) bool {
	return s.LiftedAt.IsZero() && s.Detector == detector &&
		(s.SrcIP == "" || s.SrcIP == c.SrcIP) && (s.DstIP == "" || s.DstIP == c.DstIP) &&
		(s.DstPort == 0 || s.DstPort == c.DstPort) && (s.Proto == "" || strings.EqualFold(s.Proto, c.Proto)) &&
		(s.Path == "" || s.Path == c.Path)
}

// SuppressionFilter selects suppressions, newest first.
type SuppressionFilter struct {
	Entity string // "" = all
	Active bool   // only those not lifted
	Limit  int    // default 100, at most 1000
	// BeforeID > 0 returns only suppressions with a smaller id (the
	// cursor of the page before: they are listed newest first).
	BeforeID int64
}

func validText(s string, max int) bool {
	return len(s) <= max && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// TriageFinding applies a triage change to finding id in one transaction:
// the new state, a note in its history, the audit entry, and, when the
// status becomes false_positive, a suppression for the finding's entity
// (when it leaves false_positive, the suppressions it created are lifted).
// It returns the finding as it is now.
func (db *DB) TriageFinding(ctx context.Context, id int64, t Triage, actor string) (Finding, error) {
	if t.Status == nil && t.Assignee == nil && t.Comment == "" {
		return Finding{}, fmt.Errorf("triage finding %d: nothing to change: %w", id, ErrInvalid)
	}
	if t.Status != nil && !ValidStatus(*t.Status) {
		return Finding{}, fmt.Errorf("triage finding %d: status %q (want new, acknowledged, false_positive or resolved): %w", id, *t.Status, ErrInvalid)
	}
	if t.Assignee != nil && !validText(*t.Assignee, MaxAssigneeLen) {
		return Finding{}, fmt.Errorf("triage finding %d: assignee too long or not text: %w", id, ErrInvalid)
	}
	if !validText(t.Comment, MaxCommentLen) {
		return Finding{}, fmt.Errorf("triage finding %d: comment too long or not text: %w", id, ErrInvalid)
	}
	now := db.now()
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		f, err := scanFinding(tx.QueryRowContext(ctx, `SELECT `+findingCols+` FROM findings WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("finding %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("look up: %w", err)
		}
		status, assignee := f.Status, f.Assignee
		if t.Status != nil {
			status = *t.Status
		}
		if t.Assignee != nil {
			assignee = *t.Assignee
		}
		if _, err := tx.ExecContext(ctx, `UPDATE findings SET status = ?, assignee = ? WHERE id = ?`, status, assignee, id); err != nil {
			return fmt.Errorf("update: %w", err)
		}
		var noteStatus, noteAssignee string
		if t.Status != nil {
			noteStatus = status
		}
		if t.Assignee != nil {
			noteAssignee = assignee
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO finding_notes(finding_id, time, actor, status, assignee, comment)
			VALUES (?, ?, ?, ?, ?, ?)`, id, now.UnixNano(), actor, noteStatus, noteAssignee, t.Comment); err != nil {
			return fmt.Errorf("insert note: %w", err)
		}
		detail := []string{}
		if t.Status != nil {
			detail = append(detail, "status "+f.Status+" -> "+status)
		}
		if t.Assignee != nil {
			detail = append(detail, "assignee "+strconv.Quote(assignee))
		}
		if t.Comment != "" {
			detail = append(detail, "comment "+strconv.Quote(truncateRunes(t.Comment, 200)))
		}
		if err := db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "finding.triage", Target: strconv.FormatInt(id, 10),
			Entity: f.Entity, Detail: strings.Join(detail, "; ")}); err != nil {
			return err
		}
		switch {
		case status == StatusFalsePositive && f.Status != StatusFalsePositive:
			return db.addSuppression(ctx, tx, f, t.Comment, actor, now)
		case status != StatusFalsePositive && f.Status == StatusFalsePositive:
			return db.liftSuppressions(ctx, tx, "finding_id = ?", id, f.Entity, actor, now)
		}
		return nil
	})
	if err != nil {
		return Finding{}, fmt.Errorf("triage finding %d: %w", id, err)
	}
	return db.GetFinding(ctx, id)
}

func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

// addSuppression records the suppression a false positive f teaches: its
// detector and its context without the source port (ephemeral). An
// identical active suppression is not duplicated.
func (db *DB) addSuppression(ctx context.Context, tx *sql.Tx, f Finding, comment, actor string, now time.Time) error {
	c := f.Context
	res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO suppressions(entity, detector, src_ip, dst_ip, dst_port, proto, path,
		finding_id, comment, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		f.Entity, f.Detector, c.SrcIP, c.DstIP, int64(c.DstPort), c.Proto, c.Path, f.ID, comment, now.UnixNano(), actor)
	if err != nil {
		return fmt.Errorf("insert suppression: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil // the same suppression is already active
	}
	sid, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("insert suppression: %w", err)
	}
	return db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "suppression.create", Target: strconv.FormatInt(sid, 10),
		Entity: f.Entity, Detail: fmt.Sprintf("from finding %d: detector %s src %s dst %s:%d %s %s",
			f.ID, f.Detector, c.SrcIP, c.DstIP, c.DstPort, c.Proto, c.Path)})
}

// liftSuppressions lifts the active suppressions matching cond (one "? "
// argument) of entity.
func (db *DB) liftSuppressions(ctx context.Context, tx *sql.Tx, cond string, arg any, entity, actor string, now time.Time) error {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM suppressions WHERE lifted_at IS NULL AND entity = ? AND `+cond, entity, arg)
	if err != nil {
		return fmt.Errorf("find suppressions: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("find suppressions: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find suppressions: %w", err)
	}
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `UPDATE suppressions SET lifted_at = ?, lifted_by = ? WHERE id = ?`, now.UnixNano(), actor, id); err != nil {
			return fmt.Errorf("lift suppression %d: %w", id, err)
		}
		if err := db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "suppression.lift",
			Target: strconv.FormatInt(id, 10), Entity: entity}); err != nil {
			return err
		}
	}
	return nil
}

// LiftSuppression lifts one suppression by hand. Unknown ids wrap
// ErrNotFound; lifting a lifted one is a no-op.
func (db *DB) LiftSuppression(ctx context.Context, id int64, actor string) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		var entity string
		err := tx.QueryRowContext(ctx, `SELECT entity FROM suppressions WHERE id = ?`, id).Scan(&entity)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("suppression %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("look up: %w", err)
		}
		return db.liftSuppressions(ctx, tx, "id = ?", id, entity, actor, db.now())
	})
	if err != nil {
		return fmt.Errorf("lift suppression %d: %w", id, err)
	}
	return nil
}

const suppressionCols = `id, entity, detector, src_ip, dst_ip, dst_port, proto, path, finding_id, comment, created_at, created_by, lifted_at, lifted_by`

func scanSuppression(sc interface{ Scan(...any) error }) (Suppression, error) {
	var (
		s       Suppression
		port    int64
		created int64
		lifted  sql.NullInt64
	)
	if err := sc.Scan(&s.ID, &s.Entity, &s.Detector, &s.SrcIP, &s.DstIP, &port, &s.Proto, &s.Path, &s.FindingID,
		&s.Comment, &created, &s.CreatedBy, &lifted, &s.LiftedBy); err != nil {
		return s, err
	}
	s.DstPort = uint32(port)
	s.CreatedAt, s.LiftedAt = time.Unix(0, created).UTC(), fromNanos(lifted)
	return s, nil
}

// GetSuppression returns one suppression; unknown ids wrap ErrNotFound.
func (db *DB) GetSuppression(ctx context.Context, id int64) (Suppression, error) {
	s, err := scanSuppression(db.r.QueryRowContext(ctx, `SELECT `+suppressionCols+` FROM suppressions WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return s, fmt.Errorf("suppression %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return s, fmt.Errorf("get suppression %d: %w", id, err)
	}
	return s, nil
}

// ListSuppressions returns suppressions, newest first.
func (db *DB) ListSuppressions(ctx context.Context, f SuppressionFilter) ([]Suppression, error) {
	q := `SELECT ` + suppressionCols + ` FROM suppressions WHERE (? = '' OR entity = ?)`
	if f.Active {
		q += ` AND lifted_at IS NULL`
	}
	q += ` AND (? <= 0 OR id < ?) ORDER BY id DESC LIMIT ?`
	rows, err := db.r.QueryContext(ctx, q, f.Entity, f.Entity, f.BeforeID, f.BeforeID, clampLimit(f.Limit))
	if err != nil {
		return nil, fmt.Errorf("list suppressions: %w", err)
	}
	defer rows.Close()
	out := []Suppression{}
	for rows.Next() {
		s, err := scanSuppression(rows)
		if err != nil {
			return nil, fmt.Errorf("list suppressions: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list suppressions: %w", err)
	}
	return out, nil
}

// MaxActiveSuppressions bounds the suppressions ActiveSuppressions returns
// (what one message to an agent carries).
const MaxActiveSuppressions = 10000

// SuppressionSet is an entity's active suppressions, as its agents get them.
type SuppressionSet struct {
	// Items are the active suppressions, newest first, at most the limit
	// asked for.
	Items []Suppression
	// Active is the number of active suppressions in all (above len(Items)
	// when the limit cut the oldest).
	Active int
	// Generation grows by one with every creation and every lift of one of
	// the entity's suppressions (rows are never deleted), so a larger
	// generation is a newer set. 0: the entity never had one.
	Generation uint64
}

// ActiveSuppressions returns entity's active suppressions (newest first, at
// most limit; limit <= 0 or above MaxActiveSuppressions means
// MaxActiveSuppressions), their number and the set's generation, read in
// one snapshot.
func (db *DB) ActiveSuppressions(ctx context.Context, entity string, limit int) (SuppressionSet, error) {
	if limit <= 0 || limit > MaxActiveSuppressions {
		limit = MaxActiveSuppressions
	}
	var set SuppressionSet
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return set, fmt.Errorf("active suppressions of %s: %w", entity, err)
	}
	defer func() { _ = tx.Rollback() }()
	var total, lifted int64
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(lifted_at) FROM suppressions WHERE entity = ?`, entity).
		Scan(&total, &lifted); err != nil {
		return set, fmt.Errorf("active suppressions of %s: %w", entity, err)
	}
	set.Generation, set.Active = uint64(total+lifted), int(total-lifted)
	rows, err := tx.QueryContext(ctx, `SELECT `+suppressionCols+` FROM suppressions
		WHERE entity = ? AND lifted_at IS NULL ORDER BY id DESC LIMIT ?`, entity, limit)
	if err != nil {
		return set, fmt.Errorf("active suppressions of %s: %w", entity, err)
	}
	defer rows.Close()
	set.Items = []Suppression{}
	for rows.Next() {
		s, err := scanSuppression(rows)
		if err != nil {
			return set, fmt.Errorf("active suppressions of %s: %w", entity, err)
		}
		set.Items = append(set.Items, s)
	}
	if err := rows.Err(); err != nil {
		return set, fmt.Errorf("active suppressions of %s: %w", entity, err)
	}
	return set, nil
}

// FindingNotes returns a finding's triage history, oldest first: the newest
// 1000 notes when it has more.
func (db *DB) FindingNotes(ctx context.Context, findingID int64) ([]FindingNote, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT * FROM (SELECT id, finding_id, time, actor, status, assignee, comment
		FROM finding_notes WHERE finding_id = ? ORDER BY id DESC LIMIT 1000) ORDER BY id`, findingID)
	if err != nil {
		return nil, fmt.Errorf("finding notes: %w", err)
	}
	defer rows.Close()
	out := []FindingNote{}
	for rows.Next() {
		var (
			n FindingNote
			t int64
		)
		if err := rows.Scan(&n.ID, &n.FindingID, &t, &n.Actor, &n.Status, &n.Assignee, &n.Comment); err != nil {
			return nil, fmt.Errorf("finding notes: %w", err)
		}
		n.Time = time.Unix(0, t).UTC()
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("finding notes: %w", err)
	}
	return out, nil
}
