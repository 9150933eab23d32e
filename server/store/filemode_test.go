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
