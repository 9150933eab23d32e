package watch

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	dir   *os.File // O_PATH descriptor of the root
	dirFD int      // its descriptor number
	root  *os.Root // fallback
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
	return &beneath{dir: os.NewFile(uintptr(fd), rootPath), dirFD: fd, root: r}, nil
}

func (b *beneath) close() {
	b.dir.Close()
	b.root.Close()
}

// lost tells whether rootPath still names the directory b was opened on:
// "" if it does, "gone" if nothing is there any more (deleted, moved away,
// a parent renamed), "replaced" if another inode is (a new directory, a
// link, a file system mounted over it). An error means the answer is
// unknown.
func (b *beneath) lost(rootPath string) (string, error) {
	var have, now unix.Stat_t
	if err := unix.Fstat(b.dirFD, &have); err != nil {
		return "", fmt.Errorf("stat root descriptor of %s: %w", rootPath, err)
	}
	if err := unix.Lstat(rootPath, &now); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return "gone", nil
		}
		return "", fmt.Errorf("stat root %s: %w", rootPath, err)
	}
	if have.Dev != now.Dev || have.Ino != now.Ino {
		return "replaced", nil
	}
	return "", nil
}

// open opens rel (relative to the root) for reading, non-blocking, and
// returns a raw descriptor, which the caller closes with unix.Close, with
// its fstat. A raw descriptor (not an *os.File) because os.NewFile of a
// non-blocking descriptor costs an fcntl and registering with, then
// leaving, the runtime's poller: three more system calls per sampled file.
//
// Only regular files are opened. A FIFO, socket or device node in the tree
// is only stat'ed (fd -1 with its stat): opening a device can act on it (a
// watchdog starts its timer, a tape rewinds). An fstatat before the open
// decides; it resolves the path without RESOLVE_BENEATH, which only the
// open needs, since the stat reads no content. A file swapped for a device
// node between that stat and the open is still opened, never read: the
// fstat after the open is checked again. Closing that window entirely (an
// O_PATH descriptor reopened through /proc/self/fd) costs 3 µs more per
// sampled file, +57% of the sampler's cost on this VM; the swap needs
// CAP_MKNOD in the watched tree, which is root's already.
func (b *beneath) open(rel string) (int, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(b.dirFD, rel, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, st, &os.PathError{Op: "fstatat", Path: rel, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		return -1, st, &os.PathError{Op: "open", Path: rel, Err: unix.ELOOP}
	default:
		return -1, st, nil // not opened: the stat is all the caller needs
	}
	fd := -1
	if !noOpenat2.Load() {
		how := unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NOCTTY,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		}
		for {
			var err error
			fd, err = unix.Openat2(b.dirFD, rel, &how)
			if err == unix.EINTR {
				continue
			}
			if errors.Is(err, unix.ENOSYS) {
				noOpenat2.Store(true)
				break
			}
			if err != nil {
				return -1, st, &os.PathError{Op: "openat2", Path: rel, Err: err}
			}
			break
		}
	}
	if fd < 0 {
		fi, err := b.root.Lstat(rel)
		if err != nil {
			return -1, st, err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return -1, st, &os.PathError{Op: "open", Path: rel, Err: unix.ELOOP}
		}
		f, err := b.root.OpenFile(rel, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
		if err != nil {
			return -1, st, err
		}
		fd, err = unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
		f.Close()
		if err != nil {
			return -1, st, &os.PathError{Op: "dup", Path: rel, Err: err}
		}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, &os.PathError{Op: "fstat", Path: rel, Err: err}
	}
	return fd, st, nil
}

// fdReader reads a raw descriptor with pread (io.ReaderAt, like
// os.File.ReadAt: it fills p unless the file ends first, then io.EOF).
type fdReader int

func (r fdReader) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		k, err := unix.Pread(int(r), p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, &os.PathError{Op: "pread", Path: "sample", Err: err}
		}
		if k == 0 {
			return n, io.EOF
		}
		n += k
	}
	return n, nil
}

// fileMode converts a stat mode to an fs.FileMode as os.Stat does.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}
