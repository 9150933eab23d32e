package watch

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// beneath opens files below one watch root without ever following a symbolic
// link (openat2 with RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS), so a link, or a
// directory swapped for a link, can never lead a read out of the tree. On
// kernels without openat2 (before 5.6) it falls back to os.Root, which still
// refuses to leave the root, after an Lstat that skips links.
type beneath struct {
	dir  *os.File // O_PATH descriptor of the root
	root *os.Root // fallback
}

var noOpenat2 atomic.Bool

func openBeneath(rootPath string) (*beneath, error) {
	fd, err := unix.Open(rootPath, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", rootPath, err)
	}
	r, err := os.OpenRoot(rootPath)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open root %s: %w", rootPath, err)
	}
	return &beneath{dir: os.NewFile(uintptr(fd), rootPath), root: r}, nil
}

func (b *beneath) close() {
	b.dir.Close()
	b.root.Close()
}

// open opens rel (relative to the root) read-only and non-blocking (a FIFO
// never blocks the open). The caller checks the type with Stat.
func (b *beneath) open(rel string) (*os.File, error) {
	if !noOpenat2.Load() {
		how := unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NOCTTY,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		}
		for {
			fd, err := unix.Openat2(int(b.dir.Fd()), rel, &how)
			if err == unix.EINTR {
				continue
			}
			if errors.Is(err, unix.ENOSYS) {
				noOpenat2.Store(true)
				break
			}
			if err != nil {
				return nil, &os.PathError{Op: "openat2", Path: rel, Err: err}
			}
			return os.NewFile(uintptr(fd), rel), nil
		}
	}
	fi, err := b.root.Lstat(rel)
	if err != nil {
		return nil, err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return nil, &os.PathError{Op: "open", Path: rel, Err: unix.ELOOP}
	}
	return b.root.OpenFile(rel, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
}
