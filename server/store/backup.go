package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/vigil-edge/vigil/internal/fsutil"
)

// BackupInfo describes a verified backup.
type BackupInfo struct {
	Path          string `json:"path"`
	Size          int64  `json:"size"`
	SchemaVersion int    `json:"schema_version"`
}

// Backup copies the database at dbPath to out with VACUUM INTO, while the
// server may be running: the copy is one read transaction's snapshot (WAL
// lets the server's writer go on meanwhile; the server's committed
// transactions after it begins are not in it). Nothing in the database is
// written, and no migration runs.
//
// out must not exist (fs.ErrExist). The copy is written to a temporary file
// (mode 0600) in out's directory, switched to a rollback journal (one
// self-contained file; the server turns WAL on again when it opens it),
// checked with PRAGMA integrity_check, fsynced, and only then linked to out
// (a link never replaces a file) and the directory fsynced. On error no
// file is left behind. The backup holds the database only: the data
// directory's keys, certificates, admin.token and bundles are files beside
// it (see README.md, Operations).
func Backup(ctx context.Context, dbPath, out string) (BackupInfo, error) {
	info, err := backup(ctx, dbPath, out)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("backup %s to %s: %w", dbPath, out, err)
	}
	return info, nil
}

func backup(ctx context.Context, dbPath, out string) (BackupInfo, error) {
	src, err := filepath.Abs(dbPath)
	if err != nil {
		return BackupInfo{}, err
	}
	st, err := os.Stat(src)
	if err != nil {
		return BackupInfo{}, err // fs.ErrNotExist: sql.Open would create it
	}
	if !st.Mode().IsRegular() {
		return BackupInfo{}, fmt.Errorf("%s is not a regular file: %w", src, ErrInvalid)
	}
	if _, err := os.Lstat(out); err == nil {
		return BackupInfo{}, fmt.Errorf("%s: %w", out, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return BackupInfo{}, err
	}
	dir, err := filepath.Abs(filepath.Dir(out))
	if err != nil {
		return BackupInfo{}, err
	}
	// VACUUM INTO accepts an empty file: created here, it has the mode we
	// want (SQLite would create it 0644).
	tmpf, err := os.CreateTemp(dir, fsutil.TempPrefix+filepath.Base(out)+"-*")
	if err != nil {
		return BackupInfo{}, err
	}
	tmp := tmpf.Name()
	if err := tmpf.Close(); err != nil {
		_ = os.Remove(tmp)
		return BackupInfo{}, err
	}
	info, err := backupTo(ctx, src, tmp)
	if err == nil {
		// os.Link, unlike a rename, fails if out appeared meanwhile.
		err = os.Link(tmp, out)
	}
	for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
		_ = os.Remove(tmp + suffix) // after the link, out keeps the copy
	}
	if err != nil {
		return BackupInfo{}, err
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return BackupInfo{}, err
	}
	info.Path = out
	return info, nil
}

// backupTo writes the snapshot of src into the empty file tmp and verifies
// it.
func backupTo(ctx context.Context, src, tmp string) (BackupInfo, error) {
	// mode=rw: opening creates no database. Not read-only (mode=ro or
	// query_only): query_only refuses VACUUM INTO's writes to its output,
	// and a read-only connection to a stopped server's database creates its
	// -wal and -shm and cannot remove them, where this one, as the last
	// connection, removes them on close. Nothing here changes the source
	// (closing as its last connection checkpoints a WAL that a crashed
	// server left, as the server's next start would).
	q := url.Values{}
	q.Set("mode", "rw")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	u := url.URL{Scheme: "file", OmitHost: true, Path: src, RawQuery: q.Encode()}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return BackupInfo{}, err
	}
	db.SetMaxOpenConns(1)
	var v sql.NullInt64
	err = db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v)
	if err != nil && strings.Contains(err.Error(), "no such table") {
		err = fmt.Errorf("%s is not a Vigil database (no schema_migrations): %w", src, ErrInvalid)
	}
	if err == nil {
		_, err = db.ExecContext(ctx, `VACUUM INTO ?`, tmp)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return BackupInfo{}, err
	}
	info, err := verifyBackup(ctx, tmp)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("verify the copy: %w", err)
	}
	f, err := os.Open(tmp)
	if err != nil {
		return BackupInfo{}, err
	}
	err = f.Sync() // VACUUM INTO writes its output without syncing it
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return BackupInfo{}, fmt.Errorf("fsync the copy: %w", err)
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return BackupInfo{}, err
	}
	info.Size = st.Size()
	return info, nil
}

// verifyBackup opens the copy at path on its own, makes it a rollback
// journal database (a single file), and checks its integrity and schema.
func verifyBackup(ctx context.Context, path string) (BackupInfo, error) {
	u := url.URL{Scheme: "file", OmitHost: true, Path: path}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return BackupInfo{}, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode = DELETE`).Scan(&mode); err != nil {
		return BackupInfo{}, fmt.Errorf("journal mode: %w", err)
	}
	rows, err := db.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("integrity check: %w", err)
	}
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return BackupInfo{}, fmt.Errorf("integrity check: %w", err)
		}
		problems = append(problems, s)
	}
	if err := rows.Close(); err != nil {
		return BackupInfo{}, fmt.Errorf("integrity check: %w", err)
	}
	if err := rows.Err(); err != nil {
		return BackupInfo{}, fmt.Errorf("integrity check: %w", err)
	}
	if len(problems) != 1 || problems[0] != "ok" {
		return BackupInfo{}, fmt.Errorf("integrity check: %s", strings.Join(problems, "; "))
	}
	var info BackupInfo
	if err := db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&info.SchemaVersion); err != nil {
		return BackupInfo{}, fmt.Errorf("schema version: %w", err)
	}
	return info, nil
}
