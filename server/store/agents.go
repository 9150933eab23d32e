package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/pki"
)

// Agent is an enrolled sensor.
type Agent struct {
	ID           string            `json:"id"`
	Entity       string            `json:"entity"`
	Hostname     string            `json:"hostname"`
	Version      string            `json:"version,omitempty"`
	EnrolledAt   time.Time         `json:"enrolled_at"`
	LastSeen     time.Time         `json:"last_seen,omitzero"`
	CertSerial   string            `json:"cert_serial"`
	CertNotAfter time.Time         `json:"cert_not_after"`
	RevokedAt    time.Time         `json:"revoked_at,omitzero"`
	State        json.RawMessage   `json:"state,omitempty"` // AgentState as last reported, minus counters
	Counters     map[string]uint64 `json:"counters,omitempty"`
	// EnrollToken is the id of the enrollment token that enrolled the agent:
	// RegisterAgent records the agent as the token's user. Not read back.
	EnrollToken string `json:"-"`
}

// Revoked reports whether the agent has been revoked.
func (a Agent) Revoked() bool { return !a.RevokedAt.IsZero() }

// SpoolStats is the agent's spool as it last reported it.
type SpoolStats struct {
	Depth         uint64 `json:"depth"`
	Bytes         uint64 `json:"bytes"`
	Dropped       uint64 `json:"dropped"`
	NextSeq       uint64 `json:"next_seq"`
	AckedSeq      uint64 `json:"acked_seq"`
	CapacityBytes uint64 `json:"capacity_bytes"`
}

// ModelRef names a model bundle.
type ModelRef struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Digest  string `json:"digest"`
}

// AgentState is what an agent reports in Hello and Status; TouchAgent
// stores it.
type AgentState struct {
	Version      string            `json:"version,omitempty"`
	Hostname     string            `json:"hostname,omitempty"`
	StatusJSON   string            `json:"-"` // raw status (e.g. protojson of wirev1.Status), kept verbatim when valid JSON
	Spool        SpoolStats        `json:"spool"`
	Counters     map[string]uint64 `json:"-"` // stored in their own column
	ActiveModels []ModelRef        `json:"active_models,omitempty"`
	CertNotAfter time.Time         `json:"cert_not_after,omitzero"`
}

// AgentFilter selects agents.
type AgentFilter struct {
	Entity string // "" = all
}

// RegisterAgent records a newly enrolled agent and its first certificate.
func (db *DB) RegisterAgent(ctx context.Context, a Agent) error {
	if !pki.ValidName(a.ID) {
		return fmt.Errorf("register agent: id %q: %w", a.ID, ErrInvalid)
	}
	if a.EnrolledAt.IsZero() {
		a.EnrolledAt = db.now()
	}
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		if err := db.ensureEntity(ctx, tx, a.Entity); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO agents(id, entity, hostname, version, enrolled_at, cert_serial, cert_not_after)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
			a.ID, a.Entity, a.Hostname, a.Version, a.EnrolledAt.UnixNano(), a.CertSerial, nanos(a.CertNotAfter))
		if err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("agent %s: %w", a.ID, ErrConflict)
			}
			return fmt.Errorf("insert agent: %w", err)
		}
		if a.CertSerial != "" {
			if err := insertCert(ctx, tx, a.ID, a.CertSerial, a.EnrolledAt, a.CertNotAfter); err != nil {
				return err
			}
		}
		detail := "hostname " + a.Hostname + " cert " + a.CertSerial
		if a.EnrollToken != "" {
			if _, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET used_by = ? WHERE id = ?`, a.ID, a.EnrollToken); err != nil {
				return fmt.Errorf("record token user: %w", err)
			}
			detail += " token " + a.EnrollToken
		}
		return db.appendAudit(ctx, tx, AuditEntry{Actor: "agent:" + a.ID, Action: "agent.enroll", Target: a.ID,
			Entity: a.Entity, Detail: detail})
	})
	if err != nil {
		return fmt.Errorf("register agent %s: %w", a.ID, err)
	}
	return nil
}

func insertCert(ctx context.Context, tx *sql.Tx, agentID, serial string, issued, notAfter time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO certificates(serial, agent_id, issued_at, not_after) VALUES (?, ?, ?, ?)
		ON CONFLICT(serial) DO NOTHING`, strings.ToLower(serial), agentID, issued.UnixNano(), notAfter.UnixNano())
	if err != nil {
		return fmt.Errorf("insert certificate: %w", err)
	}
	return nil
}

