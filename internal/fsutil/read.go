package fsutil

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ErrNotRegular is the error ReadRegular and ReadRegularNoFollow give for a
// path that is not a regular file (a named pipe, socket, device or
// directory) or, for ReadRegularNoFollow, that is a symbolic link.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is the error ReadRegular and ReadRegularNoFollow give for a
// file larger than their limit.
var ErrTooLarge = errors.New("file too large")

// ReadRegular reads the regular file at path (following symbolic links), at
// most limit bytes. It never waits on a special file: the file is opened with
// O_NONBLOCK, so a named pipe without a writer does not hold the open (a
// plain open for reading waits for a writer, forever), then fstat refuses
// anything but a regular file, wrapping ErrNotRegular, before a byte is read.
// O_NONBLOCK changes nothing for a regular file. A file of more than limit
// bytes, at the fstat or while it is read, is an error wrapping ErrTooLarge.
// The open's error is returned as it is (os.ErrNotExist for a missing file).
//
// Use it for a file in a directory that others can write to (the agent's
// state directory belongs to its service user), and for files an admin
// names; ReadRegularNoFollow where a link is never legitimate.
func ReadRegular(path string, limit int64) ([]byte, error) {
	return readRegular(path, limit, 0)
}

// ReadRegularNoFollow is ReadRegular for a file that is never a symbolic
// link (one its program writes itself, by rename): a link at path's last
// element is refused, wrapping ErrNotRegular, and not followed (links in the
// directories above are).
func ReadRegularNoFollow(path string, limit int64) ([]byte, error) {
	return readRegular(path, limit, syscall.O_NOFOLLOW)
}

func readRegular(path string, limit int64, flags int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC|flags, 0)
	if err != nil {
		// O_NOFOLLOW fails with ELOOP on a link: say so rather than "too many levels of symbolic links".
		if flags&syscall.O_NOFOLLOW != 0 && errors.Is(err, syscall.ELOOP) {
			if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return nil, fmt.Errorf("read %s: a symbolic link (not followed): %w", path, ErrNotRegular)
			}
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: a %s: %w", path, typeName(fi.Mode()), ErrNotRegular)
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("read %s: %d bytes, at most %d: %w", path, fi.Size(), limit, ErrTooLarge)
	}
	// Bounded again while reading: the file may grow after the fstat.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("read %s: more than %d bytes: %w", path, limit, ErrTooLarge)
	}
	return data, nil
}

// typeName names the type of a file that is not regular.
func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m.IsDir():
		return "directory"
	default:
		return "file of type " + m.Type().String()
	}
}
