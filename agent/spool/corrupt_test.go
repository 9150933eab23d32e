package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestOpenCorruptFile damages one page of a spool file at a time (its page
// header: a torn write, a bad sector) and opens it. Open either works (the
// page was free) or fails with ErrCorrupt and a clear message, leaving the
// file as it was. bbolt asserts on a damaged page by panicking, some of it
// on a goroutine of its own while Open rebuilds the freelist: the agent
// crashed with an assertion and a stack trace on every start.
func TestOpenCorruptFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "spool.db")
	s := open(t, path, 0)
	for i := range 40 {
		if err := s.Append(context.Background(), batch(100, wirev1.Severity(1+i%4), "f")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Ack(1000); err != nil { // some free pages too
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := os.Getpagesize() // bbolt's page size for a new file
	pages := len(orig) / pageSize
	var corrupt, fine int
	// The page header (id, flags, count, overflow), then the first element
	// headers (a branch's child page ids, a leaf's offsets and sizes).
	for n := range 2 * (pages - 2) {
		pg, off := 2+n/2, (n%2)*16
		b := append([]byte(nil), orig...)
		for i := pg*pageSize + off; i < pg*pageSize+off+16; i++ {
			b[i] ^= 0xa5
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, Options{})
		if err == nil {
			if _, _, err := s.PeekRawFrom(0, 100000, 0); err != nil {
				t.Errorf("page %d+%d damaged: opened, then peek: %v", pg, off, err)
			}
			_ = s.Close()
			fine++
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("page %d damaged: Open: %v, want ErrCorrupt", pg, err)
		}
		after, rerr := os.ReadFile(path)
		if rerr != nil || string(after) != string(b) {
			t.Fatalf("page %d damaged: the corrupt file was changed", pg)
		}
		if _, err := ReadStats(path, time.Second); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("page %d damaged: ReadStats: %v, want ErrCorrupt", pg, err)
		}
		corrupt++
	}
	t.Logf("%d pages damaged twice: %d refused, %d harmless", pages-2, corrupt, fine)
	if corrupt == 0 {
		t.Fatal("no damaged page was noticed")
	}
}

// TestOpenDropsUndecodableFinding: one stored finding no longer decodes (a
// damaged value in a sound page). Peeking used to fail on it for good: the
// uplink ended every session on it, and nothing after it was ever sent. The
// spool drops it when it opens, counted with the other drops.
func TestOpenDropsUndecodableFinding(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	s := open(t, path, 0)
	if err := s.Append(context.Background(), batch(10, wirev1.Severity_SEVERITY_HIGH, "f")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		// Severity byte, then a varint that never ends.
		return tx.Bucket(bucketFindings).Put(u64(3), []byte{byte(wirev1.Severity_SEVERITY_HIGH), 0xff, 0xff})
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	for round := range 2 { // the drop is persisted
		s = open(t, path, 0)
		seqs, _, err := s.PeekRawFrom(0, 100, 0)
		if err != nil {
			t.Fatalf("round %d: peek: %v", round, err)
		}
		if len(seqs) != 9 || seqs[2] != 4 {
			t.Fatalf("round %d: peeked seqs %v, want 1..10 without 3", round, seqs)
		}
		if fs, err := s.PeekFrom(0, 100, 0); err != nil || len(fs) != 9 {
			t.Fatalf("round %d: PeekFrom: %d findings, %v", round, len(fs), err)
		}
		if st := s.Stats(); st.Dropped != 1 || st.Depth != 9 || st.NextSeq != 11 {
			t.Fatalf("round %d: stats %v, want 1 dropped, 9 waiting, next seq 11", round, st)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
