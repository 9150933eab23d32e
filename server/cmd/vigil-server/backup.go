package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/server/app"
)

// newBackupCmd: an online copy of the database (app.Backup), safe while
// `vigil-server run` serves.
func newBackupCmd(_ *globalFlags) *cobra.Command {
	var (
		dir, out string
		asJSON   bool
	)
	c := &cobra.Command{
		Use:   "backup --data DIR --out FILE [--json]",
		Short: "Copy the database to FILE (new, mode 0600) while the server runs, and verify the copy",
		Long: `Copy DIR's database to FILE with SQLite's VACUUM INTO: a consistent snapshot, taken while
the server runs (it keeps accepting findings). FILE must not exist; it is written with mode 0600,
fsynced, and checked with PRAGMA integrity_check before it gets its name. Run it as the server's
user. The copy holds the database only, not the data directory's CA keys, certificates,
admin.token, trust.json or bundles/: back those up separately (README.md, Operations).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info, err := app.Backup(cmd.Context(), dir, out)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(w).Encode(info)
			}
			fmt.Fprintf(w, "backup written: %s (%d bytes, schema version %d, integrity ok)\n", info.Path, info.Size, info.SchemaVersion)
			fmt.Fprintf(w, "not in it: the keys and certificates, admin.token, trust.json and bundles/ of %s\n", dir)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "data", "", "data directory of the server")
	c.Flags().StringVar(&out, "out", "", "backup file to create (must not exist)")
	c.Flags().BoolVar(&asJSON, "json", false, "print {path, size, schema_version}")
	_ = c.MarkFlagRequired("data")
	_ = c.MarkFlagRequired("out")
	return c
}
