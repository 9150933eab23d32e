package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/server/store"
)

// Backup writes a verified online copy of the data directory's database to
// out (store.Backup): the server may be running. The keys, certificates,
// admin.token, trust.json and bundles beside the database are not in it.
func Backup(ctx context.Context, dataDir, out string) (store.BackupInfo, error) {
	if dataDir == "" {
		return store.BackupInfo{}, errors.New("backup: no data directory")
	}
	return store.Backup(ctx, filepath.Join(dataDir, DBFile), out) // its errors name both files
}

// backupNameLayout is the name of a backup that BackupToDir writes, and
// the only name it ever deletes: vigil-YYYYMMDDTHHMMSSZ.db, in UTC.
const backupNameLayout = "vigil-20060102T150405Z.db"

// BackupName returns the name BackupToDir gives a backup taken at t.
func BackupName(t time.Time) string {
	return t.UTC().Format(backupNameLayout)
}

// isBackupName reports whether name is exactly one that BackupName returns
// (a valid date and time, every digit in place).
func isBackupName(name string) bool {
	t, err := time.Parse(backupNameLayout, name)
	return err == nil && t.Format(backupNameLayout) == name
}

// DirBackupInfo describes a backup that BackupToDir wrote and the older
// backups it removed.
type DirBackupInfo struct {
	store.BackupInfo
	Removed []string `json:"removed"` // paths of the old backups deleted
}

// BackupToDir writes a backup (Backup) named BackupName(now) into dir,
// which it creates (mode 0700) if it is missing (its parent must exist). A
// backup of that name already there is left alone (fs.ErrExist). Then it
// deletes the oldest backups in dir beyond the newest keep (≥ 1), the new
// one counted: only regular files whose name is exactly one that
// BackupName returns; links (never followed), directories and every other
// name stay. The new backup is never deleted, even when a backup named
// after a later time (a clock set back) is there. Nothing is deleted when
// the backup fails.
//
// When the backup is written but an old one cannot be deleted, the
// returned DirBackupInfo names the backup (Path) and the error says what
// was not deleted.
func BackupToDir(ctx context.Context, dataDir, dir string, keep int, now time.Time) (DirBackupInfo, error) {
	if keep < 1 {
		return DirBackupInfo{}, fmt.Errorf("backup to %s: keep %d backups: want at least 1", dir, keep)
	}
	if dir == "" {
		return DirBackupInfo{}, errors.New("backup: no backup directory")
	}
	if err := ensureBackupDir(dir); err != nil {
		return DirBackupInfo{}, fmt.Errorf("backup to %s: %w", dir, err)
	}
	out := filepath.Join(dir, BackupName(now))
	info, err := Backup(ctx, dataDir, out)
	if err != nil {
		return DirBackupInfo{}, err
	}
	res := DirBackupInfo{BackupInfo: info, Removed: []string{}}
	res.Removed, err = pruneBackups(dir, keep, filepath.Base(out))
	if err != nil {
		return res, fmt.Errorf("backup %s written; remove old backups in %s: %w", out, dir, err)
	}
	return res, nil
}

// ensureBackupDir creates dir with mode 0700 unless it exists, and checks
// that it is a directory (a link to one is the operator's choice).
func ensureBackupDir(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if err == nil {
		return fsutil.SyncDir(filepath.Dir(dir))
	}
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

// pruneBackups deletes the backups in dir (regular files named by
// BackupName, other than keepName) beyond the newest keep-1, oldest first,
// and returns their paths.
func pruneBackups(dir string, keep int, keepName string) ([]string, error) {
	entries, err := os.ReadDir(dir) // types from lstat: a link is a link
	if err != nil {
		return []string{}, err
	}
	var old []string
	for _, e := range entries {
		if e.Type().IsRegular() && e.Name() != keepName && isBackupName(e.Name()) {
			old = append(old, e.Name())
		}
	}
	// The names sort as their times do; the oldest first.
	sort.Strings(old)
	n := len(old) - (keep - 1)
	if n <= 0 {
		return []string{}, nil
	}
	removed := []string{}
	var errs []error
	for _, name := range old[:n] {
		p := filepath.Join(dir, name)
		// unlink(2), not os.Remove: a directory put in its place meanwhile
		// stays, and a link is removed, not followed.
		if err := syscall.Unlink(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, &fs.PathError{Op: "remove", Path: p, Err: err})
			continue
		}
		removed = append(removed, p)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}
