package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Model is a published model bundle in the registry.
type Model struct {
	ID          int64           `json:"id"`
	Name        string          `json:"name"`
	Version     uint64          `json:"version"`
	Detector    string          `json:"detector,omitempty"`
	Digest      string          `json:"digest"`
	Size        int64           `json:"size"`
	Manifest    json.RawMessage `json:"manifest,omitempty"`
	Signers     json.RawMessage `json:"signers"` // as stored: key ids (and algorithms) that signed the bundle
	CreatedAt   time.Time       `json:"created_at"`
	PublishedBy string          `json:"published_by,omitempty"`
}

const modelCols = `id, name, version, detector, digest, size, manifest, signers, created_at, published_by`

func scanModel(sc interface{ Scan(...any) error }) (Model, error) {
	var (
		m                 Model
		ver, created      int64
		manifest, signers string
	)
	if err := sc.Scan(&m.ID, &m.Name, &ver, &m.Detector, &m.Digest, &m.Size, &manifest, &signers, &created, &m.PublishedBy); err != nil {
		return m, err
	}
	m.Version, m.CreatedAt = uint64(ver), time.Unix(0, created).UTC()
	if manifest != "" && manifest != "{}" && json.Valid([]byte(manifest)) {
		m.Manifest = json.RawMessage(manifest)
	}
	m.Signers = json.RawMessage("[]")
	if json.Valid([]byte(signers)) {
		m.Signers = json.RawMessage(signers)
	}
	return m, nil
}

