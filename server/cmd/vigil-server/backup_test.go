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

// TestBackupDir: `vigil-server backup --dir` (what the packaged timer runs)
// creates the directory, names each backup by its UTC time, keeps the
// newest --keep and reports what it removed; the flags are checked before
// anything is written.
func TestBackupDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if out, err := execute(context.Background(), "init", "--data", dir, "--log-format", "text"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	backups := filepath.Join(t.TempDir(), "backups")
	clock := time.Date(2026, 11, 29, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	defer func(f func() time.Time) { backupNow = f }(backupNow)
	backupNow = func() time.Time { return clock }

	for _, tc := range []struct {
		name string
		args []string
		want string // substring of the error; "" for success
	}{
		{"out and dir", []string{"--out", filepath.Join(backups, "x.db"), "--dir", backups}, "none of the others can be"},
		{"neither out nor dir", nil, "at least one of the flags"},
		{"keep 0", []string{"--dir", backups, "--keep", "0"}, "--keep 0: want at least 1"},
		{"keep -2", []string{"--dir", backups, "--keep", "-2"}, "--keep -2: want at least 1"},
		{"keep empty (VIGIL_BACKUP_KEEP=)", []string{"--dir", backups, "--keep", ""}, "invalid argument"},
		{"keep with out", []string{"--out", filepath.Join(backups, "x.db"), "--keep", "3"}, "--keep applies to --dir only"},
		{"empty out", []string{"--out", ""}, "--out: no file named"},
		{"empty dir", []string{"--dir", ""}, "no backup directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := execute(context.Background(), append([]string{"backup", "--data", dir}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("backup %q = %v, want %q\n%s", tc.args, err, tc.want, out)
			}
			if _, err := os.Stat(backups); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("backup directory after a refused command: %v", err)
			}
		})
	}

	var names []string
	for i := range 4 {
		out, err := execute(context.Background(), "backup", "--data", dir, "--dir", backups, "--keep", "2", "--json")
		if err != nil {
			t.Fatalf("backup %d: %v\n%s", i, err, out)
		}
		var info struct {
			store.BackupInfo
			Removed []string `json:"removed"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil || info.SchemaVersion != store.SchemaVersion() {
			t.Fatalf("backup --json printed %q (%v)", out, err)
		}
		want := filepath.Join(backups, "vigil-"+clock.UTC().Format("20060102T150405Z")+".db")
		if info.Path != want {
			t.Errorf("backup %d: path %s, want %s", i, info.Path, want)
		}
		var wantRemoved []string
		if i >= 2 {
			wantRemoved = []string{names[i-2]}
		}
		if strings.Join(info.Removed, ",") != strings.Join(wantRemoved, ",") || info.Removed == nil {
			t.Errorf("backup %d: removed %q, want %q", i, info.Removed, wantRemoved)
		}
		names = append(names, info.Path)
		clock = clock.Add(24 * time.Hour)
	}
	if st, err := os.Stat(backups); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("backup directory: %v, %v; want mode 0700", st, err)
	}
	ents, err := os.ReadDir(backups)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		left = append(left, filepath.Join(backups, e.Name()))
	}
	if strings.Join(left, ",") != strings.Join(names[2:], ",") {
		t.Errorf("backups left %q, want %q", left, names[2:])
	}

	// Text output; the same second again is refused and removes nothing.
	out, err := execute(context.Background(), "backup", "--data", dir, "--dir", backups, "--keep", "1")
	if err != nil || !strings.Contains(out, "backup written: ") || !strings.Contains(out, "old backup removed: "+names[2]+"\n") ||
		!strings.Contains(out, "old backup removed: "+names[3]+"\n") || !strings.Contains(out, "not in it: ") {
		t.Fatalf("backup --keep 1: %v\n%s", err, out)
	}
	if out, err := execute(context.Background(), "backup", "--data", dir, "--dir", backups, "--keep", "1"); !errors.Is(err, fs.ErrExist) || out != "" {
		t.Fatalf("second backup in the same second: %v, %q; want fs.ErrExist and no output", err, out)
	}
	if ents, err := os.ReadDir(backups); err != nil || len(ents) != 1 {
		t.Errorf("backups left: %v, %v; want one", ents, err)
	}
}
