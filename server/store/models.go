package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Model registry and rollouts (issue 5). The tables come from the first migration: models,
// rollouts, agent_model_status. The registry logic (verification, targeting, pushes) is in
// server/registry; this file only stores.

// InsertModel records a published model (m.ID and m.CreatedAt are set) and audits
// "model.publish" by actor. A second bundle with the same name and version, or the same digest,
// wraps ErrConflict.
func (db *DB) InsertModel(ctx context.Context, m Model, actor string) (Model, error) {
	m.CreatedAt = db.now().UTC()
	if len(m.Signers) == 0 {
		m.Signers = json.RawMessage("[]")
	}
	if len(m.Manifest) == 0 {
		m.Manifest = json.RawMessage("{}")
	}
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO models(name, version, detector, digest, size, manifest, signers, created_at, published_by)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, m.Name, int64(m.Version), m.Detector, m.Digest, m.Size, string(m.Manifest),
			string(m.Signers), m.CreatedAt.UnixNano(), actor)
		if err != nil {
			if strings.Contains(err.Error(), "UNIQUE") {
				return fmt.Errorf("model %s@%d (%s): %w", m.Name, m.Version, m.Digest, ErrConflict)
			}
			return err
		}
		if m.ID, err = res.LastInsertId(); err != nil {
			return err
		}
		m.PublishedBy = actor
		return db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "model.publish",
			Target: fmt.Sprintf("%s@%d", m.Name, m.Version), Detail: m.Digest})
	})
	if err != nil {
		return Model{}, fmt.Errorf("insert model: %w", err)
	}
	return m, nil
}

// ModelByVersion returns the model NAME@VERSION; unknown wraps ErrNotFound.
func (db *DB) ModelByVersion(ctx context.Context, name string, version uint64) (Model, error) {
	m, err := scanModel(db.r.QueryRowContext(ctx, `SELECT `+modelCols+` FROM models WHERE name = ? AND version = ?`, name, int64(version)))
	if errors.Is(err, sql.ErrNoRows) {
		return m, fmt.Errorf("model %s@%d: %w", name, version, ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("model %s@%d: %w", name, version, err)
	}
	return m, nil
}

// RolloutSpec is a rollout to create.
type RolloutSpec struct {
	ID      string
	ModelID int64
	Entity  string   // "" = every entity
	Agents  []string // explicit agent ids (nil = by entity / percent)
	Percent int      // 0 = all targeted agents; 1..100 = stable share
	Shadow  bool
	// HaltFactor: a shadow rollout halts itself when the new model's alert rate exceeds the
	// active one's by this factor (0 = never; rule in server/registry, docs/rollouts.md).
	HaltFactor float64
	// RollbackInstruction is the signed rollback instruction (models/rollback) sent with the
	// offers of a rollback rollout (nil = an ordinary rollout). The registry verifies it first.
	RollbackInstruction []byte
}

// RolloutTarget is the JSON stored in rollouts.target.
type RolloutTarget struct {
	Agents     []string `json:"agents,omitempty"`
	HaltFactor float64  `json:"halt_factor,omitempty"`
}

// CreateRollout records a rollout (state "active") and audits "rollout.create".
func (db *DB) CreateRollout(ctx context.Context, s RolloutSpec, actor string) error {
	target, err := json.Marshal(RolloutTarget{Agents: s.Agents, HaltFactor: s.HaltFactor})
	if err != nil {
		return fmt.Errorf("create rollout: %w", err)
	}
	shadow := 0
	if s.Shadow {
		shadow = 1
	}
	err = db.withTx(ctx, func(tx *sql.Tx) error {
		var name string
		var ver int64
		if err := tx.QueryRowContext(ctx, `SELECT name, version FROM models WHERE id = ?`, s.ModelID).Scan(&name, &ver); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("model id %d: %w", s.ModelID, ErrNotFound)
			}
			return err
		}
		var instr any // NULL unless a rollback
		if len(s.RollbackInstruction) > 0 {
			instr = s.RollbackInstruction
		}
		now := db.now().UnixNano()
		if _, err := tx.ExecContext(ctx, `INSERT INTO rollouts(id, model_id, entity, target, percent, shadow, state, created_at, created_by,
				state_changed_at, rollback_instruction)
			VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?)`, s.ID, s.ModelID, s.Entity, string(target), s.Percent, shadow,
			now, actor, now, instr); err != nil {
			return err
		}
		detail := string(target)
		if s.Percent > 0 {
			detail = fmt.Sprintf("%s percent=%d", detail, s.Percent)
		}
		if s.Shadow {
			detail += " shadow"
		}
		if instr != nil {
			detail += " rollback (signed instruction)"
		}
		return db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "rollout.create", Target: fmt.Sprintf("%s %s@%d", s.ID, name, ver),
			Entity: s.Entity, Detail: detail})
	})
	if err != nil {
		return fmt.Errorf("create rollout: %w", err)
	}
	return nil
}

