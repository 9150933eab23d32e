package cloexec

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// inheritable reports whether fd lacks FD_CLOEXEC.
func inheritable(t *testing.T, fd int) bool {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("F_GETFD %d: %v", fd, err)
	}
	return flags&unix.FD_CLOEXEC == 0
}

// rawSocket opens a socket the way libraries that predate SOCK_CLOEXEC do
// (gopacket's afpacket among them): inheritable by any child.
func rawSocket(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

func TestAll(t *testing.T) {
	fd := rawSocket(t)
	if !inheritable(t, fd) {
		t.Fatal("a socket opened without SOCK_CLOEXEC is close-on-exec already: the test proves nothing")
	}
	if err := All(); err != nil {
		t.Fatal(err)
	}
	if inheritable(t, fd) {
		t.Fatal("All left a descriptor inheritable")
	}
	for _, std := range []int{0, 1, 2} {
		if flags, err := unix.FcntlInt(uintptr(std), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC != 0 {
			t.Fatalf("All marked standard descriptor %d close-on-exec", std)
		}
	}
}

func TestAllFallback(t *testing.T) {
	fd := rawSocket(t)
	if err := byProc(); err != nil {
		t.Fatal(err)
	}
	if inheritable(t, fd) {
		t.Fatal("the /proc/self/fd fallback left a descriptor inheritable")
	}
}

func TestOpen(t *testing.T) {
	var fd int
	if err := Open(func() error { fd = rawSocket(t); return nil }); err != nil {
		t.Fatal(err)
	}
	if inheritable(t, fd) {
		t.Fatal("a descriptor opened inside Open is inheritable")
	}
	want := os.ErrInvalid
	if err := Open(func() error { return want }); err != want {
		t.Fatalf("Open returned %v, want fn's error", err)
	}
}
