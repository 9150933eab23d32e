package pluginhost

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The socket filter: a seccomp-BPF program that the launching thread
// installs on itself right after landlock_restrict_self, and that the plugin
// inherits across fork and execve (see the comment at the top of
// sandbox.go). It closes what Landlock's network rights leave open (they
// cover IPPROTO_TCP sockets only): a confined plugin may create Unix sockets
// (go-plugin's gRPC socket) and nothing else, so no UDP, MPTCP, raw, packet
// or netlink socket, and it may not use io_uring, whose IORING_OP_SOCKET
// creates sockets without socket(2). Every other system call is allowed: the
// file system is Landlock's business.
//
// The filter is installed with prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER),
// which filters the calling thread only, never with seccomp(2): the agent's
// unit (SystemCallFilter=@system-service, ~@privileged @resources) allows
// prctl (group @process) but not seccomp(2), which is in none of
// @system-service's groups (systemd 252, `systemd-analyze syscall-filter`).
// The thread has no_new_privs already (Landlock needs it too), so no
// capability is needed.

// x32Bit marks a system call number of the x32 ABI, which the kernel accepts
// from x86_64 tasks with AUDIT_ARCH_X86_64 in seccomp_data.arch.
const x32Bit = 0x40000000

// Offsets in struct seccomp_data: int nr; __u32 arch; __u64
// instruction_pointer; __u64 args[6]. A filter loads 32-bit words in the
// CPU's byte order; both architectures below are little-endian, so the low
// half of args[0] is at offset 16.
const (
	offNr       = 0
	offArch     = 4
	offArg0Low  = 16
	seccompSize = 64 // sizeof(struct seccomp_data)
)

// Filter results: a refused socket or io_uring call fails with EPERM, as
// systemd's filter does (SystemCallErrorNumber=EPERM), so that code probing
// for IPv6 or MPTCP falls back or reports an error instead of dying; a system
// call of another ABI kills the process: nothing a plugin legitimately runs
// makes one.
const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
)

// seccompArch is what the filter needs to know of an architecture's system
// call ABI. The numbers are written out, not taken from unix.SYS_*, so that
// the program of every architecture can be built and tested on any
// (TestSocketFilterSyscallNumbers checks them against unix.SYS_* for the
// running one).
type seccompArch struct {
	audit      uint32    // AUDIT_ARCH_* (seccomp_data.arch)
	x32        bool      // refuse x32 system call numbers (nr & x32Bit)
	socket     uint32    // socket(2)
	socketpair uint32    // socketpair(2)
	ioUring    [3]uint32 // io_uring_setup, io_uring_enter, io_uring_register
}

// seccompArches are the architectures the host has a filter for, by
// runtime.GOARCH. On any other the plugin starts without the filter (warned
// about once, counted in Stats.Unfiltered).
var seccompArches = map[string]seccompArch{
	"amd64": {audit: unix.AUDIT_ARCH_X86_64, x32: true, socket: 41, socketpair: 53, ioUring: [3]uint32{425, 426, 427}},
	"arm64": {audit: unix.AUDIT_ARCH_AARCH64, socket: 198, socketpair: 199, ioUring: [3]uint32{425, 426, 427}},
}