// HaltRollout moves an active rollout to "halted" with reason (stored and audited as
// "rollout.halted" by actor) and keeps final, the JSON of the shadow reports that made it halt.
// It reports false, and changes nothing, when the rollout is not active (already halted,
// superseded) or unknown, so concurrent halts record one entry. The shadow halt rule
// (server/registry) calls it; a halt by hand is HaltRolloutByUser.
func (db *DB) HaltRollout(ctx context.Context, id, actor, reason string, final json.RawMessage) (bool, error) {
	halted := false
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		halted, err = db.haltRollout(ctx, tx, id, actor, "rollout.halted", reason, final)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("halt rollout %s: %w", id, err)
	}
	return halted, nil
}

// HaltRolloutByUser halts an active rollout by hand: state "halted", reason, time and actor
// stored, audited as "rollout.halt" by actor; final, as for HaltRollout, keeps a shadow
// rollout's reports at the halt (nil: none). An unknown rollout wraps ErrNotFound, one no longer
// active (halted by hand or by the shadow halt rule) ErrConflict naming its state, and a reason
// longer than 2048 bytes or with control characters ErrInvalid.
func (db *DB) HaltRolloutByUser(ctx context.Context, id, actor, reason string, final json.RawMessage) error {
	if len(reason) > maxStatusReason || strings.ContainsFunc(reason, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("halt rollout %s: reason: at most %d bytes, no control characters: %w", id, maxStatusReason, ErrInvalid)
	}
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		halted, err := db.haltRollout(ctx, tx, id, actor, "rollout.halt", reason, final)
		if err != nil || halted {
			return err
		}
		var state, by string
		err = tx.QueryRowContext(ctx, `SELECT state, state_changed_by FROM rollouts WHERE id = ?`, id).Scan(&state, &by)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("rollout %s: %w", id, ErrNotFound)
		case err != nil:
			return err
		case by != "":
			return fmt.Errorf("rollout %s is already %s (by %s): %w", id, state, by, ErrConflict)
		default:
			return fmt.Errorf("rollout %s is already %s: %w", id, state, ErrConflict)
		}
	})
	if err != nil {
		return fmt.Errorf("halt rollout: %w", err)
	}
	return nil
}

// haltRollout moves rollout id from "active" to "halted" within tx and audits action; it
// reports false, changing nothing, when the rollout is unknown or not active.
func (db *DB) haltRollout(ctx context.Context, tx *sql.Tx, id, actor, action, reason string, final json.RawMessage) (bool, error) {
	reason = wirev1.Truncate(reason, maxStatusReason)
	if !json.Valid(final) {
		final = nil
	}
	res, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = 'halted', state_reason = ?, state_changed_at = ?, state_changed_by = ?,
			shadow_final = ?
		WHERE id = ? AND state = 'active'`, reason, db.now().UnixNano(), actor, string(final), id)
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	var entity string
	if err := tx.QueryRowContext(ctx, `SELECT entity FROM rollouts WHERE id = ?`, id).Scan(&entity); err != nil {
		return false, err
	}
	return true, db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: action, Target: id, Entity: entity, Detail: reason})
}

// SetRolloutState changes a rollout's state (active, halted, superseded) and audits it.
func (db *DB) SetRolloutState(ctx context.Context, id, state, actor, detail string) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = ?, state_reason = ?, state_changed_at = ? WHERE id = ?`,
			state, detail, db.now().UnixNano(), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("rollout %s: %w", id, ErrNotFound)
		}
		return db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "rollout." + state, Target: id, Detail: detail})
	})
	if err != nil {
		return fmt.Errorf("set rollout state: %w", err)
	}
	return nil
}

