package store

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestBackupWhileWriting: a backup taken while findings are being
// committed is a consistent, verified copy (mode 0600, one file, no WAL
// beside it) that the store opens.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	if _, err := db.InsertFindings(ctx, "a1", "e1", mkFindings(1, 500, "netflow")); err != nil {
		t.Fatal(err)
	}
	// A writer commits batches throughout the backup; the backup must not
	// wait for it nor fail because of it.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := db.InsertFindings(ctx, "a2", "e1", mkFindings(1+i*50, 50, "netflow")); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	dir := t.TempDir()
	out := filepath.Join(dir, "vigil-backup.db")
	info, err := Backup(ctx, db.Path(), out)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if info.SchemaVersion != SchemaVersion() || info.Size <= 0 || info.Path != out {
		t.Errorf("info %+v", info)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != info.Size {
		t.Errorf("backup mode %v size %d, want 0600 and %d", st.Mode().Perm(), st.Size(), info.Size)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("backup directory holds %v, want only the backup", names)
	}

	cp, err := Open(ctx, out, nil)
	if err != nil {
		t.Fatalf("open the backup: %v", err)
	}
	defer cp.Close()
	if n, err := cp.CountFindings(ctx, "a1"); err != nil || n != 500 {
		t.Errorf("a1 findings in the backup: %d, %v", n, err)
	}
	// a2's batches are all or nothing: a multiple of 50.
	if n, err := cp.CountFindings(ctx, "a2"); err != nil || n%50 != 0 {
		t.Errorf("a2 findings in the backup: %d, %v (want whole batches)", n, err)
	}
}

// TestBackupRefuses: an existing output is left alone, a missing database
// is not created, and neither leaves a file behind.
func TestBackupRefuses(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	dir := t.TempDir()
	existing := filepath.Join(dir, "exists.db")
	if err := os.WriteFile(existing, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		src     string
		out     string
		wantErr error
	}{
		{"existing output", db.Path(), existing, fs.ErrExist},
		{"existing empty output", db.Path(), empty, fs.ErrExist},
		{"missing database", filepath.Join(dir, "nope.db"), filepath.Join(dir, "out1.db"), fs.ErrNotExist},
		{"output directory missing", db.Path(), filepath.Join(dir, "no", "out2.db"), fs.ErrNotExist},
		{"not a vigil database", empty, filepath.Join(dir, "out3.db"), ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Backup(ctx, tc.src, tc.out)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Backup(%s, %s) = %v, want %v", tc.src, tc.out, err, tc.wantErr)
			}
		})
	}
	if b, err := os.ReadFile(existing); err != nil || string(b) != "keep me" {
		t.Errorf("existing output changed: %q, %v", b, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only exists.db and empty.db", names)
	}
}

// TestBackupStopped: a database whose server is stopped (closed cleanly, so
// no -wal or -shm beside it) backs up too, and the source directory is left
// as it was.
func TestBackupStopped(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "vigil.db")
	db, err := Open(ctx, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.InsertFindings(ctx, "a1", "e1", mkFindings(1, 20, "netflow")); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before := dirNames(t, dir)
	out := filepath.Join(t.TempDir(), "b.db")
	if _, err := Backup(ctx, src, out); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if after := dirNames(t, dir); after != before {
		t.Errorf("source directory %s, was %s", after, before)
	}
	cp, err := Open(ctx, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if n, err := cp.CountFindings(ctx, "a1"); err != nil || n != 20 {
		t.Errorf("findings in the backup: %d, %v", n, err)
	}
}

func dirNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}
