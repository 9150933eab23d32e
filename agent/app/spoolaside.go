package app

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/vigil-edge/vigil/agent/spool"
)

// asideMark joins a damaged spool file's name and the time it was moved
// aside: spool.db.corrupt-20261129T140000Z.
const asideMark = ".corrupt-"

// openSpool opens the spool at path. A file bbolt finds damaged (a torn
// write, a bad sector: spool.ErrCorrupt) is moved aside, kept for recovery
// by hand, and an empty spool takes its place: detection goes on, and the
// uplink renumbers the new findings above the server's highest seq for the
// agent (HelloAck.highest_seq), so none is taken for a duplicate. The
// findings that waited in the damaged file are lost unless recovered. It
// returns the number of damaged spool files aside, which the agent reports
// as spool_corrupt_files (a loss counter of the server's health) for as
// long as they are there: removing them after a recovery clears it.
func openSpool(path string, opts spool.Options, log *slog.Logger) (*spool.Spool, int, error) {
	sp, err := spool.Open(path, opts)
	if errors.Is(err, spool.ErrCorrupt) {
		aside := path + asideMark + time.Now().UTC().Format("20060102T150405Z")
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, 0, fmt.Errorf("%w (moving it aside: %v)", err, rerr)
		}
		log.Error("spool file damaged: moved aside, an empty spool takes its place; the findings that waited in it are lost unless recovered by hand",
			"err", err, "moved_to", aside)
		sp, err = spool.Open(path, opts)
	}
	if err != nil {
		return nil, 0, err
	}
	return sp, spoolFilesAside(path), nil
}

// spoolFilesAside counts the damaged spool files openSpool moved aside.
func spoolFilesAside(path string) int {
	names, _ := filepath.Glob(path + asideMark + "*") // the pattern is well-formed
	return len(names)
}
