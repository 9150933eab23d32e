package pluginhost

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Plugin sandbox: every plugin process is confined with Landlock and a
// seccomp socket filter (DESIGN.md section 5: no privilege, no network, no
// access beyond its model files).
//
// How: Landlock and seccomp both restrict the calling thread, and a process
// forked by a restricted thread inherits its Landlock domain and its seccomp
// filters, kept across execve. The host therefore forks each plugin from a
// dedicated OS thread (startConfined): a goroutine locks itself to a new
// thread, sets no_new_privs on it, enforces the ruleset with
// landlock_restrict_self, installs the socket filter (seccomp.go) with
// prctl(PR_SET_SECCOMP), which filters that thread only, clears the thread's
// ambient capabilities and runs go-plugin's Client.Start, which forks and
// executes the plugin from that goroutine (cmdrunner.Start, exec.Cmd.Start)
// and then reads its handshake from pipes. The agent's other threads are
// never restricted (go-landlock's high-level API, which restricts every
// thread of the process, is not used, nor SECCOMP_FILTER_FLAG_TSYNC). The
// Go runtime never creates a thread by cloning a locked one (it asks its
// template thread instead), so no new thread inherits the restrictions. The
// restricted thread is never given back to the Go scheduler: its goroutine
// stays locked to it and returns, which ends the thread, only once the
// plugin process has exited, or at once when confining or starting fails. It
// cannot return earlier: the kernel sends a child its parent-death signal
// (Pdeathsig, SIGKILL) when the *thread* that forked it exits, not the
// process.
//
// That thread shares the plugin's Landlock domain, and Landlock lets a task
// signal, ptrace or open /proc/PID/mem of tasks of its own domain. Before the
// first confined launch the host therefore marks the agent process
// non-dumpable (PR_SET_DUMPABLE 0, as ssh-agent does): ptrace and
// /proc/TID/mem of any agent thread then need CAP_SYS_PTRACE, which a plugin
// does not have. (An agent holding capabilities, as under the shipped unit,
// is also protected by the rule that a tracer needs every permitted
// capability of its tracee; TestSandboxUnitUser checks both.) A plugin can
// still signal the launching thread (tgkill), which acts on the whole agent:
// it could kill the agent, as a plugin running as the agent's user could
// without the sandbox. Being non-dumpable also keeps a plugin from taking
// the agent's sockets with pidfd_getfd or driving its unfiltered threads
// with ptrace when Landlock is unavailable and only the filter applies.

// Sandbox describes the confinement of a plugin (Config.Sandbox): Landlock
// and the socket filter. The zero value confines.
//
// A confined plugin may read, and nothing else: its own binary (and execute
// it and its ELF interpreter: no other program), the system's libraries and
// loader (/usr, /lib, /lib64, /etc/ld.so.cache, /etc/localtime), /proc and
// /sys, /dev/null (also write), /dev/zero, /dev/random and /dev/urandom,
// the directory of $ONNXRUNTIME_LIB given in Config.Env (and of the file it
// links to), every -bundle argument's file (the agent's detector plugins take
// their start bundles that way), and ReadOnly. It may write only in a private
// directory the host creates for each plugin process (go-plugin's Unix socket;
// the plugin's TMPDIR), removed when the process ends. From Landlock ABI 4 on
// it may neither bind nor connect TCP sockets; from ABI 6 on it may not
// connect to abstract Unix sockets or signal processes outside its domain;
// from ABI 9 on, not connect to pathname Unix sockets either. Landlock's
// network rights cover IPPROTO_TCP sockets only; the socket filter
// (seccomp.go) closes the rest: the plugin may create Unix sockets and no
// other (socket(2) and socketpair(2) of any other family fail with EPERM:
// no UDP, MPTCP, raw, packet or netlink socket, nor TCP), nor use io_uring
// (EPERM). Neither restricts what the plugin reads through descriptors it
// inherits (the ring's memfd) or its uid (see procAttr).
//
// Without Landlock (a kernel before 5.13, Landlock not enabled at boot, or its
// system calls refused by a seccomp filter, such as systemd's
// SystemCallFilter=@system-service, which lacks them) the host logs a
// warning once and starts plugins with the socket filter only, counted in
// Stats.Unconfined. Without the filter (an architecture other than amd64 and
// arm64, or a kernel that refuses it) it logs a warning once and starts
// plugins with Landlock only, counted in Stats.Unfiltered.
type Sandbox struct {
	// Disable starts plugins unconfined (tests, debugging).
	Disable bool
	// ReadOnly are the files and directories (with everything beneath
	// them) the plugin may read besides the above: the directory where the
	// agent stages the bundles it hands the running plugin later
	// (LoadModel), for instance. Landlock rules name inodes, fixed when
	// the plugin starts: a path must exist then, and a file created later
	// is readable only beneath a directory given here. Relative paths are
	// taken from the agent's working directory; missing ones are skipped.
	ReadOnly []string
	// TempDir is where the host creates each plugin process's private
	// directory (default os.TempDir()).
	TempDir string
}