// ListModels lists the registry's models, newest first.
func (db *DB) ListModels(ctx context.Context) ([]Model, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+modelCols+` FROM models ORDER BY name, version DESC LIMIT 1000`)
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	defer rows.Close()
	out := []Model{}
	for rows.Next() {
		m, err := scanModel(rows)
		if err != nil {
			return nil, fmt.Errorf("list models: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	return out, nil
}

// ModelByDigest returns the registry's model with that digest; unknown
// digests wrap ErrNotFound.
func (db *DB) ModelByDigest(ctx context.Context, digest string) (Model, error) {
	m, err := scanModel(db.r.QueryRowContext(ctx, `SELECT `+modelCols+` FROM models WHERE digest = ?`, digest))
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("model %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("model %s: %w", digest, err)
	}
	return m, nil
}

// Rollout is a model rollout and its progress.
type Rollout struct {
	ID        string          `json:"id"`
	Model     ModelRef        `json:"model"`
	Entity    string          `json:"entity,omitempty"`
	Target    json.RawMessage `json:"target,omitempty"`
	Percent   int             `json:"percent,omitempty"`
	Shadow    bool            `json:"shadow,omitempty"`
	State     string          `json:"state"`
	CreatedAt time.Time       `json:"created_at"`
	CreatedBy string          `json:"created_by,omitempty"`
	// StateReason, StateChangedAt and StateChangedBy say why, when and by whom the rollout left
	// "active": a halt by hand (`vigilctl rollout halt`, the user) or the shadow halt rule
	// ("system", the verdict). Empty while it is active.
	StateReason    string    `json:"state_reason,omitempty"`
	StateChangedAt time.Time `json:"state_changed_at,omitzero"`
	StateChangedBy string    `json:"state_changed_by,omitempty"`
	// Progress counts agents per model state (offered, fetched, verified,
	// active, rejected, rolled_back, shadow) as they last reported it;
	// with an entity filter only that entity's agents are counted.
	Progress map[string]int `json:"progress"`
}

// RolloutFilter selects rollouts.
type RolloutFilter struct {
	// Entity, when set, selects the rollouts of that entity and the
	// deployment-wide ones (entity ""), and counts progress over that
	// entity's agents only.
	Entity string
}

// ListRollouts lists rollouts, newest first (by creation, not by the wall clock), with their progress.
func (db *DB) ListRollouts(ctx context.Context, f RolloutFilter) ([]Rollout, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT r.id, m.name, m.version, m.digest, r.entity, r.target, r.percent, r.shadow,
			r.state, r.created_at, r.created_by, r.state_reason, r.state_changed_at, r.state_changed_by
		FROM rollouts r JOIN models m ON m.id = r.model_id
		WHERE (? = '' OR r.entity = '' OR r.entity = ?) ORDER BY r.rowid DESC LIMIT 1000`, f.Entity, f.Entity)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	out := []Rollout{}
	idx := map[string]int{}
	for rows.Next() {
		var (
			r              Rollout
			ver, created   int64
			shadow         int64
			target         string
			percent        int64
			name, digest   string
			entity, state  string
			createdBy, rid string
			reason, by     string
			changed        int64
		)
		if err := rows.Scan(&rid, &name, &ver, &digest, &entity, &target, &percent, &shadow, &state, &created, &createdBy,
			&reason, &changed, &by); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list rollouts: %w", err)
		}
		r = Rollout{ID: rid, Model: ModelRef{Name: name, Version: uint64(ver), Digest: digest}, Entity: entity,
			Percent: int(percent), Shadow: shadow != 0, State: state, CreatedAt: time.Unix(0, created).UTC(),
			CreatedBy: createdBy, Progress: map[string]int{}}
		if state != "active" {
			r.StateReason, r.StateChangedBy = reason, by
			if changed > 0 {
				r.StateChangedAt = time.Unix(0, changed).UTC()
			}
		}
		if target != "" && target != "{}" && json.Valid([]byte(target)) {
			r.Target = json.RawMessage(target)
		}
		idx[rid] = len(out)
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	if len(out) == 0 {
		return out, nil
	}
	prog, err := db.r.QueryContext(ctx, `SELECT s.rollout_id, s.state, COUNT(*) FROM agent_model_status s
		JOIN agents a ON a.id = s.agent_id
		WHERE s.rollout_id != '' AND (? = '' OR a.entity = ?) GROUP BY s.rollout_id, s.state`, f.Entity, f.Entity)
	if err != nil {
		return nil, fmt.Errorf("rollout progress: %w", err)
	}
	defer prog.Close()
	for prog.Next() {
		var (
			rid, state string
			n          int
		)
		if err := prog.Scan(&rid, &state, &n); err != nil {
			return nil, fmt.Errorf("rollout progress: %w", err)
		}
		if i, ok := idx[rid]; ok {
			out[i].Progress[state] = n
		}
	}
	if err := prog.Err(); err != nil {
		return nil, fmt.Errorf("rollout progress: %w", err)
	}
	return out, nil
}

// StatsFilter selects the findings counted by FindingStats.
type StatsFilter struct {
	Entity string
	Since  time.Time // required
	Until  time.Time // required, after Since
	Bucket time.Duration
}

// MaxStatsBuckets bounds (Until-Since)/Bucket.
const MaxStatsBuckets = 2000

// StatsBucket is the number of findings of one entity and detector whose
// time falls in [Start, Start+bucket).
type StatsBucket struct {
	Start    time.Time `json:"start"`
	Entity   string    `json:"entity"`
	Detector string    `json:"detector"`
	Count    int64     `json:"count"`
}

// FindingStats counts findings per time bucket, entity and detector.
func (db *DB) FindingStats(ctx context.Context, f StatsFilter) ([]StatsBucket, error) {
	if f.Since.IsZero() || !f.Until.After(f.Since) || f.Bucket <= 0 ||
		f.Until.Sub(f.Since)/f.Bucket > MaxStatsBuckets {
		return nil, fmt.Errorf("finding stats: window or bucket out of range (at most %d buckets): %w", MaxStatsBuckets, ErrInvalid)
	}
	b, s0 := f.Bucket.Nanoseconds(), f.Since.UnixNano()
	where := []string{"time >= ?", "time < ?"}
	args := []any{b, b, s0, s0, f.Until.UnixNano()}
	if f.Entity != "" {
		where = append(where, "entity = ?")
		args = append(args, f.Entity)
	}
	q := `SELECT ((time - ?) / ?) * ? + ? AS start, entity, detector, COUNT(*) FROM findings WHERE ` +
		strings.Join(where, " AND ") + ` GROUP BY start, entity, detector ORDER BY start, entity, detector`
	args = append([]any{s0}, args...)
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("finding stats: %w", err)
	}
	defer rows.Close()
	out := []StatsBucket{}
	for rows.Next() {
		var (
			sb    StatsBucket
			start int64
		)
		if err := rows.Scan(&start, &sb.Entity, &sb.Detector, &sb.Count); err != nil {
			return nil, fmt.Errorf("finding stats: %w", err)
		}
		sb.Start = time.Unix(0, start).UTC()
		out = append(out, sb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("finding stats: %w", err)
	}
	return out, nil
}

// ForwarderCursor returns the last finding id the named forwarder has
// delivered (0 when it has none yet).
func (db *DB) ForwarderCursor(ctx context.Context, name string) (int64, error) {
	var id int64
	err := db.r.QueryRowContext(ctx, `SELECT last_id FROM forwarder_cursors WHERE name = ?`, name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("forwarder cursor %s: %w", name, err)
	}
	return id, nil
}

// SetForwarderCursor durably records that the named forwarder has delivered
// every finding up to lastID. The cursor never moves back.
func (db *DB) SetForwarderCursor(ctx context.Context, name string, lastID int64) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO forwarder_cursors(name, last_id, updated_at) VALUES (?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET last_id = MAX(last_id, excluded.last_id), updated_at = excluded.updated_at`,
			name, lastID, db.now().UnixNano())
		return err
	})
	if err != nil {
		return fmt.Errorf("set forwarder cursor %s: %w", name, err)
	}
	return nil
}

