package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Findings ingest uses group commit: InsertFindings queues its batch for one
// committer goroutine, which takes every batch already waiting (up to
// maxGroupFindings) and writes them in ONE transaction with one fsync, then
// answers each caller. With one agent this is one transaction per batch, as
// before; with many agents sending at once it saves most of the fsyncs and
// transaction overhead. Nothing waits for a group to fill: the committer
// only takes what is already queued.

// maxGroupFindings bounds the findings committed in one transaction.
const maxGroupFindings = 16384

type insertReq struct {
	agentID, entity string
	fs              []*wirev1.Finding
	done            chan insertRes // buffered(1)
}

type insertRes struct {
	inserted int
	err      error
}

// InsertFindings stores a batch of an agent's findings with INSERT OR IGNORE
// on (agent_id, seq): a finding sent again (at-least-once delivery) is stored
// once. The batch is one transaction (possibly shared with other agents'
// batches committed at the same moment); when InsertFindings returns nil it is
// committed and fsynced (synchronous=FULL), so the caller may acknowledge it.
// It returns how many findings were new. If ctx ends first it returns
// ctx.Err() and the batch may or may not be stored (a re-send is harmless).
func (db *DB) InsertFindings(ctx context.Context, agentID, entity string, fs []*wirev1.Finding) (int, error) {
	wait, err := db.SubmitFindings(ctx, agentID, entity, fs)
	if err != nil {
		return 0, err
	}
	return wait(ctx)
}

// SubmitFindings queues a batch for the committer and returns at once;
// wait blocks until the batch is committed (or failed) and returns what
// InsertFindings would. Batches are committed in the order they were
// submitted (one committer, one FIFO queue), and batches waiting together
// share one transaction and one fsync: a caller that submits the next batch
// of a stream before the previous one is committed lets one agent's
// pipelined batches be committed together.
func (db *DB) SubmitFindings(ctx context.Context, agentID, entity string, fs []*wirev1.Finding) (wait func(context.Context) (int, error), err error) {
	if agentID == "" || entity == "" {
		return nil, fmt.Errorf("insert findings: agent and entity required: %w", ErrInvalid)
	}
	for _, f := range fs {
		if f == nil || f.GetSeq() > math.MaxInt64 {
			return nil, fmt.Errorf("insert findings of %s: nil finding or seq out of range: %w", agentID, ErrInvalid)
		}
	}
	if len(fs) == 0 {
		return func(context.Context) (int, error) { return 0, nil }, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("insert findings of %s: %w", agentID, err)
	}
	req := &insertReq{agentID: agentID, entity: entity, fs: fs, done: make(chan insertRes, 1)}
	select {
	case db.ingest <- req:
	case <-ctx.Done():
		return nil, fmt.Errorf("insert findings of %s: %w", agentID, ctx.Err())
	case <-db.closing:
		return nil, fmt.Errorf("insert findings of %s: %w", agentID, errClosed)
	}
	return func(ctx context.Context) (int, error) {
		select {
		case r := <-req.done:
			if r.err != nil {
				return 0, fmt.Errorf("insert findings of %s: %w", agentID, r.err)
			}
			return r.inserted, nil
		case <-ctx.Done():
			return 0, fmt.Errorf("insert findings of %s: %w", agentID, ctx.Err())
		case <-db.committerDone:
			select {
			case r := <-req.done: // answered just before the committer stopped
				if r.err != nil {
					return 0, fmt.Errorf("insert findings of %s: %w", agentID, r.err)
				}
				return r.inserted, nil
			default:
				return 0, fmt.Errorf("insert findings of %s: %w", agentID, errClosed)
			}
		}
	}, nil
}

// committer is the one goroutine that writes findings.
func (db *DB) committer() {
	defer close(db.committerDone)
	var group []*insertReq
	for {
		select {
		case req := <-db.ingest:
			group = append(group[:0], req)
		case <-db.closing:
			return
		}
		n := len(group[0].fs)
	drain:
		for n < maxGroupFindings {
			select {
			case req := <-db.ingest:
				group = append(group, req)
				n += len(req.fs)
			default:
				break drain
			}
		}
		db.commitGroup(group)
		clear(group)
	}
}

