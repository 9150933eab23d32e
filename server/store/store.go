package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/vigil-edge/vigil/internal/fsutil"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Errors returned (wrapped) by the store. Test with errors.Is.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrTokenInvalid: an enrollment token is malformed, unknown, wrong,
	// expired, revoked or already used. The causes are deliberately not told apart
	// to the caller's peer.
	ErrTokenInvalid = errors.New("enrollment token invalid")
	// ErrUnauthorized: an API token is malformed, unknown, wrong or its user
	// is disabled.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrConflict: the object already exists (unique name).
	ErrConflict = errors.New("already exists")
	// ErrInvalid: an argument is out of range or malformed.
	ErrInvalid = errors.New("invalid argument")
	// ErrTokenUsed: an enrollment token cannot be revoked, it was already
	// used to enroll an agent (revoke the agent instead).
	ErrTokenUsed = errors.New("enrollment token already used")
)

// Store is everything the server needs from its durable state. *DB (SQLite)
// implements it; a PostgreSQL back end for deployments that outgrow one node
// would implement the same interface. Consumers should declare the smaller
// interface they actually use.
type Store interface {
	Close() error

	// Enrollment and agents (used by the QUIC endpoint).
	CreateEnrollToken(ctx context.Context, entity string, ttl time.Duration, actor string) (plaintext string, err error)
	CreateEnrollTokenInfo(ctx context.Context, entity string, ttl time.Duration, actor string) (plaintext string, tok EnrollToken, err error)
	ConsumeEnrollToken(ctx context.Context, plaintext string, now time.Time) (entity string, err error)
	ListEnrollTokens(ctx context.Context, entity string) ([]EnrollToken, error)
	RegisterAgent(ctx context.Context, a Agent) error
	RecordCert(ctx context.Context, agentID, serialHex string, notAfter time.Time) error
	RevokedAgents(ctx context.Context) (map[string]bool, error)
	RevokeAgent(ctx context.Context, agentID, actor string) error
	TouchAgent(ctx context.Context, agentID string, seen time.Time, st AgentState) error
	ListAgents(ctx context.Context, f AgentFilter) ([]Agent, error)
	GetAgent(ctx context.Context, id string) (Agent, error)
	ListEntities(ctx context.Context) ([]string, error)

	// Findings.
	InsertFindings(ctx context.Context, agentID, entity string, fs []*wirev1.Finding) (inserted int, err error)
	ListFindings(ctx context.Context, f FindingFilter) ([]Finding, error)
	GetFinding(ctx context.Context, id int64) (Finding, error)
	CountFindings(ctx context.Context, agentID string) (int, error)
	MaxFindingID(ctx context.Context) (int64, error)
	FindingStats(ctx context.Context, f StatsFilter) ([]StatsBucket, error)

	// Triage and suppressions.
	TriageFinding(ctx context.Context, id int64, t Triage, actor string) (Finding, error)
	FindingNotes(ctx context.Context, findingID int64) ([]FindingNote, error)
	ListSuppressions(ctx context.Context, f SuppressionFilter) ([]Suppression, error)
	GetSuppression(ctx context.Context, id int64) (Suppression, error)
	LiftSuppression(ctx context.Context, id int64, actor string) error
	ActiveSuppressions(ctx context.Context, entity string, limit int) (SuppressionSet, error)

	// Models and rollouts (read side).
	ListModels(ctx context.Context) ([]Model, error)
	ModelByDigest(ctx context.Context, digest string) (Model, error)
	ListRollouts(ctx context.Context, f RolloutFilter) ([]Rollout, error)

	// Exporters' durable cursors.
	ForwarderCursor(ctx context.Context, name string) (int64, error)
	SetForwarderCursor(ctx context.Context, name string, lastID int64) error
	InitForwarderCursor(ctx context.Context, name string, lastID int64) (int64, error)

	// API users.
	CreateUser(ctx context.Context, name, role, entity, actor string) (plaintext string, err error)
	Authenticate(ctx context.Context, bearer string) (User, error)
	ListUsers(ctx context.Context, entity string) ([]User, error)
	GetUser(ctx context.Context, id string) (User, error)
	SetUserDisabled(ctx context.Context, id string, disabled bool, actor string) error

	// Audit log.
	Audit(ctx context.Context, e AuditEntry) error
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
	VerifyAudit(ctx context.Context) (checked int, err error)
}

