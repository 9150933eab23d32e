package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Retention of findings. PruneFindings deletes the findings the server
// received before a cutoff, a bounded batch per transaction, so that the
// single writer (and with it every agent's ingest) is never held for long.
//
// What goes with a pruned finding, and what stays:
//   - its triage notes (finding_notes) are deleted with it; the audit log
//     keeps every triage step ("finding.triage", the comment cut to 200
//     characters) and is never pruned (it is a hash chain);
//   - the suppressions it taught stay as they are (they are the entity's
//     policy, not evidence); their finding_id then names no finding;
//   - exporters' cursors and live streams are unaffected (ids are never
//     reused: AUTOINCREMENT);
//   - the agent's seq floor (agent_seq_floors) is raised to the highest seq
//     pruned, in the same transaction: HighestSeq never goes back, and ingest
//     takes a seq at or below the floor for a duplicate, so findings re-sent
//     from an old spool are not stored again, and an agent whose spool was
//     recreated still renumbers above everything it ever sent.

// MaxPruneBatch bounds PruneFindings' limit.
const MaxPruneBatch = 100_000

// PruneFindings deletes, in one transaction, the findings received before
// before among the limit oldest (by id) findings, with their triage notes,
// and raises the agents' seq floors to the highest seq deleted. It returns
// how many findings it deleted: the caller repeats until 0. The window of
// the limit oldest ids needs no index on received_at. A finding received
// after the cutoff but stored before older ones (the server's clock stepped
// back) stays, and the older ones behind it still go; only a whole window
// of such findings would hold the prune back, until they are old too.
func (db *DB) PruneFindings(ctx context.Context, before time.Time, limit int) (int, error) {
	if before.IsZero() || limit <= 0 || limit > MaxPruneBatch {
		return 0, fmt.Errorf("prune findings before %v, limit %d: %w", before, limit, ErrInvalid)
	}
	// The batch: of the limit oldest rows by id (a walk of the rowid
	// b-tree from its start), those received before the cutoff. Both
	// statements below evaluate it; inside the one write transaction it is
	// the same set of rows.
	const batch = `SELECT id FROM (SELECT id, received_at FROM findings ORDER BY id LIMIT ?1) WHERE received_at < ?2`
	cutoff := before.UnixNano()
	var deleted int
	err := db.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM finding_notes WHERE finding_id IN (`+batch+`)`, limit, cutoff); err != nil {
			return fmt.Errorf("delete notes: %w", err)
		}
		rows, err := tx.QueryContext(ctx, `DELETE FROM findings WHERE id IN (`+batch+`) RETURNING agent_id, seq`, limit, cutoff)
		if err != nil {
			return fmt.Errorf("delete findings: %w", err)
		}
		floors := map[string]int64{}
		for rows.Next() {
			var agent string
			var seq int64
			if err := rows.Scan(&agent, &seq); err != nil {
				rows.Close()
				return fmt.Errorf("delete findings: %w", err)
			}
			deleted++
			if cur, ok := floors[agent]; !ok || seq > cur {
				floors[agent] = seq
			}
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("delete findings: %w", err)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("delete findings: %w", err)
		}
		if len(floors) == 0 {
			return nil
		}
		// Set before the commit: the committer reads it inside its own
		// transaction, which can only begin after this one ends.
		db.seqFloors.Store(true)
		now := db.now().UnixNano()
		for agent, seq := range floors {
			if _, err := tx.ExecContext(ctx, `INSERT INTO agent_seq_floors(agent_id, seq_floor, updated_at) VALUES (?, ?, ?)
				ON CONFLICT(agent_id) DO UPDATE SET seq_floor = MAX(seq_floor, excluded.seq_floor), updated_at = excluded.updated_at`,
				agent, seq, now); err != nil {
				return fmt.Errorf("raise seq floor of %s: %w", agent, err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune findings received before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return deleted, nil
}

// seqFloor returns the agent's seq floor inside the committer's
// transaction (0: none).
func seqFloor(ctx context.Context, tx *sql.Tx, agentID string) (int64, error) {
	var floor int64
	err := tx.QueryRowContext(ctx, `SELECT seq_floor FROM agent_seq_floors WHERE agent_id = ?`, agentID).Scan(&floor)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read seq floor of %s: %w", agentID, err)
	}
	return floor, nil
}

// dropAtOrBelow returns the INSERT chunks (see chunkArgs) without the rows
// whose seq is at or below floor; a chunk left empty is dropped.
func dropAtOrBelow(chunks [][]any, floor int64) [][]any {
	out := make([][]any, 0, len(chunks))
	for _, args := range chunks {
		rows := (len(args) - sharedInsertArgs) / rowInsertArgs
		keep := args[:sharedInsertArgs:sharedInsertArgs]
		for i := range rows {
			row := args[sharedInsertArgs+i*rowInsertArgs : sharedInsertArgs+(i+1)*rowInsertArgs]
			if row[0].(int64) > floor {
				keep = append(keep, row...)
			}
		}
		if len(keep) > sharedInsertArgs {
			out = append(out, keep)
		}
	}
	return out
}
