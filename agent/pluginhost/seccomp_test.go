package pluginhost

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompData lays out struct seccomp_data as the filter reads it. The
// kernel loads 32-bit words in the CPU's byte order (little-endian on amd64
// and arm64), x/net/bpf's VM in network byte order: each word is therefore
// stored big-endian where the little-endian layout puts it, the low half of
// args[i] at 16+8i and the high half at 20+8i.
func seccompData(arch, nr uint32, args ...uint64) []byte {
	b := make([]byte, seccompSize)
	binary.BigEndian.PutUint32(b[offNr:], nr)
	binary.BigEndian.PutUint32(b[offArch:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[offArg0Low+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[offArg0Low+8*i+4:], uint32(a>>32))
	}
	return b
}

// TestSocketFilterProgram runs the filter of every architecture on
// synthetic system calls in x/net/bpf's VM: no kernel needed.
func TestSocketFilterProgram(t *testing.T) {
	// Other system calls (x86_64 names; arm64 has others at these
	// numbers, allowed as well).
	const (
		read   = 0
		openat = 257
		prctl  = 157
	)
	for goarch, a := range seccompArches {
		t.Run(goarch, func(t *testing.T) {
			raw, err := a.program()
			if err != nil {
				t.Fatal(err)
			}
			checkSeccompInstructions(t, raw)
			ins, ok := bpf.Disassemble(raw)
			if !ok {
				t.Fatalf("cannot disassemble %v", raw)
			}
			vm, err := bpf.NewVM(ins)
			if err != nil {
				t.Fatal(err)
			}
			other := uint32(unix.AUDIT_ARCH_AARCH64)
			if a.audit == unix.AUDIT_ARCH_AARCH64 {
				other = unix.AUDIT_ARCH_X86_64
			}
			x32 := uint32(retAllow) // no x32 ABI: an unknown number, ENOSYS from the kernel
			if a.x32 {
				x32 = retKill
			}
			for _, tc := range []struct {
				name string
				arch uint32
				nr   uint32
				args []uint64
				want uint32
			}{
				{"socket AF_UNIX stream", a.audit, a.socket, []uint64{unix.AF_UNIX, unix.SOCK_STREAM, 0}, retAllow},
				{"socket AF_UNIX dgram cloexec", a.audit, a.socket, []uint64{unix.AF_UNIX, unix.SOCK_DGRAM | unix.SOCK_CLOEXEC, 0}, retAllow},
				{"socket AF_INET udp", a.audit, a.socket, []uint64{unix.AF_INET, unix.SOCK_DGRAM, 0}, retEPERM},
				{"socket AF_INET tcp", a.audit, a.socket, []uint64{unix.AF_INET, unix.SOCK_STREAM, 0}, retEPERM},
				{"socket AF_INET mptcp", a.audit, a.socket, []uint64{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP}, retEPERM},
				{"socket AF_INET6 udp", a.audit, a.socket, []uint64{unix.AF_INET6, unix.SOCK_DGRAM, 0}, retEPERM},
				{"socket AF_INET raw", a.audit, a.socket, []uint64{unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP}, retEPERM},
				{"socket AF_PACKET", a.audit, a.socket, []uint64{unix.AF_PACKET, unix.SOCK_RAW, 0x0300}, retEPERM},
				{"socket AF_NETLINK", a.audit, a.socket, []uint64{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE}, retEPERM},
				{"socket AF_VSOCK", a.audit, a.socket, []uint64{unix.AF_VSOCK, unix.SOCK_STREAM, 0}, retEPERM},
				{"socket AF_UNSPEC", a.audit, a.socket, []uint64{unix.AF_UNSPEC, unix.SOCK_STREAM, 0}, retEPERM},
				// The kernel takes the domain as an int: the high half
				// of the register does not matter, to it or the filter.
				{"socket AF_UNIX high bits", a.audit, a.socket, []uint64{1<<32 | unix.AF_UNIX, unix.SOCK_STREAM, 0}, retAllow},
				{"socket AF_INET high bits", a.audit, a.socket, []uint64{1<<32 | unix.AF_INET, unix.SOCK_DGRAM, 0}, retEPERM},
				{"socket AF_INET+AF_UNIX<<32", a.audit, a.socket, []uint64{unix.AF_UNIX<<32 | unix.AF_INET, unix.SOCK_DGRAM, 0}, retEPERM},
				{"socketpair AF_UNIX", a.audit, a.socketpair, []uint64{unix.AF_UNIX, unix.SOCK_STREAM, 0}, retAllow},
				{"socketpair AF_INET", a.audit, a.socketpair, []uint64{unix.AF_INET, unix.SOCK_STREAM, 0}, retEPERM},
				{"io_uring_setup", a.audit, a.ioUring[0], []uint64{8, 0}, retEPERM},
				{"io_uring_enter", a.audit, a.ioUring[1], []uint64{3, 1, 0, 0}, retEPERM},
				{"io_uring_register", a.audit, a.ioUring[2], []uint64{3, 0, 0, 0}, retEPERM},
				{"read", a.audit, read, []uint64{unix.AF_INET}, retAllow},
				{"openat", a.audit, openat, []uint64{1<<32 - 100 /* AT_FDCWD */}, retAllow},
				{"prctl", a.audit, prctl, []uint64{unix.PR_SET_SECCOMP}, retAllow},
				{"other architecture's socket number", a.audit, seccompArches[otherArch(goarch)].socket, []uint64{unix.AF_INET}, retAllow},
				{"other architecture", other, a.socket, []uint64{unix.AF_UNIX}, retKill},
				{"i386", unix.AUDIT_ARCH_I386, 359 /* i386 socket */, []uint64{unix.AF_INET}, retKill},
				{"i386 socketcall", unix.AUDIT_ARCH_I386, 102, []uint64{1 /* SYS_SOCKET */}, retKill},
				{"arch 0", 0, a.socket, []uint64{unix.AF_INET}, retKill},
				{"x32 socket", a.audit, x32Bit | a.socket, []uint64{unix.AF_INET, unix.SOCK_DGRAM, 0}, x32},
				{"x32 read", a.audit, x32Bit | read, nil, x32},
			} {
				got, err := vm.Run(seccompData(tc.arch, tc.nr, tc.args...))
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if uint32(got) != tc.want {
					t.Errorf("%s (arch %#x nr %#x args %#x): %#x, want %#x", tc.name, tc.arch, tc.nr, tc.args, uint32(got), tc.want)
				}
			}
		})
	}
	if _, err := buildSocketFilter("riscv64"); err == nil {
		t.Error("buildSocketFilter(riscv64): a filter for an architecture the host does not know")
	}
}

func otherArch(goarch string) string {
	if goarch == "amd64" {
		return "arm64"
	}
	return "amd64"
}

// checkSeccompInstructions checks what the kernel's seccomp checker
// (seccomp_check_filter) asks of a program, so that a change the VM accepts
// but the kernel would refuse fails here: 32-bit absolute loads, aligned,
// within struct seccomp_data; jumps and returns; at most BPF_MAXINSNS.
func checkSeccompInstructions(t *testing.T, raw []bpf.RawInstruction) {
	t.Helper()
	const (
		ldWAbs = 0x00 | 0x00 | 0x20 // BPF_LD | BPF_W | BPF_ABS
		clsJmp = 0x05
		clsRet = 0x06
	)
	if len(raw) == 0 || len(raw) > 4096 {
		t.Fatalf("%d instructions", len(raw))
	}
	for i, r := range raw {
		switch {
		case r.Op == ldWAbs:
			if r.K%4 != 0 || r.K >= seccompSize {
				t.Errorf("instruction %d loads offset %d", i, r.K)
			}
		case r.Op&0x07 == clsJmp:
			if i+1+int(max(r.Jt, r.Jf)) >= len(raw) {
				t.Errorf("instruction %d jumps past the end", i)
			}
		case r.Op&0x07 == clsRet:
		default:
			t.Errorf("instruction %d: op %#x, which the filter does not need", i, r.Op)
		}
	}
	if last := raw[len(raw)-1]; last.Op&0x07 != clsRet {
		t.Errorf("the program ends with op %#x, not a return", last.Op)
	}
}

// TestSocketFilterSyscallNumbers checks the written-out numbers of the
// running architecture against x/sys/unix.
func TestSocketFilterSyscallNumbers(t *testing.T) {
	a, ok := seccompArches[runtime.GOARCH]
	if !ok {
		t.Skipf("no socket filter for %s", runtime.GOARCH)
	}
	for _, c := range []struct {
		name      string
		got, want uint32
	}{
		{"socket", a.socket, unix.SYS_SOCKET},
		{"socketpair", a.socketpair, unix.SYS_SOCKETPAIR},
		{"io_uring_setup", a.ioUring[0], unix.SYS_IO_URING_SETUP},
		{"io_uring_enter", a.ioUring[1], unix.SYS_IO_URING_ENTER},
		{"io_uring_register", a.ioUring[2], unix.SYS_IO_URING_REGISTER},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
}

// onFilteredThread runs f on a launching thread as startConfined makes one
// (no_new_privs, the socket filter, no Landlock), which ends afterwards, so
// that no other thread of the test gets either (a goroutine that merely
// locked itself could land on the main thread, which never ends).
func onFilteredThread(t *testing.T, f func()) {
	t.Helper()
	fp, err := socketFilter()
	if err != nil {
		t.Skip(err)
	}
	c := &confinement{ruleset: -1, filter: fp}
	var tid int
	filterErr, err := startConfined(c, func() error { tid = unix.Gettid(); f(); return nil }, func() bool { return false })
	if filterErr != nil || err != nil {
		t.Fatalf("filter: %v; start: %v", filterErr, err)
	}
	// Let the thread end before the next test counts filtered threads.
	task := fmt.Sprintf("/proc/self/task/%d", tid)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			return
		}
	}
	t.Fatalf("filtered thread %d still there", tid)
}

