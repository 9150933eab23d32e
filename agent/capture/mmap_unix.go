//go:build unix

package capture

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// fileMap maps a regular file one window at a time for pcapReader: the
// records are read in place, with no copy from the page cache into a
// buffer. Only the current window is mapped, so at most mapWindow bytes of
// the file count in the process's RSS however large the capture is.
//
// A file that shrinks while a window of it is mapped makes the next access
// beyond its new end raise SIGBUS. The readers that touch the window
// (pcapReader and the decoder, in fileSource.batch and newFileSource) run
// with debug.SetPanicOnFault, so the fault becomes a panic that they
// recover as a truncated-file error instead of a crash
// (TestMappedFileShrinks).
type fileMap struct {
	f    *os.File
	data []byte // the window; nil when none is mapped
	off  int64  // file offset of data[0]
}

// mapWindow is the size of a mapped window: large enough that remapping is
// rare (one mmap and one munmap per MB, about 3 ns per packet of the
// reference capture), small enough to keep the RSS low (the read buffer it
// replaces was 256 KB).
const mapWindow = 1 << 20

// newFileMap returns a mapper of f, or nil if f is not a non-empty
// regular file or cannot be mapped (the caller then reads it).
func newFileMap(f *os.File) *fileMap {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return nil
	}
	m := &fileMap{f: f}
	if _, err := m.window(0, int(min(fi.Size(), 4096))); err != nil {
		return nil
	}
	return m
}

// size returns the file's current size.
func (m *fileMap) size() (int64, error) {
	fi, err := m.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	return fi.Size(), nil
}

// window unmaps the current window and maps length bytes from off, which
// must be page aligned. The pages are mapped as they are first touched
// (the kernel maps 64 KB around each fault); MAP_POPULATE, which maps the
// whole window up front, measured slower.
func (m *fileMap) window(off int64, length int) ([]byte, error) {
	m.unmap()
	data, err := unix.Mmap(int(m.f.Fd()), off, length, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %d bytes at offset %d: %w", length, off, err)
	}
	m.data, m.off = data, off
	return data, nil
}

// unmap releases the current window. It is idempotent.
func (m *fileMap) unmap() {
	if m.data != nil {
		_ = unix.Munmap(m.data) // only fails for a bad address, which data is not
		m.data = nil
	}
}

// pageSize is the alignment of a window's file offset.
var pageSize = int64(os.Getpagesize())
