package update

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/internal/fsutil"
)

// lockPoll is how often a process waiting for the state lock tries again.
const lockPoll = 50 * time.Millisecond

// lockState takes the exclusive inter-process lock of the models directory, an flock(2) of
// <state>/models/.lock: a running agent and `vigil-agent update` share the state directory, and
// one's gc must not remove the bundle or temporary file the other is staging. It waits until the
// lock is free or ctx ends; unlock releases it. Two Updaters of one process exclude each other too
// (each opens the file: flock locks belong to the open file description). The caller holds u.mu.
func (u *Updater) lockState(ctx context.Context) (unlock func(), err error) {
	root := filepath.Join(u.cfg.StateDir, ModelsDir)
	if err := os.MkdirAll(root, 0o750); err != nil {
		return nil, fmt.Errorf("lock models: %w", err)
	}
	path := filepath.Join(root, lockFile)
	// flock needs no write access. The updater creates the file itself: a symbolic link is not
	// followed, and anything but a regular file (a named pipe would hold the open) is refused.
	f, _, err := fsutil.OpenRegular(path, os.O_RDONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock models: %w", err)
	}
	fd := int(f.Fd())
	for waited := false; ; waited = true {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing the only descriptor releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !waited {
			u.log.Info("waiting for another process changing models in this state directory", "lock", path)
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}