// InitForwarderCursor gives the named forwarder the cursor lastID unless it
// already has one, and returns the cursor it has then. A stored cursor of 0
// (set before any finding existed) is a cursor like any other: it is kept.
func (db *DB) InitForwarderCursor(ctx context.Context, name string, lastID int64) (int64, error) {
	var cur int64
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO forwarder_cursors(name, last_id, updated_at) VALUES (?, ?, ?)
			ON CONFLICT(name) DO NOTHING`, name, lastID, db.now().UnixNano()); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT last_id FROM forwarder_cursors WHERE name = ?`, name).Scan(&cur)
	})
	if err != nil {
		return 0, fmt.Errorf("init forwarder cursor %s: %w", name, err)
	}
	return cur, nil
}

// MaxFindingID returns the highest finding id stored (0 when none).
func (db *DB) MaxFindingID(ctx context.Context) (int64, error) {
	var id int64
	if err := db.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM findings`).Scan(&id); err != nil {
		return 0, fmt.Errorf("max finding id: %w", err)
	}
	return id, nil
}

// GetUser returns one user; unknown ids wrap ErrNotFound.
func (db *DB) GetUser(ctx context.Context, id string) (User, error) {
	var (
		u        User
		created  int64
		disabled int64
	)
	err := db.r.QueryRowContext(ctx, `SELECT id, name, role, entity, created_at, created_by, disabled FROM users WHERE id = ?`, id).
		Scan(&u.ID, &u.Name, &u.Role, &u.Entity, &created, &u.CreatedBy, &disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return u, fmt.Errorf("user %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return u, fmt.Errorf("get user %s: %w", id, err)
	}
	u.CreatedAt, u.Disabled = time.Unix(0, created).UTC(), disabled != 0
	return u, nil
}

// SetUserDisabled disables (or enables again) a user: a disabled user's
// token is refused. Audited.
func (db *DB) SetUserDisabled(ctx context.Context, id string, disabled bool, actor string) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		var entity string
		err := tx.QueryRowContext(ctx, `SELECT entity FROM users WHERE id = ?`, id).Scan(&entity)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("look up: %w", err)
		}
		v, action := 0, "user.enable"
		if disabled {
			v, action = 1, "user.disable"
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET disabled = ? WHERE id = ?`, v, id); err != nil {
			return fmt.Errorf("update: %w", err)
		}
		return db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: action, Target: id, Entity: entity})
	})
	if err != nil {
		return fmt.Errorf("set user %s disabled=%t: %w", id, disabled, err)
	}
	return nil
}
