package store

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// clockAt sets the store's clock (received_at of the findings inserted
// next) to t.
func clockAt(db *DB, t time.Time) { db.now = func() time.Time { return t } }

var retT0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func seqFindings(seqs ...uint64) []*wirev1.Finding {
	fs := make([]*wirev1.Finding, 0, len(seqs))
	for _, s := range seqs {
		fs = append(fs, &wirev1.Finding{Seq: s, Detector: "netflow", Severity: wirev1.Severity_SEVERITY_LOW})
	}
	return fs
}

func seqRange(first, last uint64) []uint64 {
	var out []uint64
	for s := first; s <= last; s++ {
		out = append(out, s)
	}
	return out
}

// pruneAll prunes in batches of limit until a batch deletes nothing, and
// returns each batch's count.
func pruneAll(t *testing.T, db *DB, before time.Time, limit int) []int {
	t.Helper()
	var batches []int
	for {
		n, err := db.PruneFindings(context.Background(), before, limit)
		if err != nil {
			t.Fatalf("PruneFindings: %v", err)
		}
		if n == 0 {
			return batches
		}
		batches = append(batches, n)
		if len(batches) > 1000 {
			t.Fatal("PruneFindings does not finish")
		}
	}
}

// TestPruneKeepsHighestSeq is the invariant retention must not break: an
// agent's findings pruned, HighestSeq (HelloAck.highest_seq) still names
// the highest seq it ever had stored, and the pruned seqs sent again are
// duplicates, not new findings.
func TestPruneKeepsHighestSeq(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	clockAt(db, retT0)
	if _, err := db.InsertFindings(ctx, "a1", "e1", seqFindings(seqRange(1, 10)...)); err != nil {
		t.Fatal(err)
	}
	clockAt(db, retT0.Add(48*time.Hour))
	if got := pruneAll(t, db, retT0.Add(time.Hour), 5000); len(got) != 1 || got[0] != 10 {
		t.Fatalf("pruned %v, want [10]", got)
	}
	if n, _ := db.CountFindings(ctx, "a1"); n != 0 {
		t.Fatalf("%d findings left", n)
	}
	if hs, err := db.HighestSeq(ctx, "a1"); err != nil || hs != 10 {
		t.Fatalf("HighestSeq after prune = %d, %v; want 10", hs, err)
	}
	// The agent's spool sends pruned findings again: duplicates.
	if n, err := db.InsertFindings(ctx, "a1", "e1", seqFindings(5, 6, 7, 8, 9, 10)); err != nil || n != 0 {
		t.Fatalf("re-sent pruned seqs: inserted %d, %v; want 0", n, err)
	}
	// A batch across the floor: only the seqs above it are new.
	if n, err := db.InsertFindings(ctx, "a1", "e1", seqFindings(9, 10, 11, 12)); err != nil || n != 2 {
		t.Fatalf("batch across the floor: inserted %d, %v; want 2", n, err)
	}
	if hs, err := db.HighestSeq(ctx, "a1"); err != nil || hs != 12 {
		t.Fatalf("HighestSeq = %d, %v; want 12", hs, err)
	}
	// Other agents are not affected by a1's floor.
	if n, err := db.InsertFindings(ctx, "a2", "e1", seqFindings(1, 2)); err != nil || n != 2 {
		t.Fatalf("a2: inserted %d, %v; want 2", n, err)
	}
}

