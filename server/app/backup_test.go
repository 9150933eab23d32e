package app

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// backupDataDir returns a data directory whose database holds n findings
// of agent a1 and stays open (a running server) until the test ends.
func backupDataDir(t *testing.T, n int) string {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, filepath.Join(dir, DBFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var fs []*wirev1.Finding
	for seq := uint64(1); seq <= uint64(n); seq++ {
		fs = append(fs, &wirev1.Finding{Seq: seq, Detector: "netflow"})
	}
	if _, err := db.InsertFindings(ctx, "a1", "e1", fs); err != nil {
		t.Fatal(err)
	}
	return dir
}

// backupFindings opens the backup at path and counts a1's findings.
func backupFindings(t *testing.T, path string) int {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, path, nil)
	if err != nil {
		t.Fatalf("open backup %s: %v", path, err)
	}
	defer db.Close()
	n, err := db.CountFindings(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func dirListing(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestBackupName(t *testing.T) {
	at := time.Date(2026, 11, 29, 17, 5, 9, 999, time.FixedZone("CET", 3600))
	if got, want := BackupName(at), "vigil-20261129T160509Z.db"; got != want {
		t.Errorf("BackupName = %s, want %s (UTC)", got, want)
	}
	for name, want := range map[string]bool{
		"vigil-20261129T160509Z.db":      true,
		"vigil-20240229T235959Z.db":      true,  // a leap day
		"vigil-20260229T000000Z.db":      false, // not a date
		"vigil-20261329T000000Z.db":      false,
		"vigil-20261129T246009Z.db":      false,
		"vigil-2026112T160509Z.db":       false,
		"vigil-20261129T160509Z.db.bak":  false,
		"vigil-20261129T160509Z.db-wal":  false,
		"vigil-20261129T160509z.db":      false,
		"VIGIL-20261129T160509Z.db":      false,
		"vigil-20261129T160509Z.DB":      false,
		"vigil-20261129T160509+0100.db":  false,
		"xvigil-20261129T160509Z.db":     false,
		".tmp-vigil-20261129T160509Z.db": false,
		"vigil-2026-11-29.db":            false,
		"vigil.db":                       false,
		"vigil-20261129T160509Z .db":     false,
	} {
		if got := isBackupName(name); got != want {
			t.Errorf("isBackupName(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestBackupToDir: backups into a directory, on a real database that is
// open (a running server): the new backup is a verified copy named by its
// UTC time; the oldest backups beyond --keep go, and nothing else in the
// directory (other names, links and their targets, directories, temporary
// files); a failed backup deletes nothing.
func TestBackupToDir(t *testing.T) {
	ctx := context.Background()
	data := backupDataDir(t, 25)
	base := time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)
	day := func(i int) time.Time { return base.Add(time.Duration(i) * 24 * time.Hour) }
	now := day(9).Add(90 * time.Minute)
	newName := BackupName(now)

	// Decoys: never deleted, whatever --keep says.
	decoys := []string{
		"vigil-2026-11-01.db", "vigil-20261101T000000Z.db.bak", "vigil-20261101T000000Z.db-wal",
		"vigil-20260229T000000Z.db", "VIGIL-20261101T000000Z.db", ".tmp-vigil-20261101T000000Z.db-123", "notes.txt",
	}

	for _, tc := range []struct {
		name       string
		missingDir bool   // the backup directory does not exist yet
		old        []int  // days of earlier backups (real copies, made by BackupToDir)
		future     bool   // a backup named after a later time (the clock was set back)
		decoys     bool   // decoys, a link to an outside file, a directory of a backup's name
		clash      bool   // a file of the new backup's name is there
		data       string // "" = the test's data directory
		keep       int    //
		wantErr    error  // errors.Is; nil: success
		wantErrStr string // a substring of the error
		wantKept   []int  // days of the earlier backups left
		wantFuture bool   // the future backup is left
		check      func(*testing.T, string)
	}{
		{name: "missing directory is created 0700", missingDir: true, keep: 7,
			check: func(t *testing.T, dir string) {
				st, err := os.Stat(dir)
				if err != nil || st.Mode().Perm() != 0o700 {
					t.Errorf("backup directory: %v, %v; want mode 0700", st, err)
				}
			}},
		{name: "fewer than keep: nothing removed", old: []int{1, 2, 3}, keep: 7, wantKept: []int{1, 2, 3}},
		{name: "exactly keep: nothing removed", old: []int{1, 2, 3, 4, 5, 6}, keep: 7, wantKept: []int{1, 2, 3, 4, 5, 6}},
		{name: "oldest beyond keep removed", old: []int{1, 2, 3, 4, 5, 6, 7, 8}, keep: 3, wantKept: []int{7, 8}},
		{name: "keep 1 keeps the new one only", old: []int{1, 5, 8}, keep: 1},
		{name: "decoys, links and directories stay", old: []int{1, 2, 3, 4}, decoys: true, keep: 2, wantKept: []int{4}},
		{name: "a later-named backup does not push the new one out", old: []int{1, 2}, future: true, keep: 1},
		{name: "a later-named backup counts as a newer one", old: []int{1, 2}, future: true, keep: 2, wantFuture: true},
		{name: "existing name: refused, nothing removed", old: []int{1, 2, 3}, clash: true, keep: 1,
			wantErr: fs.ErrExist, wantKept: []int{1, 2, 3}},
		{name: "failed backup: nothing removed", old: []int{1, 2, 3}, data: "missing", keep: 1,
			wantErr: fs.ErrNotExist, wantKept: []int{1, 2, 3}},
		{name: "keep 0 refused", old: []int{1, 2}, keep: 0, wantErrStr: "at least 1", wantKept: []int{1, 2}},
		{name: "keep -1 refused", old: []int{1}, keep: -1, wantErrStr: "at least 1", wantKept: []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "backups")
			if !tc.missingDir {
				if err := os.Mkdir(dir, 0o750); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range tc.old {
				if _, err := BackupToDir(ctx, data, dir, 100, day(d)); err != nil {
					t.Fatalf("earlier backup of day %d: %v", d, err)
				}
			}
			var futureName string
			if tc.future {
				futureName = BackupName(now.Add(365 * 24 * time.Hour))
				if _, err := Backup(ctx, data, filepath.Join(dir, futureName)); err != nil {
					t.Fatal(err)
				}
			}
			outside := filepath.Join(t.TempDir(), "outside.db")
			if tc.decoys {
				for _, d := range decoys {
					if err := os.WriteFile(filepath.Join(dir, d), []byte("keep me"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				if err := os.WriteFile(outside, []byte("keep me"), 0o600); err != nil {
					t.Fatal(err)
				}
				// Older than every backup: first in line if links were candidates.
				if err := os.Symlink(outside, filepath.Join(dir, BackupName(day(-3)))); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(filepath.Join(dir, BackupName(day(-2))), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, BackupName(day(-2)), "x"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.clash {
				if err := os.WriteFile(filepath.Join(dir, newName), []byte("keep me"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			src := data
			if tc.data != "" {
				src = filepath.Join(t.TempDir(), tc.data)
			}
			var before []string
			if !tc.missingDir {
				before = dirListing(t, dir)
			}

			info, err := BackupToDir(ctx, src, dir, tc.keep, now)

			var wantNames []string
			for _, d := range tc.wantKept {
				wantNames = append(wantNames, BackupName(day(d)))
			}
			switch {
			case tc.wantErr != nil || tc.wantErrStr != "":
				if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.wantErrStr) {
					t.Fatalf("BackupToDir = %v, want %v %q", err, tc.wantErr, tc.wantErrStr)
				}
				if info.Path != "" || len(info.Removed) != 0 {
					t.Errorf("failed BackupToDir returned %+v", info)
				}
				if after := dirListing(t, dir); !slices.Equal(after, before) {
					t.Errorf("directory after a failure: %q, was %q", after, before)
				}
				if tc.clash {
					if b, _ := os.ReadFile(filepath.Join(dir, newName)); string(b) != "keep me" {
						t.Errorf("the existing file of the new name changed: %q", b)
					}
				}
				return
			case err != nil:
				t.Fatalf("BackupToDir: %v", err)
			}

			if want := filepath.Join(dir, newName); info.Path != want || info.SchemaVersion != store.SchemaVersion() || info.Size <= 0 {
				t.Errorf("info %+v, want path %s", info, want)
			}
			if st, err := os.Stat(info.Path); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("new backup: %v, %v; want mode 0600", st, err)
			}
			if n := backupFindings(t, info.Path); n != 25 {
				t.Errorf("findings in the new backup: %d, want 25", n)
			}
			wantNames = append(wantNames, newName)
			if tc.wantFuture {
				wantNames = append(wantNames, futureName)
			}
			var gotBackups []string
			for _, n := range dirListing(t, dir) {
				if isBackupName(n) {
					if st, err := os.Lstat(filepath.Join(dir, n)); err == nil && st.Mode().IsRegular() {
						gotBackups = append(gotBackups, n)
					}
				}
			}
			slices.Sort(wantNames)
			if !slices.Equal(gotBackups, wantNames) {
				t.Errorf("backups left %q, want %q", gotBackups, wantNames)
			}
			// Removed names exactly what went, oldest first.
			var wantRemoved []string
			for _, n := range before {
				if isBackupName(n) && !slices.Contains(wantNames, n) {
					if st, err := os.Lstat(filepath.Join(dir, n)); err != nil {
						wantRemoved = append(wantRemoved, filepath.Join(dir, n))
					} else if !st.Mode().IsRegular() {
						continue // a decoy, still there
					}
				}
			}
			if !slices.Equal(info.Removed, wantRemoved) || info.Removed == nil {
				t.Errorf("Removed %q, want %q", info.Removed, wantRemoved)
			}
			if tc.decoys {
				for _, d := range decoys {
					if b, err := os.ReadFile(filepath.Join(dir, d)); err != nil || string(b) != "keep me" {
						t.Errorf("decoy %s: %q, %v", d, b, err)
					}
				}
				link := filepath.Join(dir, BackupName(day(-3)))
				if st, err := os.Lstat(link); err != nil || st.Mode()&fs.ModeSymlink == 0 {
					t.Errorf("link %s: %v, %v", link, st, err)
				}
				if b, err := os.ReadFile(outside); err != nil || string(b) != "keep me" {
					t.Errorf("the link's target: %q, %v", b, err)
				}
				if _, err := os.Stat(filepath.Join(dir, BackupName(day(-2)), "x")); err != nil {
					t.Errorf("directory of a backup's name: %v", err)
				}
			}
			if tc.check != nil {
				tc.check(t, dir)
			}
		})
	}
}

// TestBackupToDirNotADirectory: a file at the backup directory's name, or
// a missing parent, fails before any copy is made.
func TestBackupToDirNotADirectory(t *testing.T) {
	ctx := context.Background()
	data := backupDataDir(t, 1)
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, dir := range map[string]string{
		"a file":         file,
		"missing parent": filepath.Join(tmp, "no", "backups"),
		"empty":          "",
	} {
		t.Run(name, func(t *testing.T) {
			if info, err := BackupToDir(ctx, data, dir, 7, time.Now()); err == nil || info.Path != "" {
				t.Fatalf("BackupToDir(%q) = %+v, %v; want an error", dir, info, err)
			}
		})
	}
	if got := dirListing(t, tmp); !slices.Equal(got, []string{"file"}) {
		t.Errorf("%s holds %q, want only file", tmp, got)
	}
}
