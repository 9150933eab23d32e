package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/server/app"
)

// backupNow is the clock that names the backups of --dir (tests move it).
var backupNow = time.Now

// defaultBackupKeep is --keep's default: a week of daily backups.
const defaultBackupKeep = 7

// newBackupCmd: an online copy of the database (app.Backup, app.BackupToDir),
// safe while `vigil-server run` serves.
func newBackupCmd(_ *globalFlags) *cobra.Command {
	var (
		dir, out, backupDir string
		keep                int
		asJSON              bool
	)
	c := &cobra.Command{
		Use:   "backup --data DIR (--out FILE | --dir BACKUPDIR [--keep N]) [--json]",
		Short: "Copy the database to a new file (mode 0600) while the server runs, and verify the copy",
		Long: `Copy DIR's database with SQLite's VACUUM INTO: a consistent snapshot, taken while the
server runs (it keeps accepting findings). The copy is written with mode 0600, fsynced, and
checked with PRAGMA integrity_check before it gets its name; an existing file is never replaced.

--out FILE: the copy is FILE, which must not exist.

--dir BACKUPDIR: the copy is BACKUPDIR/vigil-YYYYMMDDTHHMMSSZ.db (the time in UTC; it must
not exist). BACKUPDIR is created (mode 0700) if it is missing; its parent must exist. Then
the oldest backups of that exact name beyond the newest N (--keep, the new one counted) are
deleted: nothing else in BACKUPDIR, no link, and nothing when the backup failed. The packaged
vigil-server-backup.timer runs this daily (off until enabled).

Run it as the server's user. The copy holds the database only, not the data directory's CA
keys, certificates, admin.token, trust.json or bundles/: back those up separately
(README.md, Operations).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			if cmd.Flags().Changed("out") {
				if out == "" {
					return errors.New("--out: no file named")
				}
				if cmd.Flags().Changed("keep") {
					return errors.New("--keep applies to --dir only")
				}
				info, err := app.Backup(cmd.Context(), dir, out)
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(w).Encode(info)
				}
				fmt.Fprintf(w, "backup written: %s (%d bytes, schema version %d, integrity ok)\n", info.Path, info.Size, info.SchemaVersion)
				fmt.Fprintf(w, "not in it: the keys and certificates, admin.token, trust.json and bundles/ of %s\n", dir)
				return nil
			}
			if keep < 1 {
				return fmt.Errorf("--keep %d: want at least 1", keep)
			}
			info, err := app.BackupToDir(cmd.Context(), dir, backupDir, keep, backupNow())
			if info.Path == "" {
				return err // nothing written
			}
			// Written: say so even when an old backup could not be removed.
			if asJSON {
				if jerr := json.NewEncoder(w).Encode(info); err == nil {
					err = jerr
				}
				return err
			}
			fmt.Fprintf(w, "backup written: %s (%d bytes, schema version %d, integrity ok)\n", info.Path, info.Size, info.SchemaVersion)
			for _, p := range info.Removed {
				fmt.Fprintf(w, "old backup removed: %s\n", p)
			}
			fmt.Fprintf(w, "not in it: the keys and certificates, admin.token, trust.json and bundles/ of %s\n", dir)
			return err
		},
	}
	c.Flags().StringVar(&dir, "data", "", "data directory of the server")
	c.Flags().StringVar(&out, "out", "", "backup file to create (must not exist)")
	c.Flags().StringVar(&backupDir, "dir", "", "backup directory: write vigil-YYYYMMDDTHHMMSSZ.db there and delete the oldest beyond --keep")
	c.Flags().IntVar(&keep, "keep", defaultBackupKeep, "with --dir: how many backups to keep, the new one counted (at least 1)")
	c.Flags().BoolVar(&asJSON, "json", false, "print {path, size, schema_version} (and, with --dir, removed)")
	_ = c.MarkFlagRequired("data")
	c.MarkFlagsOneRequired("out", "dir")
	c.MarkFlagsMutuallyExclusive("out", "dir")
	return c
}