// TestPruneFindings: what a prune deletes and keeps, batch by batch.
func TestPruneFindings(t *testing.T) {
	type ins struct {
		agent string
		age   time.Duration // received this long before "now"
		seqs  []uint64
	}
	day := 24 * time.Hour
	for _, tc := range []struct {
		name    string
		ins     []ins
		keep    time.Duration
		limit   int
		batches []int             // rows deleted per transaction
		left    map[string]int    // findings left per agent
		highest map[string]uint64 // HighestSeq per agent after the prune
	}{
		{name: "nothing old",
			ins:  []ins{{"a1", day, seqRange(1, 5)}},
			keep: 30 * day, limit: 100,
			batches: nil, left: map[string]int{"a1": 5}, highest: map[string]uint64{"a1": 5}},
		{name: "old and new",
			ins:  []ins{{"a1", 40 * day, seqRange(1, 5)}, {"a1", day, seqRange(6, 8)}, {"a2", 35 * day, seqRange(1, 2)}},
			keep: 30 * day, limit: 100,
			batches: []int{7}, left: map[string]int{"a1": 3, "a2": 0}, highest: map[string]uint64{"a1": 8, "a2": 2}},
		{name: "bounded batches",
			ins:  []ins{{"a1", 40 * day, seqRange(1, 7)}},
			keep: 30 * day, limit: 3,
			batches: []int{3, 3, 1}, left: map[string]int{"a1": 0}, highest: map[string]uint64{"a1": 7}},
		{name: "floor never goes down",
			// seq 90 stored first, then 1..3: the floor after pruning all is 90.
			ins:  []ins{{"a1", 50 * day, []uint64{90}}, {"a1", 40 * day, seqRange(1, 3)}},
			keep: 30 * day, limit: 1,
			batches: []int{1, 1, 1, 1}, left: map[string]int{"a1": 0}, highest: map[string]uint64{"a1": 90}},
		{name: "a newer row out of order does not stop the prune",
			// the middle batch was received "later" (a clock stepped back
			// since): the older rows around it go, it stays.
			ins:  []ins{{"a1", 40 * day, seqRange(1, 2)}, {"a1", day, []uint64{3}}, {"a1", 40 * day, seqRange(4, 5)}},
			keep: 30 * day, limit: 100,
			batches: []int{4}, left: map[string]int{"a1": 1}, highest: map[string]uint64{"a1": 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db := openTest(t)
			now := retT0.Add(365 * day)
			for _, in := range tc.ins {
				clockAt(db, now.Add(-in.age))
				if _, err := db.InsertFindings(ctx, in.agent, "e1", seqFindings(in.seqs...)); err != nil {
					t.Fatal(err)
				}
			}
			clockAt(db, now)
			if got := pruneAll(t, db, now.Add(-tc.keep), tc.limit); !equalInts(got, tc.batches) {
				t.Errorf("batches %v, want %v", got, tc.batches)
			}
			for agent, want := range tc.left {
				if n, err := db.CountFindings(ctx, agent); err != nil || n != want {
					t.Errorf("%s: %d findings left, %v; want %d", agent, n, err, want)
				}
			}
			for agent, want := range tc.highest {
				if hs, err := db.HighestSeq(ctx, agent); err != nil || hs != want {
					t.Errorf("HighestSeq(%s) = %d, %v; want %d", agent, hs, err, want)
				}
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPruneDependents: a pruned finding's triage notes go with it (the
// audit log keeps the triage steps); the suppression it taught stays
// active; the audit chain still verifies.
func TestPruneDependents(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	clockAt(db, retT0)
	if _, err := db.InsertFindings(ctx, "a1", "e1", mkFindings(1, 3, "netflow")); err != nil {
		t.Fatal(err)
	}
	clockAt(db, retT0.Add(10*24*time.Hour))
	if _, err := db.InsertFindings(ctx, "a1", "e1", mkFindings(4, 1, "netflow")); err != nil {
		t.Fatal(err)
	}
	fs, err := db.ListFindings(ctx, FindingFilter{Limit: 10})
	if err != nil || len(fs) != 4 {
		t.Fatalf("list: %d, %v", len(fs), err)
	}
	var old, recent int64
	for _, f := range fs {
		switch f.Seq {
		case 1:
			old = f.ID
		case 4:
			recent = f.ID
		}
	}
	if _, err := db.TriageFinding(ctx, old, Triage{Status: ptr(StatusFalsePositive), Comment: "scanner"}, "ana"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.TriageFinding(ctx, recent, Triage{Comment: "look"}, "ana"); err != nil {
		t.Fatal(err)
	}
	if got := pruneAll(t, db, retT0.Add(time.Hour), 5000); !equalInts(got, []int{3}) {
		t.Fatalf("pruned %v, want [3]", got)
	}
	if _, err := db.GetFinding(ctx, old); !errors.Is(err, ErrNotFound) {
		t.Errorf("pruned finding: %v, want ErrNotFound", err)
	}
	var notes int
	if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM finding_notes WHERE finding_id = ?`, old).Scan(&notes); err != nil || notes != 0 {
		t.Errorf("notes of the pruned finding: %d, %v", notes, err)
	}
	if ns, err := db.FindingNotes(ctx, recent); err != nil || len(ns) != 1 {
		t.Errorf("notes of the kept finding: %d, %v", len(ns), err)
	}
	set, err := db.ActiveSuppressions(ctx, "e1", 100)
	if err != nil {
		t.Fatal(err)
	}
	if set.Active != 1 || len(set.Items) != 1 || set.Items[0].FindingID != old {
		t.Errorf("active suppressions after prune: %+v, want the one of finding %d", set, old)
	}
	if n, err := db.VerifyAudit(ctx); err != nil || n == 0 {
		t.Errorf("audit verify after prune: %d, %v", n, err)
	}
}

// TestPruneFindingsInvalid: a zero cutoff or a limit out of range is
// refused, not taken as "everything".
func TestPruneFindingsInvalid(t *testing.T) {
	db := openTest(t)
	for _, tc := range []struct {
		before time.Time
		limit  int
	}{{time.Time{}, 10}, {retT0, 0}, {retT0, -1}, {retT0, MaxPruneBatch + 1}} {
		if _, err := db.PruneFindings(context.Background(), tc.before, tc.limit); !errors.Is(err, ErrInvalid) {
			t.Errorf("PruneFindings(%v, %d) = %v, want ErrInvalid", tc.before, tc.limit, err)
		}
	}
}

// TestPruneFloorAcrossChunks: the floor filter works on batches longer than
// one multi-row INSERT (insertChunk rows) and inside a group commit with
// another agent's batch.
func TestPruneFloorAcrossChunks(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	clockAt(db, retT0)
	if _, err := db.InsertFindings(ctx, "a1", "e1", seqFindings(seqRange(1, 50)...)); err != nil {
		t.Fatal(err)
	}
	clockAt(db, retT0.Add(48*time.Hour))
	pruneAll(t, db, retT0.Add(time.Hour), 5000)
	// 1..100: 50 at or below the floor, in the first two chunks of 32.
	n, err := db.InsertFindings(ctx, "a1", "e1", seqFindings(seqRange(1, 100)...))
	if err != nil || n != 50 {
		t.Fatalf("inserted %d, %v; want 50", n, err)
	}
	var lo int64
	if err := db.r.QueryRowContext(ctx, `SELECT MIN(seq) FROM findings WHERE agent_id = 'a1'`).Scan(&lo); err != nil || lo != 51 {
		t.Fatalf("lowest seq stored %d, %v; want 51", lo, err)
	}
	// Two agents' batches submitted together (one group commit).
	w1, err := db.SubmitFindings(ctx, "a1", "e1", seqFindings(40, 101))
	if err != nil {
		t.Fatal(err)
	}
	w2, err := db.SubmitFindings(ctx, "a2", "e1", seqFindings(40, 41))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := w1(ctx); err != nil || n != 1 {
		t.Errorf("a1: %d, %v; want 1", n, err)
	}
	if n, err := w2(ctx); err != nil || n != 2 {
		t.Errorf("a2: %d, %v; want 2", n, err)
	}
}

// TestMigrateSeqFloors: a database at the previous schema version, with
// findings, is migrated by Open; its findings and HighestSeq are intact
// and it prunes.
func TestMigrateSeqFloors(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	prev := SchemaVersion() - 1
	old := openAt(t, path, prev)
	if _, err := old.w.ExecContext(ctx, `INSERT INTO findings(agent_id, entity, seq, detector, time, received_at)
		VALUES ('a1', 'e1', 7, 'netflow', 1, ?), ('a1', 'e1', 8, 'netflow', 2, ?)`,
		retT0.UnixNano(), retT0.UnixNano()); err != nil {
		t.Fatal(err)
	}
	var exists int
	if err := old.w.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_schema WHERE name = 'agent_seq_floors'`).Scan(&exists); err != nil || exists != 0 {
		t.Fatalf("version %d already has agent_seq_floors (%d, %v)", prev, exists, err)
	}
	if err := old.w.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.r.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Fatalf("version %d, %v", v, err)
	}
	if hs, err := db.HighestSeq(ctx, "a1"); err != nil || hs != 8 {
		t.Fatalf("HighestSeq = %d, %v; want 8", hs, err)
	}
	clockAt(db, retT0.Add(48*time.Hour))
	if got := pruneAll(t, db, retT0.Add(time.Hour), 5000); !equalInts(got, []int{2}) {
		t.Fatalf("pruned %v", got)
	}
	if hs, err := db.HighestSeq(ctx, "a1"); err != nil || hs != 8 {
		t.Fatalf("HighestSeq after prune = %d, %v; want 8", hs, err)
	}
	// A reopened store knows the floors (ingest filters from the start).
	db.Close()
	db2, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if n, err := db2.InsertFindings(ctx, "a1", "e1", seqFindings(7, 8, 9)); err != nil || n != 1 {
		t.Fatalf("after reopen: inserted %d, %v; want 1", n, err)
	}
}

// openAt makes a database at schema version v with only the writer
// connection (as the store of that version would have left it).
func openAt(t *testing.T, path string, v int) *DB {
	t.Helper()
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	w.SetMaxOpenConns(1)
	db := &DB{w: w, log: slog.New(slog.DiscardHandler), path: path, now: time.Now}
	if err := db.migrateTo(context.Background(), v); err != nil {
		w.Close()
		t.Fatal(err)
	}
	return db
}