// RolloutRecord is a rollout with what targeting needs.
type RolloutRecord struct {
	Rollout
	ModelID  int64
	Detector string
	Size     int64
	Agents   []string
	Halt     float64
	// RollbackInstruction is the signed rollback instruction sent with its offers (nil = none).
	RollbackInstruction []byte
	// ShadowFinal is the JSON the registry kept when it halted the rollout (the shadow reports
	// that made it halt); nil otherwise.
	ShadowFinal json.RawMessage
}

const rolloutRecordCols = `r.id, r.model_id, m.name, m.version, m.digest, m.detector, m.size, r.entity, r.target,
	r.percent, r.shadow, r.state, r.created_at, r.created_by, r.state_reason, r.state_changed_at, r.state_changed_by,
	r.rollback_instruction, r.shadow_final`

// ActiveRollouts lists the rollouts in state "active", oldest first (in the order they were created).
func (db *DB) ActiveRollouts(ctx context.Context) ([]RolloutRecord, error) {
	return db.rolloutRecords(ctx, `r.state = 'active'`)
}

// RolloutsInStates lists the rollouts in any of states, oldest first (at most the newest 10000).
func (db *DB) RolloutsInStates(ctx context.Context, states ...string) ([]RolloutRecord, error) {
	if len(states) == 0 {
		return nil, nil
	}
	args := make([]any, len(states))
	for i, st := range states {
		args[i] = st
	}
	return db.rolloutRecords(ctx, `r.state IN (?`+strings.Repeat(`, ?`, len(states)-1)+`)`, args...)
}

// RolloutByID returns one rollout in any state; unknown wraps ErrNotFound.
func (db *DB) RolloutByID(ctx context.Context, id string) (RolloutRecord, error) {
	rs, err := db.rolloutRecords(ctx, `r.id = ?`, id)
	if err != nil {
		return RolloutRecord{}, err
	}
	if len(rs) == 0 {
		return RolloutRecord{}, fmt.Errorf("rollout %s: %w", id, ErrNotFound)
	}
	return rs[0], nil
}

