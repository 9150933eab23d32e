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
	agentID string
	n       int            // findings in the batch
	first   uint64         // seq of the first finding (for errors)
	chunks  [][]any        // arguments of one multi-row INSERT each (see chunkArgs)
	done    chan insertRes // buffered(1)
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
	// The statements' arguments are built here, on the caller's goroutine
	// (one per connection), so that the single committer only executes.
	req := &insertReq{agentID: agentID, n: len(fs), first: fs[0].GetSeq(), done: make(chan insertRes, 1),
		chunks: chunkArgs(agentID, entity, fs, db.now().UnixNano())}
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
		n := group[0].n
	drain:
		for n < maxGroupFindings {
			select {
			case req := <-db.ingest:
				group = append(group, req)
				n += req.n
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
	// Statements are prepared on the writer connection before the
	// transaction takes it (the pool has one connection).
	for _, r := range group {
		for _, args := range r.chunks {
			if _, err := db.insertStmt(ctx, (len(args)-sharedInsertArgs)/rowInsertArgs); err != nil {
				return err
			}
		}
	}
	return db.withTx(ctx, func(tx *sql.Tx) error {
		var stmts [insertChunk + 1]*sql.Stmt // this transaction's statement per row count
		defer func() {
			for _, s := range stmts {
				if s != nil {
					s.Close()
				}
			}
		}()
		floors := db.seqFloors.Load() // read inside the transaction (see PruneFindings)
		for gi, r := range group {
			counts[gi] = 0
			chunks := r.chunks
			if floors {
				floor, err := seqFloor(ctx, tx, r.agentID)
				if err != nil {
					return err
				}
				if floor > 0 {
					// Seqs at or below the floor were stored once and
					// pruned: duplicates, like the ones INSERT OR IGNORE
					// skips.
					chunks = dropAtOrBelow(chunks, floor)
				}
			}
			for _, args := range chunks {
				rows := (len(args) - sharedInsertArgs) / rowInsertArgs
				var res sql.Result
				var err error
				if db.insertStmts[rows] == nil {
					// A size only a floor-filtered batch has (rare): not
					// prepared on the connection before the transaction.
					res, err = tx.ExecContext(ctx, insertFindingsSQL(rows), args...)
				} else {
					stmt := stmts[rows]
					if stmt == nil {
						stmt = tx.StmtContext(ctx, db.insertStmts[rows])
						stmts[rows] = stmt
					}
					res, err = stmt.ExecContext(ctx, args...)
				}
				if err != nil {
					return fmt.Errorf("insert findings of %s from seq %d: %w", r.agentID, r.first, err)
				}
				n, err := res.RowsAffected()
				if err != nil {
					return fmt.Errorf("insert findings of %s from seq %d: %w", r.agentID, r.first, err)
				}
				counts[gi] += int(n)
			}
		}
		return nil
	})
}

// insertStmt returns the writer's prepared INSERT for rows rows, preparing
// it on first use. Only the committer calls it, outside a transaction.
func (db *DB) insertStmt(ctx context.Context, rows int) (*sql.Stmt, error) {
	if s := db.insertStmts[rows]; s != nil {
		return s, nil
	}
	s, err := db.w.PrepareContext(ctx, insertFindingsSQL(rows))
	if err != nil {
		return nil, fmt.Errorf("prepare insert of %d findings: %w", rows, err)
	}
	db.insertStmts[rows] = s
	return s, nil
}

// chunkArgs returns the arguments of the multi-row INSERTs that store fs:
// insertChunk rows per statement, the last one shorter. Each starts with the
// values its rows share (sharedInsertArgs), then rowInsertArgs per row
// (findingRowCols). The rows' detail blobs share one buffer.
func chunkArgs(agentID, entity string, fs []*wirev1.Finding, received int64) [][]any {
	nc := (len(fs) + insertChunk - 1) / insertChunk
	all := make([]any, 0, nc*sharedInsertArgs+len(fs)*rowInsertArgs)
	chunks := make([][]any, 0, nc)
	var buf []byte
	ends := make([]int, len(fs))
	for i, f := range fs {
		buf = appendDetail(buf, f)
		ends[i] = len(buf)
	}
	start := 0
	for i := 0; i < len(fs); i += insertChunk {
		c0 := len(all)
		all = append(all, agentID, entity, received)
		for j := i; j < min(i+insertChunk, len(fs)); j++ {
			f := fs[j]
			all = append(all, int64(f.GetSeq()), f.GetDetector(), f.GetTimeUnixNano(), int64(f.GetSeverity()),
				buf[start:ends[j]:ends[j]])
			start = ends[j]
		}
		chunks = append(chunks, all[c0:len(all):len(all)])
	}
	return chunks
}

var errClosed = errors.New("store closed")

// HighestSeq returns the highest seq stored for agentID (0: none), counting
// the findings retention has pruned (the agent's seq floor). The endpoint
// tells it to the agent in HelloAck, so that an agent whose spool numbers
// from 1 again (the file lost or recreated) renumbers its findings above it
// instead of having them ignored as duplicates. It reads committed rows
// only (the UNIQUE (agent_id, seq) index and the floor's key: two lookups).
func (db *DB) HighestSeq(ctx context.Context, agentID string) (uint64, error) {
	if agentID == "" {
		return 0, fmt.Errorf("highest seq: agent required: %w", ErrInvalid)
	}
	var seq int64
	if err := db.r.QueryRowContext(ctx, `SELECT MAX(
			COALESCE((SELECT MAX(seq) FROM findings WHERE agent_id = ?1), 0),
			COALESCE((SELECT seq_floor FROM agent_seq_floors WHERE agent_id = ?1), 0))`, agentID).Scan(&seq); err != nil {
		return 0, fmt.Errorf("highest seq of %s: %w", agentID, err)
	}
	if seq < 0 {
		return 0, fmt.Errorf("highest seq of %s: negative seq %d in the store", agentID, seq)
	}
	return uint64(seq), nil
}