// Landlock access rights the sandbox grants (ABI 1 to 3 names, masked by the
// running kernel's ABI and, for a file, by fileAccess).
const (
	accRead    = unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR
	accExec    = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_READ_FILE
	accDevNull = unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE
	accPrivate = accRead | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE |
		unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK |
		unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR
	// fileAccess are the rights that apply to a file (a rule on a file
	// may grant no other).
	fileAccess = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
)

// systemPaths are what every plugin may read (if they exist): the dynamic
// loader and libraries (cgo plugins, ONNX Runtime's C++ runtime), the time
// zone, and what the Go runtime and ONNX Runtime read about the machine
// (cgroup limits, CPU topology).
var systemPaths = []pathRule{
	{Path: "/usr", Access: accRead},
	{Path: "/lib", Access: accRead},
	{Path: "/lib64", Access: accRead},
	{Path: "/etc/ld.so.cache", Access: accRead},
	{Path: "/etc/localtime", Access: accRead},
	{Path: "/proc", Access: accRead},
	{Path: "/sys", Access: accRead},
	{Path: "/dev/null", Access: accDevNull},
	{Path: "/dev/zero", Access: accRead},
	{Path: "/dev/random", Access: accRead},
	{Path: "/dev/urandom", Access: accRead},
}

// handledFS returns every filesystem access right Landlock ABI abi knows:
// the ruleset handles (denies unless a rule allows) all of them.
func handledFS(abi int) uint64 {
	if abi < 1 {
		return 0
	}
	r := uint64(unix.LANDLOCK_ACCESS_FS_MAKE_SYM<<1 - 1) // ABI 1: EXECUTE .. MAKE_SYM
	if abi >= 2 {
		r |= unix.LANDLOCK_ACCESS_FS_REFER
	}
	if abi >= 3 {
		r |= unix.LANDLOCK_ACCESS_FS_TRUNCATE
	}
	if abi >= 5 {
		r |= unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	}
	if abi >= 9 {
		// Connecting to pathname Unix sockets outside the domain.
		r |= unix.LANDLOCK_ACCESS_FS_RESOLVE_UNIX
	}
	return r
}

// handledNet: from ABI 4, TCP bind and connect, with no port allowed.
func handledNet(abi int) uint64 {
	if abi < 4 {
		return 0
	}
	return unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP
}

// scopes: from ABI 6, abstract Unix sockets and signals of other domains.
func scopes(abi int) uint64 {
	if abi < 6 {
		return 0
	}
	return unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
}

// restrictFlags: from ABI 7, the plugin's denied accesses (after its execve)
// go to the audit log (when auditing is on): a compromised plugin probing
// for the agent's key leaves a trace.
func restrictFlags(abi int) uintptr {
	if abi < 7 {
		return 0
	}
	return unix.LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON
}

// pathRule allows Access beneath Path (on Path itself for a file).
type pathRule struct {
	Path   string
	Access uint64
}

// policy is a plugin's Landlock ruleset before it is created.
type policy struct {
	ABI                           int
	HandledFS, HandledNet, Scoped uint64
	Rules                         []pathRule // existing paths, access masked by ABI and file type
	Skipped                       []string   // paths that do not exist
}

// policyInput is what a policy is built from (besides systemPaths).
type policyInput struct {
	Binary   string   // the plugin binary (executable)
	Interp   string   // its ELF interpreter ("" for a static binary)
	ReadOnly []string // files and directories readable beneath
	Private  string   // the private writable directory ("" for none)
}

