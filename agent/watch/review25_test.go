package watch

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenNeverOpensSpecialFiles: the sampler's open resolves a path to an
// O_PATH descriptor and fstats it; a FIFO, socket or device node is never
// opened (opening a device can act on it). inotify's IN_OPEN, which an
// O_PATH descriptor does not raise, shows whether the file was opened. A
// regular file is opened, and reads.
func TestOpenNeverOpensSpecialFiles(t *testing.T) {
	root := t.TempDir()
	fifo := filepath.Join(root, "pipe")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "plain.txt")
	if err := os.WriteFile(file, []byte("some text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := openBeneath(root)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	opened := func(path string) bool {
		t.Helper()
		wd, err := unix.InotifyAddWatch(in, path, unix.IN_OPEN)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.InotifyRmWatch(in, uint32(wd))
		fd, st, err := b.open(filepath.Base(path))
		if err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
		if fd >= 0 {
			unix.Close(fd)
		}
		if fileMode(st.Mode).IsRegular() != (path == file) {
			t.Fatalf("%s: fstat mode %v", path, fileMode(st.Mode))
		}
		buf := make([]byte, 4096)
		n, _ := unix.Read(in, buf)
		return n > 0
	}
	if opened(fifo) {
		t.Fatal("the sampler opened a FIFO: a device node would be opened the same way")
	}
	if !opened(file) {
		t.Fatal("a regular file was not opened (the probe sees no IN_OPEN)")
	}
	fd, st, err := b.open("plain.txt")
	if err != nil || fd < 0 {
		t.Fatalf("open plain.txt: fd %d, %v", fd, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 64)
	n, _ := fdReader(fd).ReadAt(buf, 0)
	if string(buf[:n]) != "some text\n" || st.Size != 10 {
		t.Fatalf("read %q, size %d", buf[:n], st.Size)
	}
}
