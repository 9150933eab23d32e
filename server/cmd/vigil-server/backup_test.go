package main

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// TestBackupWhileRunning: `vigil-server backup` copies the database of a
// server that is running (with retention on), refuses to overwrite, and
// `run` refuses a retention under a day.
func TestBackupWhileRunning(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if out, err := execute(context.Background(), "init", "--data", dir, "--log-format", "text"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	if _, err := execute(context.Background(), "run", "--data", dir, "--retention", "12h"); err == nil ||
		!strings.Contains(err.Error(), "retention") {
		t.Fatalf("run --retention 12h: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := execute(ctx, "run", "--data", dir, "--quic", "127.0.0.1:0", "--api", "127.0.0.1:0",
			"--retention", "365d", "--log-format", "json", "--log-level", "warn")
		done <- err
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("run did not stop")
		}
	}()

	backup := filepath.Join(t.TempDir(), "vigil-backup.db")
	out, err := execute(context.Background(), "backup", "--data", dir, "--out", backup, "--json")
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	var info store.BackupInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Path != backup || info.SchemaVersion != store.SchemaVersion() {
		t.Fatalf("backup --json printed %q (%v)", out, err)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v", fi, err)
	}
	// The copy is a deployment's database: its admin user is there.
	db, err := store.Open(context.Background(), backup, nil)
	if err != nil {
		t.Fatal(err)
	}
	users, err := db.ListUsers(context.Background(), "")
	db.Close()
	if err != nil || len(users) != 1 {
		t.Fatalf("users in the backup: %v, %v", users, err)
	}
	if _, err := execute(context.Background(), "backup", "--data", dir, "--out", backup); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second backup to the same file: %v, want fs.ErrExist", err)
	}
}