// buildPolicy returns the policy of a plugin for Landlock ABI abi: every
// right of the ABI handled, the rules of in and systemPaths with their access
// masked by the ABI and, for files, to file rights. Paths are made absolute
// and resolved (a rule applies to the inode a symbolic link names); those that
// do not exist are skipped; the same path twice gets one rule with both
// accesses.
func buildPolicy(abi int, in policyInput) *policy {
	p := &policy{ABI: abi, HandledFS: handledFS(abi), HandledNet: handledNet(abi), Scoped: scopes(abi)}
	rules := slices.Clone(systemPaths)
	rules = append(rules, pathRule{Path: in.Binary, Access: accExec})
	if in.Interp != "" {
		rules = append(rules, pathRule{Path: in.Interp, Access: accExec})
	}
	for _, r := range in.ReadOnly {
		rules = append(rules, pathRule{Path: r, Access: accRead})
	}
	if in.Private != "" {
		rules = append(rules, pathRule{Path: in.Private, Access: accPrivate})
	}
	at := map[string]int{}
	for _, r := range rules {
		if r.Path == "" {
			continue
		}
		path, err := filepath.Abs(r.Path)
		if err == nil {
			// The rule lands on the inode a symbolic link names.
			path, err = filepath.EvalSymlinks(path)
		}
		var st os.FileInfo
		if err == nil {
			st, err = os.Stat(path)
		}
		if err != nil {
			p.Skipped = append(p.Skipped, r.Path)
			continue
		}
		acc := r.Access & p.HandledFS
		if !st.IsDir() {
			acc &= fileAccess
		}
		if acc == 0 {
			continue
		}
		if i, ok := at[path]; ok {
			p.Rules[i].Access |= acc
			continue
		}
		at[path] = len(p.Rules)
		p.Rules = append(p.Rules, pathRule{Path: path, Access: acc})
	}
	return p
}

// rulesetAttrSize is the size of struct landlock_ruleset_attr up to scoped
// (ABI 6); the fields of later ABIs (unix.LandlockRulesetAttr has them) are
// not passed. An older kernel accepts the larger struct as long as the fields
// it does not know are zero, which the ABI masks ensure.
const rulesetAttrSize = unsafe.Offsetof(unix.LandlockRulesetAttr{}.Scoped) + 8

// create creates the ruleset and returns its descriptor (close-on-exec). It
// restricts nothing yet.
func (p *policy) create() (fd int, err error) {
	attr := unix.LandlockRulesetAttr{Handled_access_fs: p.HandledFS, Handled_access_net: p.HandledNet, Scoped: p.Scoped}
	r, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), rulesetAttrSize, 0)
	if errno != 0 {
		return -1, fmt.Errorf("landlock_create_ruleset: %w", errno)
	}
	fd = int(r)
	for _, rule := range p.Rules {
		if err := addPathRule(fd, rule); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

func addPathRule(fd int, r pathRule) error {
	pfd, err := unix.Open(r.Path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sandbox rule for %s: %w", r.Path, err)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return fmt.Errorf("sandbox rule for %s: %w", r.Path, err)
	}
	acc := r.Access
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		acc &= fileAccess // the path became a file since buildPolicy
	}
	if acc == 0 {
		return nil
	}
	attr := unix.LandlockPathBeneathAttr{Allowed_access: acc, Parent_fd: int32(pfd)}
	_, _, errno := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(fd), unix.LANDLOCK_RULE_PATH_BENEATH,
		uintptr(unsafe.Pointer(&attr)), 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("landlock_add_rule %s (access %#x): %w", r.Path, acc, errno)
	}
	return nil
}

// landlockABI returns the running kernel's Landlock ABI version, or an error
// when Landlock cannot be used: ENOSYS (a kernel before 5.13), EOPNOTSUPP
// (Landlock not enabled at boot), EPERM (the system call refused by a seccomp
// filter).
var landlockABI = sync.OnceValues(func() (int, error) {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0, fmt.Errorf("landlock_create_ruleset(LANDLOCK_CREATE_RULESET_VERSION): %w", errno)
	}
	if int(v) < 1 {
		return 0, fmt.Errorf("landlock ABI %d", int(v))
	}
	return int(v), nil
})

