package app

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/agent/spool"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// corruptSpool writes a spool file with findings at path and damages every
// page after the meta pages, so that spool.Open refuses it with ErrCorrupt.
func corruptSpool(t *testing.T, path string) {
	t.Helper()
	sp, err := spool.Open(path, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		f := &wirev1.Finding{Detector: "netflow", Summary: "finding", Severity: wirev1.Severity(1 + i%4)}
		if err := sp.Append(context.Background(), []*wirev1.Finding{f}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	for pg := 2; (pg+1)*ps <= len(b); pg++ {
		for i := pg * ps; i < pg*ps+16; i++ {
			b[i] ^= 0xa5
		}
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := spool.Open(path, spool.Options{}); !errors.Is(err, spool.ErrCorrupt) {
		t.Fatalf("the damaged spool opens with %v, want ErrCorrupt: the test proves nothing", err)
	}
}

// TestCorruptSpoolMovedAside: a spool file that bbolt finds damaged (a torn
// write, a bad sector) no longer stops the agent: it is moved aside (kept
// for recovery by hand), an empty spool takes its place, so detection goes
// on (the uplink renumbers above the server's highest seq), and the file
// aside is counted (spool_corrupt_files, a loss counter of the server's
// health) for as long as it is there.
func TestCorruptSpoolMovedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "spool.db")
	corruptSpool(t, path)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sp, aside, err := openSpool(path, spool.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("openSpool: %v", err)
	}
	defer sp.Close()
	if st := sp.Stats(); st.Depth != 0 || st.NextSeq != 1 {
		t.Errorf("new spool: depth %d, next seq %d; want an empty one", st.Depth, st.NextSeq)
	}
	if aside != 1 {
		t.Errorf("%d spool files aside, want 1", aside)
	}
	moved, _ := filepath.Glob(path + ".corrupt-*")
	if len(moved) != 1 {
		t.Fatalf("files aside: %v, want one", moved)
	}
	if b, err := os.ReadFile(moved[0]); err != nil || string(b) != string(orig) {
		t.Errorf("the file aside differs from the damaged spool (err %v)", err)
	}
	if fi, err := os.Stat(moved[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file aside: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if err := sp.Append(context.Background(), []*wirev1.Finding{{Detector: "netflow", Summary: "after"}}); err != nil {
		t.Fatalf("append to the new spool: %v", err)
	}
}

// TestSpoolFilesAsideCounted: the count survives restarts (it is the files
// aside), and a healthy spool opens as it is.
func TestSpoolFilesAsideCounted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "spool.db")
	for _, name := range []string{"spool.db.corrupt-20261129T140000Z", "spool.db.corrupt-20261129T150000Z", "other.corrupt-x"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sp, aside, err := openSpool(path, spool.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if aside != 2 {
		t.Errorf("%d spool files aside, want 2", aside)
	}
}
