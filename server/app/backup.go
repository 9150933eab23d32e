package app

import (
	"context"
	"errors"
	"path/filepath"

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