// unavailableHint explains a Landlock probe error.
func unavailableHint(err error) string {
	switch {
	case errors.Is(err, unix.ENOSYS):
		return "the kernel has no Landlock (Linux 5.13 or later needed)"
	case errors.Is(err, unix.EOPNOTSUPP):
		return "Landlock is not enabled in this kernel (boot parameter lsm=...,landlock)"
	case errors.Is(err, unix.EPERM):
		return "a seccomp filter refuses the Landlock system calls (systemd: add SystemCallFilter=landlock_create_ruleset landlock_add_rule landlock_restrict_self)"
	default:
		return "Landlock probe failed"
	}
}

var warnUnconfined sync.Once

// noDumpOnce makes the agent non-dumpable before the first confined launch
// (see the comment at the top of this file).
var noDumpOnce = sync.OnceValue(func() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
})

// elfInterp returns the ELF interpreter (PT_INTERP) of the binary at path, ""
// for a static binary or one that is not ELF.
func elfInterp(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, min(p.Filesz, 4096))
		if n, _ := p.ReadAt(b, 0); n != len(b) {
			return ""
		}
		return string(bytes.TrimRight(b, "\x00"))
	}
	return ""
}

// bundleArgs returns the values of the -bundle (or --bundle) arguments in
// args.
func bundleArgs(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "bundle" {
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				break
			}
			i++
			val = args[i]
		}
		if val != "" {
			out = append(out, val)
		}
	}
	return out
}

// ortDirs returns the directories of $ONNXRUNTIME_LIB in env: the one it
// names and, when it is a symbolic link, the one of the file it links to.
func ortDirs(env []string) []string {
	var lib string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "ONNXRUNTIME_LIB="); ok {
			lib = v // the last one wins, as in exec.Cmd
		}
	}
	if lib == "" {
		return nil
	}
	dirs := []string{filepath.Dir(lib)}
	if r, err := filepath.EvalSymlinks(lib); err == nil && filepath.Dir(r) != dirs[0] {
		dirs = append(dirs, filepath.Dir(r))
	}
	return dirs
}

// holdPoll is how often a confined launching thread checks whether its
// plugin has exited.
const holdPoll = 250 * time.Millisecond

// startConfined runs start, which forks the plugin, on a new OS thread that it
// first confines as c says: no_new_privs, the Landlock ruleset
// (landlock_restrict_self with c.flags; skipped when c.ruleset < 0), the
// seccomp socket filter (c.filter; skipped when nil), and no ambient
// capabilities. It returns start's error and, apart, why the filter could
// not be installed (the plugin then started without it: the kernel installs
// a filter whole or not at all). The thread is never given back to the
// scheduler, whatever fails: after a successful start it waits until running
// reports false (the plugin has exited), then ends with its goroutine. The
// agent's other threads are neither restricted nor filtered; goroutines that
// start creates run on them.
func startConfined(c *confinement, start func() error, running func() bool) (filterErr, err error) {
	res := make(chan launchResult, 1)
	go confinedThread(c, start, running, res)
	r := <-res
	return r.filterErr, r.err
}

type launchResult struct{ filterErr, err error }

func confinedThread(c *confinement, start func() error, running func() bool, res chan<- launchResult) {
	runtime.LockOSThread()
	// Never unlocked: the thread ends when this goroutine returns, also
	// on every error below (after a partial confinement).
	if unix.Gettid() == unix.Getpid() {
		// The main thread cannot end (the runtime parks it for ever
		// instead) and stands for the whole process in kill(2) and
		// /proc/PID: never confine it. Start over on another thread,
		// which cannot be this one while it is locked here, then give
		// this one back untouched.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			confinedThread(c, start, running, res)
		}()
		<-locked
		runtime.UnlockOSThread()
		return
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		res <- launchResult{err: fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)}
		return
	}
	if c.ruleset >= 0 {
		if _, _, errno := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(c.ruleset), c.flags, 0); errno != 0 {
			res <- launchResult{err: fmt.Errorf("landlock_restrict_self: %w", errno)}
			return
		}
	}
	var filterErr error
	if c.filter != nil {
		filterErr = installFilter(c.filter)
	}
	if err := clearAmbientCaps(); err != nil {
		res <- launchResult{filterErr: filterErr, err: err}
		return
	}
	err := start()
	res <- launchResult{filterErr: filterErr, err: err}
	if err != nil {
		return
	}
	// The plugin's Pdeathsig fires when this thread ends: wait for the
	// plugin to exit first.
	for running() {
		time.Sleep(holdPoll)
	}
}