var _ Store = (*DB)(nil)

// DB is the SQLite implementation of Store. It is safe for concurrent use.
type DB struct {
	w    *sql.DB // the one writer connection
	r    *sql.DB // read-only pool
	log  *slog.Logger
	path string
	now  func() time.Time

	ingest        chan *insertReq            // to the findings committer
	insertStmts   [insertChunk + 1]*sql.Stmt // the committer's INSERT per row count, prepared on first use
	closing       chan struct{}
	committerDone chan struct{}
	closeOnce     sync.Once
	// seqFloors: some agent has a seq floor (agent_seq_floors, retention),
	// so the committer must filter seqs at or below it. Never cleared.
	seqFloors atomic.Bool
}

// busyTimeout is how long a connection waits for a lock before SQLITE_BUSY.
// The writer pool has one connection, so only the occasional checkpoint or a
// second process contends.
const busyTimeout = 10 * time.Second

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	}
	u := url.URL{Scheme: "file", OmitHost: true, Path: path, RawQuery: q.Encode()}
	return u.String()
}

// Open opens (creating if needed) the SQLite database at path and applies
// every pending migration. path must be a file (WAL needs one; ":memory:" is
// not supported).
func Open(ctx context.Context, path string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := ownerOnly(abs, true); err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	for _, side := range []string{abs + "-wal", abs + "-shm"} {
		if err := ownerOnly(side, false); err != nil {
			return nil, fmt.Errorf("open store %s: %w", abs, err)
		}
	}
	w, err := sql.Open("sqlite", dsn(abs, false))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	db := &DB{w: w, log: log, path: abs, now: time.Now}
	if err := db.migrate(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	var floors bool
	if err := w.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM agent_seq_floors)`).Scan(&floors); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: read seq floors: %w", abs, err)
	}
	db.seqFloors.Store(floors)
	r, err := sql.Open("sqlite", dsn(abs, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s (readers): %w", abs, err)
	}
	n := max(4, runtime.GOMAXPROCS(0)*2)
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("open store %s (readers): %w", abs, err)
	}
	db.r = r
	db.ingest = make(chan *insertReq, 256)
	db.closing = make(chan struct{})
	db.committerDone = make(chan struct{})
	go db.committer()
	return db, nil
}

// Path is the database file.
func (db *DB) Path() string { return db.path }

// Close stops the findings committer (batches queued but not yet taken fail
// with an error) and closes both connection pools.
func (db *DB) Close() error {
	var err error
	db.closeOnce.Do(func() {
		close(db.closing)
		<-db.committerDone
		for _, s := range db.insertStmts {
			if s != nil {
				s.Close()
			}
		}
		err = errors.Join(db.r.Close(), db.w.Close())
	})
	return err
}

// withTx runs fn in one write transaction (BEGIN IMMEDIATE on the single
// writer connection) and commits it.
func (db *DB) withTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Time values are stored as Unix nanoseconds (INTEGER); zero time is NULL.
func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// ownerOnly narrows the file at path to its owner (mode &^ 0077): the
// database holds user and token hashes, every finding and the audit log,
// and nobody but the server reads it. SQLite creates the database 0644 (less
// the umask) and gives its -wal and -shm files the database file's mode,
// and reuses existing ones (left by a server that did not stop cleanly,
// made 0644 by an older version) with the mode they have. With create, the
// database file is made 0600 before SQLite opens it; otherwise a missing
// file is fine. A file that is not regular is refused (never waited on).
func ownerOnly(path string, create bool) error {
	flag := os.O_RDONLY
	if create {
		flag = os.O_RDWR | os.O_CREATE
	}
	f, fi, err := fsutil.OpenRegular(path, flag, 0o600)
	if !create && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if fi.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(fi.Mode().Perm() &^ 0o077); err != nil {
			return fmt.Errorf("narrow the mode of %s to the owner: %w", path, err)
		}
	}
	return nil
}