// TestSocketFilterKernel installs the filter on a thread of its own and
// makes the system calls there: the kernel accepts the program and refuses
// what it should with EPERM; the test's other threads are not filtered.
func TestSocketFilterKernel(t *testing.T) {
	sys := func(nr, a1, a2, a3 uintptr) string {
		r, _, errno := unix.Syscall(nr, a1, a2, a3)
		if errno != 0 {
			return unix.ErrnoName(errno)
		}
		unix.Close(int(r))
		return "ok"
	}
	pair := func(domain int) string {
		fds, err := unix.Socketpair(domain, unix.SOCK_STREAM, 0)
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return unix.ErrnoName(errno)
		}
		if err != nil {
			return err.Error()
		}
		unix.Close(fds[0])
		unix.Close(fds[1])
		return "ok"
	}
	ioUringSetup := func() string {
		var params [120]byte // struct io_uring_params
		return sys(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0)
	}
	type check struct {
		name string
		op   func() string
		want string // filtered; unfiltered: as the test's own thread sees it
	}
	checks := []check{
		{"socket AF_UNIX", func() string { return sys(unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM, 0) }, "ok"},
		{"socket AF_UNIX, high bits", func() string { return sys(unix.SYS_SOCKET, 1<<32|unix.AF_UNIX, unix.SOCK_STREAM, 0) }, "ok"},
		{"socket AF_INET udp", func() string { return sys(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM, 0) }, "EPERM"},
		{"socket AF_INET udp, high bits", func() string { return sys(unix.SYS_SOCKET, 1<<32|unix.AF_INET, unix.SOCK_DGRAM, 0) }, "EPERM"},
		{"socket AF_INET6 tcp", func() string { return sys(unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_STREAM, 0) }, "EPERM"},
		{"socket AF_INET mptcp", func() string {
			return sys(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP)
		}, "EPERM"},
		{"socket AF_NETLINK", func() string { return sys(unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE) }, "EPERM"},
		{"socket AF_PACKET", func() string { return sys(unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_RAW, 0) }, "EPERM"},
		{"socketpair AF_UNIX", func() string { return pair(unix.AF_UNIX) }, "ok"},
		{"socketpair AF_INET", func() string { return pair(unix.AF_INET) }, "EPERM"},
		{"io_uring_setup", ioUringSetup, "EPERM"},
		{"io_uring_enter", func() string { return sys(unix.SYS_IO_URING_ENTER, 1<<20, 0, 0) }, "EPERM"},
		{"io_uring_register", func() string { return sys(unix.SYS_IO_URING_REGISTER, 1<<20, 0, 0) }, "EPERM"},
		{"open /dev/null", func() string {
			fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err.Error()
			}
			unix.Close(fd)
			return "ok"
		}, "ok"},
	}
	got := make([]string, len(checks))
	onFilteredThread(t, func() {
		if b, err := os.ReadFile("/proc/thread-self/status"); err == nil && !strings.Contains(string(b), "Seccomp:\t2") {
			got = nil
			return
		}
		for i, c := range checks {
			got[i] = c.op()
		}
	})
	if got == nil {
		t.Fatal("the filtered thread is not in seccomp filter mode")
	}
	for i, c := range checks {
		free := c.op() // on this, unfiltered, thread
		t.Logf("%s: %s (unfiltered: %s)", c.name, got[i], free)
		if got[i] != c.want {
			t.Errorf("%s: %s, want %s", c.name, got[i], c.want)
		}
		if c.want == "EPERM" && free == "EPERM" {
			t.Logf("%s: EPERM without the filter too: the check proves nothing here", c.name)
		}
	}
	if s := sys(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM, 0); s != "ok" {
		t.Errorf("the test's own thread creating a UDP socket after the filtered thread ended: %s", s)
	}
}

// x32HelperEnv makes TestSocketFilterX32 the helper it starts.
const x32HelperEnv = "VIGIL_PLUGINHOST_X32_HELPER"

// TestSocketFilterX32: on x86_64 an x32 system call from a filtered thread
// kills the process (SIGSYS), whether or not the kernel has the x32 ABI.
func TestSocketFilterX32(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("x32 is an x86_64 ABI")
	}
	if os.Getenv(x32HelperEnv) == "1" {
		onFilteredThread(t, func() {
			r, _, errno := unix.Syscall(x32Bit|unix.SYS_GETPID, 0, 0, 0)
			t.Logf("x32 getpid returned %d, %v", r, errno)
		})
		t.Fatal("still alive after an x32 system call")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestSocketFilterX32$", "-test.count=1")
	cmd.Env = append(os.Environ(), x32HelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
		t.Fatalf("helper ended with %v, want killed by SIGSYS:\n%s", err, out)
	}
	t.Logf("helper: %v", err)
}
