//go:build linux

package capture

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// packetSockets lists the process's AF_PACKET sockets (by their SO_DOMAIN,
// whatever network namespace they belong to) with whether each lacks
// FD_CLOEXEC.
func packetSockets(t *testing.T) map[int]bool {
	t.Helper()
	names, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]bool{}
	for _, e := range names {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		if dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || dom != unix.AF_PACKET {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil {
			continue
		}
		out[fd] = flags&unix.FD_CLOEXEC == 0
	}
	return out
}

// TestLiveSocketsCloseOnExec opens a live capture on the loopback interface
// (no traffic is sent) and checks that none of its AF_PACKET sockets could
// be inherited by a plugin the agent starts: afpacket opens them without
// SOCK_CLOEXEC.
func TestLiveSocketsCloseOnExec(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("AF_PACKET needs root (CAP_NET_RAW)")
	}
	src, err := OpenLive("lo", LiveOptions{Fanout: 2})
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EAFNOSUPPORT) {
		t.Skipf("no AF_PACKET here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	socks := packetSockets(t)
	if len(socks) < 2 {
		t.Fatalf("found %d AF_PACKET sockets of a fanout-2 capture, want 2: %v", len(socks), socks)
	}
	for fd, inheritable := range socks {
		if inheritable {
			t.Errorf("capture socket fd %d is not close-on-exec: a plugin started now inherits it", fd)
		}
	}
}