// commitGroup writes the group in one transaction. If that fails, each batch
// is retried alone, so one bad batch cannot fail the others.
func (db *DB) commitGroup(group []*insertReq) {
	counts := make([]int, len(group))
	err := db.insertTx(group, counts)
	if err == nil {
		for i, r := range group {
			r.done <- insertRes{inserted: counts[i]}
		}
		return
	}
	if len(group) == 1 {
		group[0].done <- insertRes{err: err}
		return
	}
	db.log.Warn("findings group commit failed, retrying batches one by one", "batches", len(group), "err", err)
	for _, r := range group {
		c := []int{0}
		err := db.insertTx([]*insertReq{r}, c)
		r.done <- insertRes{inserted: c[0], err: err}
	}
}

// insertTx inserts the batches in one transaction, storing per-batch counts
// of new rows in counts.
func (db *DB) insertTx(group []*insertReq, counts []int) error {
	// The committer is not bound to any one caller's context: a batch it has
	// taken is committed or fails on its own.
	ctx := context.Background()
	received := db.now().UnixNano()
	return db.withTx(ctx, func(tx *sql.Tx) error {
		var chunkStmt, oneStmt *sql.Stmt
		defer func() {
			if chunkStmt != nil {
				chunkStmt.Close()
			}
			if oneStmt != nil {
				oneStmt.Close()
			}
		}()
		args := make([]any, 0, insertChunk*findingInsertArgs)
		var tf []byte
		for gi, r := range group {
			counts[gi] = 0
			for i := 0; i < len(r.fs); {
				n := min(insertChunk, len(r.fs)-i)
				var stmt *sql.Stmt
				var err error
				if n == insertChunk {
					if chunkStmt == nil {
						if chunkStmt, err = tx.PrepareContext(ctx, insertChunkSQL); err != nil {
							return fmt.Errorf("prepare: %w", err)
						}
					}
					stmt = chunkStmt
				} else {
					n = 1
					if oneStmt == nil {
						if oneStmt, err = tx.PrepareContext(ctx, insertOneSQL); err != nil {
							return fmt.Errorf("prepare: %w", err)
						}
					}
					stmt = oneStmt
				}
				args = args[:0]
				for _, f := range r.fs[i : i+n] {
					tf = appendTopFeatures(tf[:0], f.GetTopFeatures())
					args = appendFindingArgs(args, r.agentID, r.entity, f, string(tf), received)
				}
				res, err := stmt.ExecContext(ctx, args...)
				if err != nil {
					return fmt.Errorf("insert seq %d..: %w", r.fs[i].GetSeq(), err)
				}
				rows, err := res.RowsAffected()
				if err != nil {
					return fmt.Errorf("insert seq %d..: %w", r.fs[i].GetSeq(), err)
				}
				counts[gi] += int(rows)
				i += n
			}
		}
		return nil
	})
}

func appendFindingArgs(args []any, agentID, entity string, f *wirev1.Finding, topFeatures string, received int64) []any {
	m, c := f.GetModel(), f.GetContext()
	t := f.GetTimeUnixNano()
	first, last := f.GetFirstSeenUnixNano(), f.GetLastSeenUnixNano()
	if first == 0 {
		first = t
	}
	if last == 0 {
		last = t
	}
	return append(args,
		agentID, entity, int64(f.GetSeq()), f.GetDetector(), t, first, last,
		clampInt64(f.GetCount()), int64(f.GetSeverity()), finiteOr0(f.GetScore()), finiteOr0(f.GetThreshold()),
		m.GetName(), clampInt64(m.GetVersion()), m.GetDigest(),
		c.GetSrcIp(), c.GetDstIp(), int64(c.GetSrcPort()), int64(c.GetDstPort()), c.GetProto(), c.GetPath(), c.GetSrcMac(),
		clampInt64(f.GetPackets()), clampInt64(f.GetBytes()), topFeatures, f.GetSummary(), received)
}

var errClosed = errors.New("store closed")