// RecordCert records a renewed certificate of an agent and makes it the
// agent's current one.
func (db *DB) RecordCert(ctx context.Context, agentID, serialHex string, notAfter time.Time) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET cert_serial = ?, cert_not_after = ? WHERE id = ?`,
			strings.ToLower(serialHex), notAfter.UnixNano(), agentID)
		if err != nil {
			return fmt.Errorf("update agent: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("agent %s: %w", agentID, ErrNotFound)
		}
		return insertCert(ctx, tx, agentID, serialHex, db.now(), notAfter)
	})
	if err != nil {
		return fmt.Errorf("record certificate of %s: %w", agentID, err)
	}
	return nil
}

// RevokedAgents returns the ids of every revoked agent.
func (db *DB) RevokedAgents(ctx context.Context) (map[string]bool, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id FROM agents WHERE revoked_at IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("revoked agents: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("revoked agents: %w", err)
		}
		out[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("revoked agents: %w", err)
	}
	return out, nil
}

// RevokeAgent revokes an agent and all its certificates. Revoking a revoked
// agent is a no-op (the first revocation time is kept). Unknown agents wrap
// ErrNotFound.
func (db *DB) RevokeAgent(ctx context.Context, agentID, actor string) error {
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		var (
			entity  string
			revoked sql.NullInt64
		)
		err := tx.QueryRowContext(ctx, `SELECT entity, revoked_at FROM agents WHERE id = ?`, agentID).Scan(&entity, &revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("agent %s: %w", agentID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("look up: %w", err)
		}
		if revoked.Valid {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE agents SET revoked_at = ? WHERE id = ?`, db.now().UnixNano(), agentID); err != nil {
			return fmt.Errorf("update agent: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE certificates SET revoked = 1 WHERE agent_id = ?`, agentID); err != nil {
			return fmt.Errorf("update certificates: %w", err)
		}
		return db.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "agent.revoke", Target: agentID, Entity: entity})
	})
	if err != nil {
		return fmt.Errorf("revoke agent %s: %w", agentID, err)
	}
	return nil
}

// TouchAgent records that the agent was seen and what it reported.
func (db *DB) TouchAgent(ctx context.Context, agentID string, seen time.Time, st AgentState) error {
	type stored struct {
		AgentState
		Status json.RawMessage `json:"status,omitempty"`
	}
	s := stored{AgentState: st}
	if st.StatusJSON != "" && json.Valid([]byte(st.StatusJSON)) {
		s.Status = json.RawMessage(st.StatusJSON)
	}
	stateJSON, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("touch agent %s: encode state: %w", agentID, err)
	}
	counters := st.Counters
	if counters == nil {
		counters = map[string]uint64{}
	}
	countersJSON, err := json.Marshal(counters)
	if err != nil {
		return fmt.Errorf("touch agent %s: encode counters: %w", agentID, err)
	}
	err = db.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE agents SET
				last_seen = MAX(COALESCE(last_seen, 0), ?),
				version = CASE WHEN ? = '' THEN version ELSE ? END,
				hostname = CASE WHEN ? = '' THEN hostname ELSE ? END,
				state = ?, counters = ?
			WHERE id = ?`,
			seen.UnixNano(), st.Version, st.Version, st.Hostname, st.Hostname, string(stateJSON), string(countersJSON), agentID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("touch agent %s: %w", agentID, err)
	}
	return nil
}

const agentCols = `id, entity, hostname, version, enrolled_at, last_seen, cert_serial, cert_not_after, revoked_at, state, counters`

func scanAgent(sc interface{ Scan(...any) error }) (Agent, error) {
	var (
		a                       Agent
		enrolled                int64
		seen, notAfter, revoked sql.NullInt64
		state, counters         string
	)
	if err := sc.Scan(&a.ID, &a.Entity, &a.Hostname, &a.Version, &enrolled, &seen, &a.CertSerial, &notAfter, &revoked, &state, &counters); err != nil {
		return a, err
	}
	a.EnrolledAt = time.Unix(0, enrolled).UTC()
	a.LastSeen, a.CertNotAfter, a.RevokedAt = fromNanos(seen), fromNanos(notAfter), fromNanos(revoked)
	if state != "" && state != "{}" {
		a.State = json.RawMessage(state)
	}
	if counters != "" && counters != "{}" {
		if err := json.Unmarshal([]byte(counters), &a.Counters); err != nil {
			return a, fmt.Errorf("agent %s counters: %w", a.ID, err)
		}
	}
	return a, nil
}

// ListAgents lists agents ordered by entity and id.
func (db *DB) ListAgents(ctx context.Context, f AgentFilter) ([]Agent, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+agentCols+` FROM agents WHERE (? = '' OR entity = ?) ORDER BY entity, id`,
		f.Entity, f.Entity)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	defer rows.Close()
	out := []Agent{}
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, fmt.Errorf("list agents: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	return out, nil
}

// GetAgent returns one agent; unknown ids wrap ErrNotFound.
func (db *DB) GetAgent(ctx context.Context, id string) (Agent, error) {
	a, err := scanAgent(db.r.QueryRowContext(ctx, `SELECT `+agentCols+` FROM agents WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return a, fmt.Errorf("agent %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return a, fmt.Errorf("get agent %s: %w", id, err)
	}
	return a, nil
}

// ListEntities returns every entity name, sorted.
func (db *DB) ListEntities(ctx context.Context) ([]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT name FROM entities ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list entities: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("list entities: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func isUniqueViolation(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}