// program returns the filter for a, assembled:
//
//	    ld  [arch]
//	    jeq #a.audit, 0, kill
//	    ld  [nr]
//	    jset #x32Bit, kill      (x86_64)
//	    jeq #socket, domain
//	    jeq #socketpair, domain
//	    jeq #io_uring_setup, eperm   (and _enter, _register)
//	    ret ALLOW
//	domain:
//	    ld  [args[0], low half]
//	    jeq #AF_UNIX, allow, eperm
//	allow: ret ALLOW
//	eperm: ret ERRNO|EPERM
//	kill:  ret KILL_PROCESS
//
// The domain is compared on the low 32 bits of args[0] only: the kernel
// takes socket(2)'s domain as an int, dropping the high half too.
func (a seccompArch) program() ([]bpf.RawInstruction, error) {
	var p asm
	p.ins(bpf.LoadAbsolute{Off: offArch, Size: 4})
	p.jump(bpf.JumpEqual, a.audit, "", "kill")
	p.ins(bpf.LoadAbsolute{Off: offNr, Size: 4})
	if a.x32 {
		p.jump(bpf.JumpBitsSet, x32Bit, "kill", "")
	}
	p.jump(bpf.JumpEqual, a.socket, "domain", "")
	p.jump(bpf.JumpEqual, a.socketpair, "domain", "")
	for _, nr := range a.ioUring {
		p.jump(bpf.JumpEqual, nr, "eperm", "")
	}
	p.ins(bpf.RetConstant{Val: retAllow})
	p.label("domain")
	p.ins(bpf.LoadAbsolute{Off: offArg0Low, Size: 4})
	p.jump(bpf.JumpEqual, unix.AF_UNIX, "allow", "eperm")
	p.label("allow")
	p.ins(bpf.RetConstant{Val: retAllow})
	p.label("eperm")
	p.ins(bpf.RetConstant{Val: retEPERM})
	p.label("kill")
	p.ins(bpf.RetConstant{Val: retKill})
	return p.assemble()
}

// asm collects a BPF program whose conditional jumps name labels (forward
// only, as in classic BPF); assemble resolves them.
type asm struct {
	prog   []bpf.Instruction
	labels map[string]int
	jumps  []asmJump
}

type asmJump struct {
	at      int    // index of the JumpIf in prog
	yes, no string // target labels; "" is the next instruction
}

func (p *asm) ins(i bpf.Instruction) { p.prog = append(p.prog, i) }

func (p *asm) label(name string) {
	if p.labels == nil {
		p.labels = map[string]int{}
	}
	p.labels[name] = len(p.prog)
}

func (p *asm) jump(cond bpf.JumpTest, val uint32, yes, no string) {
	p.jumps = append(p.jumps, asmJump{at: len(p.prog), yes: yes, no: no})
	p.ins(bpf.JumpIf{Cond: cond, Val: val})
}

func (p *asm) assemble() ([]bpf.RawInstruction, error) {
	skip := func(from int, label string) (uint8, error) {
		if label == "" {
			return 0, nil
		}
		to, ok := p.labels[label]
		if !ok {
			return 0, fmt.Errorf("seccomp filter: no label %q", label)
		}
		if d := to - from - 1; d >= 0 && d <= 255 {
			return uint8(d), nil
		}
		return 0, fmt.Errorf("seccomp filter: jump from %d to %q (%d) out of range", from, label, to)
	}
	for _, j := range p.jumps {
		ji := p.prog[j.at].(bpf.JumpIf)
		var err error
		if ji.SkipTrue, err = skip(j.at, j.yes); err != nil {
			return nil, err
		}
		if ji.SkipFalse, err = skip(j.at, j.no); err != nil {
			return nil, err
		}
		p.prog[j.at] = ji
	}
	raw, err := bpf.Assemble(p.prog)
	if err != nil {
		return nil, fmt.Errorf("assemble seccomp filter: %w", err)
	}
	return raw, nil
}

// buildSocketFilter returns the filter of architecture goarch (a
// runtime.GOARCH value) in the form prctl takes.
func buildSocketFilter(goarch string) (*unix.SockFprog, error) {
	a, ok := seccompArches[goarch]
	if !ok {
		return nil, fmt.Errorf("no seccomp socket filter for %s", goarch)
	}
	raw, err := a.program()
	if err != nil {
		return nil, err
	}
	f := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		f[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return &unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}, nil
}

// socketFilter is the running architecture's filter, built once (a variable
// for tests). It lives on the heap for ever: installFilter hands the kernel
// its address.
var socketFilter = sync.OnceValues(func() (*unix.SockFprog, error) {
	return buildSocketFilter(runtime.GOARCH)
})

// installFilter installs fp on the calling thread, which must have
// no_new_privs. It either installs the filter or changes nothing.
func installFilter(fp *unix.SockFprog) error {
	err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(fp)), 0, 0)
	runtime.KeepAlive(fp)
	if err != nil {
		return fmt.Errorf("prctl(PR_SET_SECCOMP): %w", err)
	}
	return nil
}

var warnUnfiltered sync.Once
