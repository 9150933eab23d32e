package store

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The database (user and token hashes, every finding, the audit log) and its
// -wal and -shm files were created 0644 by SQLite: readable by every local
// user where the data directory is not closed (and by the group in the
// packaged 0750 one).
func TestDatabaseFilesPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, tc := range []struct {
		name string
		pre  os.FileMode // 0: no file before Open
	}{
		{name: "new database"},
		{name: "existing 0644 database", pre: 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vigil.db")
			if tc.pre != 0 {
				db, err := Open(context.Background(), path, nil)
				if err != nil {
					t.Fatal(err)
				}
				db.Close()
				if err := os.Chmod(path, tc.pre); err != nil {
					t.Fatal(err)
				}
			}
			db, err := Open(context.Background(), path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.CreateEnrollToken(context.Background(), "acme", time.Hour, "test"); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"vigil.db", "vigil.db-wal", "vigil.db-shm"} {
				fi, err := os.Stat(filepath.Join(filepath.Dir(path), name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
				}
			}
		})
	}
}

func TestDatabaseNotRegularRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigil.db")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(context.Background(), path, nil); err == nil {
		db.Close()
		t.Fatal("a named pipe opened as the database")
	}
}

// A -wal and -shm left 0644 by an older version that did not stop cleanly
// (kill -9, a power cut) were used as they were: SQLite reuses the files it
// finds, so the recent findings and token hashes in the WAL stayed readable
// by others for as long as the server ran.
func TestDatabaseLeftoverWALNarrowed(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	live := filepath.Join(t.TempDir(), "vigil.db")
	db, err := Open(context.Background(), live, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateEnrollToken(context.Background(), "acme", time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	// The state of a crash, as an older version left it: the three files,
	// the WAL holding committed transactions, all 0644.
	path := filepath.Join(t.TempDir(), "vigil.db")
	for _, suffix := range []string{"", "-wal", "-shm"} {
		data, err := os.ReadFile(live + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+suffix, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("the crash state has no WAL content: %v %v", fi, err)
	}
	db, err = Open(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		fi, err := os.Stat(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("vigil.db%s has mode %v, want 0600", suffix, fi.Mode().Perm())
		}
	}
}
