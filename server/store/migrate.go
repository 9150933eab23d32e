package store

import (
	"context"
	"database/sql"
	"fmt"
)

// A migration moves the schema from version-1 to version. Migrations are
// append-only: never edit one that has shipped; add the next.
type migration struct {
	version int
	name    string
	stmts   []string
}

var migrations = []migration{
	{1, "initial schema", []string{
		`CREATE TABLE entities (
			name       TEXT PRIMARY KEY,
			created_at INTEGER NOT NULL
		) STRICT`,
		`CREATE TABLE agents (
			id             TEXT PRIMARY KEY,
			entity         TEXT NOT NULL REFERENCES entities(name),
			hostname       TEXT NOT NULL DEFAULT '',
			version        TEXT NOT NULL DEFAULT '',
			enrolled_at    INTEGER NOT NULL,
			last_seen      INTEGER,
			cert_serial    TEXT NOT NULL DEFAULT '',
			cert_not_after INTEGER,
			revoked_at     INTEGER,
			state          TEXT NOT NULL DEFAULT '{}',
			counters       TEXT NOT NULL DEFAULT '{}'
		) STRICT`,
		`CREATE INDEX agents_entity ON agents(entity)`,
		`CREATE TABLE enroll_tokens (
			id         TEXT PRIMARY KEY,
			entity     TEXT NOT NULL REFERENCES entities(name),
			hash       BLOB NOT NULL,
			created_at INTEGER NOT NULL,
			expires_at INTEGER NOT NULL,
			used_at    INTEGER,
			used_by    TEXT NOT NULL DEFAULT '',
			created_by TEXT NOT NULL DEFAULT ''
		) STRICT`,
		`CREATE INDEX enroll_tokens_entity ON enroll_tokens(entity)`,
		`CREATE TABLE certificates (
			serial    TEXT PRIMARY KEY,
			agent_id  TEXT NOT NULL REFERENCES agents(id),
			issued_at INTEGER NOT NULL,
			not_after INTEGER NOT NULL,
			revoked   INTEGER NOT NULL DEFAULT 0
		) STRICT`,
		`CREATE INDEX certificates_agent ON certificates(agent_id)`,
		`CREATE TABLE findings (
			id            INTEGER PRIMARY KEY AUTOINCREMENT,
			agent_id      TEXT NOT NULL,
			entity        TEXT NOT NULL,
			seq           INTEGER NOT NULL,
			detector      TEXT NOT NULL,
			time          INTEGER NOT NULL,
			first_seen    INTEGER,
			last_seen     INTEGER,
			count         INTEGER NOT NULL DEFAULT 1,
			severity      INTEGER NOT NULL DEFAULT 0,
			score         REAL NOT NULL DEFAULT 0,
			threshold     REAL NOT NULL DEFAULT 0,
			model_name    TEXT NOT NULL DEFAULT '',
			model_version INTEGER NOT NULL DEFAULT 0,
			model_digest  TEXT NOT NULL DEFAULT '',
			src_ip        TEXT NOT NULL DEFAULT '',
			dst_ip        TEXT NOT NULL DEFAULT '',
			src_port      INTEGER NOT NULL DEFAULT 0,
			dst_port      INTEGER NOT NULL DEFAULT 0,
			proto         TEXT NOT NULL DEFAULT '',
			path          TEXT NOT NULL DEFAULT '',
			src_mac       TEXT NOT NULL DEFAULT '',
			packets       INTEGER NOT NULL DEFAULT 0,
			bytes         INTEGER NOT NULL DEFAULT 0,
			top_features  TEXT NOT NULL DEFAULT '[]',
			summary       TEXT NOT NULL DEFAULT '',
			received_at   INTEGER NOT NULL,
			UNIQUE (agent_id, seq)
		) STRICT`,
		// Listing is newest first by id (the cursor); (entity, id) lets the
		// common per-entity list walk one index in id order, and time serves
		// since/until. Every index costs ingest: measured ~2-3 us of CPU per
		// finding each here, so a detector index (detector filters are
		// selective enough walking by id) is left out until a query needs it.
		`CREATE INDEX findings_entity ON findings(entity, id)`,
		`CREATE INDEX findings_time ON findings(time)`,
		`CREATE TABLE models (
			id           INTEGER PRIMARY KEY AUTOINCREMENT,
			name         TEXT NOT NULL,
			version      INTEGER NOT NULL,
			detector     TEXT NOT NULL DEFAULT '',
			digest       TEXT NOT NULL UNIQUE,
			size         INTEGER NOT NULL DEFAULT 0,
			manifest     TEXT NOT NULL DEFAULT '{}',
			signers      TEXT NOT NULL DEFAULT '[]',
			created_at   INTEGER NOT NULL,
			published_by TEXT NOT NULL DEFAULT '',
			UNIQUE (name, version)
		) STRICT`,
		`CREATE TABLE rollouts (
			id         TEXT PRIMARY KEY,
			model_id   INTEGER NOT NULL REFERENCES models(id),
			entity     TEXT NOT NULL DEFAULT '',
			target     TEXT NOT NULL DEFAULT '{}',
			percent    INTEGER NOT NULL DEFAULT 0,
			shadow     INTEGER NOT NULL DEFAULT 0,
			state      TEXT NOT NULL DEFAULT 'active',
			created_at INTEGER NOT NULL,
			created_by TEXT NOT NULL DEFAULT ''
		) STRICT`,
		`CREATE TABLE agent_model_status (
			agent_id     TEXT NOT NULL REFERENCES agents(id),
			rollout_id   TEXT NOT NULL DEFAULT '',
			model_digest TEXT NOT NULL,
			state        TEXT NOT NULL,
			reason       TEXT NOT NULL DEFAULT '',
			time         INTEGER NOT NULL,
			PRIMARY KEY (agent_id, model_digest)
		) STRICT`,
		`CREATE TABLE users (
			id         TEXT PRIMARY KEY,
			name       TEXT NOT NULL UNIQUE,
			role       TEXT NOT NULL,
			entity     TEXT NOT NULL DEFAULT '',
			token_id   TEXT NOT NULL UNIQUE,
			token_hash BLOB NOT NULL,
			created_at INTEGER NOT NULL,
			created_by TEXT NOT NULL DEFAULT '',
			disabled   INTEGER NOT NULL DEFAULT 0
		) STRICT`,
		`CREATE TABLE audit_log (
			id        INTEGER PRIMARY KEY AUTOINCREMENT,
			time      INTEGER NOT NULL,
			actor     TEXT NOT NULL,
			action    TEXT NOT NULL,
			target    TEXT NOT NULL DEFAULT '',
			entity    TEXT NOT NULL DEFAULT '',
			detail    TEXT NOT NULL DEFAULT '',
			remote    TEXT NOT NULL DEFAULT '',
			prev_hash TEXT NOT NULL,
			hash      TEXT NOT NULL
		) STRICT`,
		`CREATE INDEX audit_entity ON audit_log(entity, id)`,
		// Append-only: the database itself refuses to change history.
		`CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
			BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END`,
		`CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
			BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END`,
	}},
	{2, "triage, suppressions, forwarder cursors", []string{
		// Triage state lives on the finding (adding a column with a
		// constant default does not rewrite the table); its history lives
		// in finding_notes. No index on status: a status filter walks the
		// id (or entity, id) order like the detector filter does.
		`ALTER TABLE findings ADD COLUMN status TEXT NOT NULL DEFAULT 'new'`,
		`ALTER TABLE findings ADD COLUMN assignee TEXT NOT NULL DEFAULT ''`,
		`CREATE TABLE finding_notes (
			id         INTEGER PRIMARY KEY AUTOINCREMENT,
			finding_id INTEGER NOT NULL REFERENCES findings(id),
			time       INTEGER NOT NULL,
			actor      TEXT NOT NULL,
			status     TEXT NOT NULL DEFAULT '',
			assignee   TEXT NOT NULL DEFAULT '',
			comment    TEXT NOT NULL DEFAULT ''
		) STRICT`,
		`CREATE INDEX finding_notes_finding ON finding_notes(finding_id, id)`,
		// A suppression is what a false positive teaches an entity's agents:
		// findings of this detector whose context matches every non-empty
		// field are not raised again. Lifted suppressions are kept (lifted_at).
		`CREATE TABLE suppressions (
			id         INTEGER PRIMARY KEY AUTOINCREMENT,
			entity     TEXT NOT NULL,
			detector   TEXT NOT NULL,
			src_ip     TEXT NOT NULL DEFAULT '',
			dst_ip     TEXT NOT NULL DEFAULT '',
			dst_port   INTEGER NOT NULL DEFAULT 0,
			proto      TEXT NOT NULL DEFAULT '',
			path       TEXT NOT NULL DEFAULT '',
			finding_id INTEGER NOT NULL DEFAULT 0,
			comment    TEXT NOT NULL DEFAULT '',
			created_at INTEGER NOT NULL,
			created_by TEXT NOT NULL DEFAULT '',
			lifted_at  INTEGER,
			lifted_by  TEXT NOT NULL DEFAULT ''
		) STRICT`,
		`CREATE INDEX suppressions_entity ON suppressions(entity, id)`,
		`CREATE UNIQUE INDEX suppressions_active ON suppressions(entity, detector, src_ip, dst_ip, dst_port, proto, path)
			WHERE lifted_at IS NULL`,
		// Exporters' durable cursors: the last finding id each forwarder
		// has delivered.
		`CREATE TABLE forwarder_cursors (
			name       TEXT PRIMARY KEY,
			last_id    INTEGER NOT NULL,
			updated_at INTEGER NOT NULL
		) STRICT`,
	}},
	// Findings list over millions of rows (issue 7 benchmark, p95 goal
	// 100 ms at 10 million findings, docs/benchmarks.md): a time window
	// within an entity, the newest findings of one agent and of one
	// detector (severity read from the index, so that the walk in id
	// order checks it without touching the table).
	{3, "findings list indexes", []string{
		`CREATE INDEX findings_entity_time ON findings(entity, time)`,
		`CREATE INDEX findings_agent ON findings(agent_id, id)`,
		`CREATE INDEX findings_detector ON findings(detector, id, severity)`,
	}},
	// Issue 5, shadow halts and rollbacks over the wire: why and when a
	// rollout left "active" (a shadow rollout that halted itself says so,
	// and keeps the agents' shadow reports that made it halt), and the
	// signed rollback instruction a rollback rollout sends in its offers
	// (NULL for an ordinary rollout).
	{4, "rollout state reason, rollback instructions", []string{
		`ALTER TABLE rollouts ADD COLUMN state_reason TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE rollouts ADD COLUMN state_changed_at INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE rollouts ADD COLUMN rollback_instruction BLOB`,
		`ALTER TABLE rollouts ADD COLUMN shadow_final TEXT NOT NULL DEFAULT ''`,
	}},
	// Durable ingest (issue 2 benchmark): a finding's detail (first/last
	// seen, count, score, threshold, model, context, top features, summary,
	// packets, bytes) is stored as one blob (store/detail.go), so that an
	// insert binds 5 values per finding instead of 23. The old columns stay
	// (adding a nullable column rewrites nothing) and keep serving the rows
	// stored before; rows stored since leave them at their defaults.
	{5, "findings detail blob", []string{
		`ALTER TABLE findings ADD COLUMN detail BLOB`,
	}},
	// An agent's model reports are kept per rollout: a shadow rollout and an
	// ordinary rollout of the same bundle (a promoted shadow model) shared
	// one row per (agent, digest), so the agent's periodic shadow reports
	// overwrote the ordinary rollout's "active" and each rollout was offered
	// again in turn. SQLite cannot change a primary key: the table is
	// rebuilt with its rows (each keeps the rollout id it had; a row with
	// none keeps "", which readers take as the agent's report under any
	// rollout of that bundle).
	{6, "model status per rollout", []string{
		`CREATE TABLE agent_model_status_v6 (
			agent_id     TEXT NOT NULL REFERENCES agents(id),
			rollout_id   TEXT NOT NULL DEFAULT '',
			model_digest TEXT NOT NULL,
			state        TEXT NOT NULL,
			reason       TEXT NOT NULL DEFAULT '',
			time         INTEGER NOT NULL,
			PRIMARY KEY (agent_id, model_digest, rollout_id)
		) STRICT`,
		`INSERT INTO agent_model_status_v6(agent_id, rollout_id, model_digest, state, reason, time)
			SELECT agent_id, rollout_id, model_digest, state, reason, time FROM agent_model_status`,
		`DROP TABLE agent_model_status`,
		`ALTER TABLE agent_model_status_v6 RENAME TO agent_model_status`,
	}},
	// Enrollment tokens can be revoked before they are used (a leaked
	// token stayed valid until it expired, up to 30 days): revoked_at is
	// NULL for a valid token, and a token is used or revoked, never both.
	{7, "enrollment token revocation", []string{
		`ALTER TABLE enroll_tokens ADD COLUMN revoked_at INTEGER`,
		`ALTER TABLE enroll_tokens ADD COLUMN revoked_by TEXT NOT NULL DEFAULT ''`,
	}},
	// A rollout can be halted by hand (`vigilctl rollout halt`): who moved
	// it out of "active" is kept beside why and when ("system" for the
	// automatic shadow halt; "" for rows halted before this version).
	{8, "rollout state changed by", []string{
		`ALTER TABLE rollouts ADD COLUMN state_changed_by TEXT NOT NULL DEFAULT ''`,
	}},
	// Retention (store/retention.go) deletes old findings. An agent's seq
	// floor is the highest seq ever pruned of it: HighestSeq never goes
	// below it (the HelloAck would otherwise let a recreated spool renumber
	// into seqs already used), and ingest takes a seq at or below it for a
	// duplicate. Only agents with pruned findings have a row.
	{9, "agent seq floors for retention", []string{
		`CREATE TABLE agent_seq_floors (
			agent_id   TEXT PRIMARY KEY,
			seq_floor  INTEGER NOT NULL,
			updated_at INTEGER NOT NULL
		) STRICT, WITHOUT ROWID`,
	}},
}

// SchemaVersion is the schema version this build migrates to.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// migrate applies every pending migration, each in its own transaction,
// recording it in schema_migrations.
func (db *DB) migrate(ctx context.Context) error { return db.migrateTo(ctx, SchemaVersion()) }

// migrateTo applies the pending migrations up to version target (tests
// build an older schema with it).
func (db *DB) migrateTo(ctx context.Context, target int) error {
	if _, err := db.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var cur int
	if err := db.w.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&cur); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if cur > SchemaVersion() {
		return fmt.Errorf("database schema version %d is newer than this build's %d", cur, SchemaVersion())
	}
	for _, m := range migrations {
		if m.version <= cur || m.version > target {
			continue
		}
		err := db.withTx(ctx, func(tx *sql.Tx) error {
			for _, s := range m.stmts {
				if _, err := tx.ExecContext(ctx, s); err != nil {
					return fmt.Errorf("exec %.60q: %w", s, err)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, db.now().UnixNano())
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
		db.log.Info("store migrated", "version", m.version, "name", m.name)
	}
	return nil
}