func (db *DB) rolloutRecords(ctx context.Context, where string, args ...any) ([]RolloutRecord, error) {
	// Ordered by rowid, the order of creation (rowids grow; rollouts are
	// never deleted), not by created_at: the wall clock may step back, and
	// the registry takes the last rollout of a model name as its newest.
	rows, err := db.r.QueryContext(ctx, `SELECT * FROM (SELECT `+rolloutRecordCols+`, r.rowid AS rid
		FROM rollouts r JOIN models m ON m.id = r.model_id WHERE `+where+` ORDER BY r.rowid DESC LIMIT 10000)
		ORDER BY rid`, args...)
	if err != nil {
		return nil, fmt.Errorf("rollouts: %w", err)
	}
	defer rows.Close()
	var out []RolloutRecord
	for rows.Next() {
		var (
			r                             RolloutRecord
			ver, created, shadow, changed int64
			target, final                 string
			instr                         []byte
			rid                           int64
		)
		if err := rows.Scan(&r.ID, &r.ModelID, &r.Model.Name, &ver, &r.Model.Digest, &r.Detector, &r.Size, &r.Entity, &target,
			&r.Percent, &shadow, &r.State, &created, &r.CreatedBy, &r.StateReason, &changed, &r.StateChangedBy, &instr, &final, &rid); err != nil {
			return nil, fmt.Errorf("rollouts: %w", err)
		}
		r.Model.Version, r.Shadow, r.CreatedAt = uint64(ver), shadow != 0, time.Unix(0, created).UTC()
		if changed > 0 {
			r.StateChangedAt = time.Unix(0, changed).UTC()
		}
		if len(instr) > 0 {
			r.RollbackInstruction = instr
		}
		if final != "" && json.Valid([]byte(final)) {
			r.ShadowFinal = json.RawMessage(final)
		}
		var t RolloutTarget
		if json.Unmarshal([]byte(target), &t) == nil {
			r.Agents, r.Halt = t.Agents, t.HaltFactor
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rollouts: %w", err)
	}
	return out, nil
}

// modelStates are the states an agent reports about a model (agent/update), true for the
// terminal ones: the agent will not move further without a new offer.
var modelStates = map[string]bool{
	"offered": false, "fetched": false, "verified": false,
	"active": true, "rejected": true, "rolled_back": true, "shadow": true, "withdrawn": true,
}

// IsTerminalModelState reports whether an agent's model state ends an offer.
func IsTerminalModelState(s string) bool { return modelStates[s] }

const (
	maxStatusReason  = 2048
	maxStatusDigest  = 80
	maxStatusRollout = 128
)

// RecordModelStatus stores an agent's report about a model (the endpoint calls it for every
// ModelStatus on the CONTROL stream): the latest state per agent, bundle digest and rollout.
// Only reports about what the registry knows are kept, so that an agent cannot grow the table:
// a known state, the digest of a published model, and no rollout id or the id of a rollout of
// that model that targets the agent; anything else wraps ErrInvalid (malformed, or a rollout not
// targeting the agent) or ErrNotFound (unknown model or rollout). The reason is cut to maxStatusReason bytes.
func (db *DB) RecordModelStatus(ctx context.Context, agentID string, st *wirev1.ModelStatus) error {
	digest := st.GetModel().GetDigest()
	if _, known := modelStates[st.State]; !known || digest == "" || len(digest) > maxStatusDigest || len(st.RolloutId) > maxStatusRollout {
		return fmt.Errorf("record model status: state %.32q, digest %.80q: %w", st.State, digest, ErrInvalid)
	}
	reason := wirev1.Truncate(st.Reason, maxStatusReason)
	t := time.Unix(0, st.TimeUnixNano)
	if st.TimeUnixNano <= 0 {
		t = db.now()
	}
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		if st.RolloutId != "" {
			if err := checkReportTarget(ctx, tx, agentID, st.RolloutId, digest); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO agent_model_status(agent_id, rollout_id, model_digest, state, reason, time)
			SELECT ?, ?, ?, ?, ?, ?
			WHERE EXISTS (SELECT 1 FROM models WHERE digest = ?)
				AND (? = '' OR EXISTS (SELECT 1 FROM rollouts r JOIN models m ON m.id = r.model_id WHERE r.id = ? AND m.digest = ?))
			ON CONFLICT(agent_id, model_digest, rollout_id) DO UPDATE SET
				state = excluded.state, reason = excluded.reason, time = excluded.time`,
			agentID, st.RolloutId, digest, st.State, reason, t.UnixNano(), digest, st.RolloutId, st.RolloutId, digest)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("model %.80q of rollout %.128q: %w", digest, st.RolloutId, ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record model status: %w", err)
	}
	return nil
}

// checkReportTarget refuses (ErrInvalid) a report of agentID naming rollout, a rollout of the
// bundle digest, that does not target the agent: any agent may report about any bundle, but a
// report under a rollout counts in that rollout's progress (ListRollouts), so one agent could
// otherwise mark another entity's rollout active, rejected or rolled back for one more agent.
// An unknown rollout, or one of another bundle, wraps ErrNotFound.
func checkReportTarget(ctx context.Context, tx *sql.Tx, agentID, rollout, digest string) error {
	var (
		entity, target, name string
		percent              int
	)
	err := tx.QueryRowContext(ctx, `SELECT r.entity, r.target, r.percent, m.name FROM rollouts r JOIN models m ON m.id = r.model_id
		WHERE r.id = ? AND m.digest = ?`, rollout, digest).Scan(&entity, &target, &percent, &name)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("model %.80q of rollout %.128q: %w", digest, rollout, ErrNotFound)
	}
	if err != nil {
		return err
	}
	var agentEntity string
	err = tx.QueryRowContext(ctx, `SELECT entity FROM agents WHERE id = ?`, agentID).Scan(&agentEntity)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("agent %s: %w", agentID, ErrNotFound)
	}
	if err != nil {
		return err
	}
	var t RolloutTarget
	_ = json.Unmarshal([]byte(target), &t) // as rolloutRecords reads it
	if !RolloutTargets(entity, t.Agents, percent, name, agentID, agentEntity) {
		return fmt.Errorf("rollout %.128q does not target agent %s: %w", rollout, agentID, ErrInvalid)
	}
	return nil
}

// InCanary is the stable percentage choice: the agent is in the first percent% of a hash of
// (agent id, model name), so the same agents stay in a 5% canary across versions of a model, and
// growing the percentage only adds agents.
func InCanary(agentID, modelName string, percent int) bool {
	if percent >= 100 {
		return true
	}
	if percent <= 0 {
		return false
	}
	s := sha256.Sum256([]byte(modelName + "\x00" + agentID))
	return binary.BigEndian.Uint64(s[:8])%10000 < uint64(percent)*100
}

// RolloutTargets reports whether a rollout of model modelName scoped to entity ("" = every
// entity), agents (none = not by list) and percent (0 = all) targets agent agentID of entity
// agentEntity. server/registry decides its offers with it; the store checks reports with it.
func RolloutTargets(entity string, agents []string, percent int, modelName, agentID, agentEntity string) bool {
	if len(agents) > 0 && !slices.Contains(agents, agentID) {
		return false
	}
	if entity != "" && entity != agentEntity {
		return false
	}
	if percent > 0 && !InCanary(agentID, modelName, percent) {
		return false
	}
	return true
}

// AgentModelStatus is an agent's last report about one bundle under one rollout.
type AgentModelStatus struct {
	AgentID   string    `json:"agent_id"`
	Entity    string    `json:"entity"`
	RolloutID string    `json:"rollout_id,omitempty"`
	Digest    string    `json:"digest"`
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	Time      time.Time `json:"time"`
}

// ModelStatuses returns the reports of one agent ("" = all agents) about one digest ("" = all):
// one per agent, digest and rollout (RolloutID "" for a report naming no rollout).
func (db *DB) ModelStatuses(ctx context.Context, agentID, digest string) ([]AgentModelStatus, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT s.agent_id, COALESCE(a.entity, ''), s.rollout_id, s.model_digest, s.state, s.reason, s.time
		FROM agent_model_status s LEFT JOIN agents a ON a.id = s.agent_id
		WHERE (? = '' OR s.agent_id = ?) AND (? = '' OR s.model_digest = ?) ORDER BY s.agent_id, s.model_digest, s.rollout_id`, agentID, agentID, digest, digest)
	if err != nil {
		return nil, fmt.Errorf("model statuses: %w", err)
	}
	defer rows.Close()
	var out []AgentModelStatus
	for rows.Next() {
		var s AgentModelStatus
		var t int64
		if err := rows.Scan(&s.AgentID, &s.Entity, &s.RolloutID, &s.Digest, &s.State, &s.Reason, &t); err != nil {
			return nil, fmt.Errorf("model statuses: %w", err)
		}
		s.Time = time.Unix(0, t).UTC()
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("model statuses: %w", err)
	}
	return out, nil
}
