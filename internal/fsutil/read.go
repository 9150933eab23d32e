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

// OpenRegular opens path with os.OpenFile's flag and perm, plus O_NONBLOCK
// and O_CLOEXEC, and returns it with its fstat, or an error wrapping
// ErrNotRegular if it is not a regular file. Opening a named pipe for
// reading waits for a writer, and for writing waits for a reader, forever,
// before its type could be checked; with O_NONBLOCK the open returns at
// once, and it changes nothing for a regular file. Checks of mode or owner
// belong on the returned FileInfo: it describes the file that is read.
// With O_NOFOLLOW in flag, a symbolic link at path's last element wraps
// ErrNotRegular too. Other errors of the open are returned as they are
// (os.ErrNotExist for a missing file), except ENXIO, which only a special
// file gives (a named pipe opened for writing without a reader, a socket):
// it wraps ErrNotRegular as well.
func OpenRegular(path string, flag int, perm os.FileMode) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK|syscall.O_CLOEXEC, perm)
	if err != nil {
		// O_NOFOLLOW fails with ELOOP on a link: say so rather than "too many levels of symbolic links".
		if flag&syscall.O_NOFOLLOW != 0 && errors.Is(err, syscall.ELOOP) {
			if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return nil, nil, fmt.Errorf("open %s: a symbolic link (not followed): %w", path, ErrNotRegular)
			}
		}
		if errors.Is(err, syscall.ENXIO) {
			return nil, nil, fmt.Errorf("%w: %w", err, ErrNotRegular)
		}
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("open %s: a %s: %w", path, typeName(fi.Mode()), ErrNotRegular)
	}
	return f, fi, nil
}

func readRegular(path string, limit int64, flags int) ([]byte, error) {
	f, fi, err := OpenRegular(path, os.O_RDONLY|flags, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
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
