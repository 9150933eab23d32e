package pluginhost_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/sdktest"
)

// probeEnv makes the test binary a detector plugin, the probe (TestMain),
// for the sandbox tests. It exists only in this test binary: no production
// plugin carries the probe.
const probeEnv = "VIGIL_PLUGINHOST_PROBE_PLUGIN"

// serveProbe runs the probe plugin when the test binary was started as one.
func serveProbe() bool {
	if os.Getenv(probeEnv) != "1" {
		return false
	}
	sdk.Serve(func(*slog.Logger) sdk.Detector { return probe{} })
	return true
}

// probe is a detector whose LoadModel runs the probe its "bundle path"
// names (runProbe) and returns the outcome as the model name; it scores
// every packet 0.
type probe struct{}

func (probe) Info() sdk.Info {
	return sdk.Info{Name: "probe", Version: "1", EventKind: sdk.EventPacket, FeatureSets: []string{"probe/v1"}, Dim: 1}
}

func (probe) LoadModel(_ context.Context, op string) (sdk.ModelInfo, error) {
	if m, ok := strings.CutPrefix(op, "model:"); ok { // "model:SET=NAME": a model of feature set SET
		set, name, _ := strings.Cut(m, "=")
		probeModels.Store(sdk.FeatureFamily(set), name)
		return sdk.ModelInfo{Name: name, FeatureSet: set}, nil
	}
	return sdk.ModelInfo{Name: runProbe(op)}, nil
}

// probeModels are the probe's "model:" loads, name by feature-set family (Health's message).
var probeModels sync.Map

func (probe) ScorePackets(_ context.Context, pkts []event.Packet) (sdk.Result, error) {
	if probeHang.Load() {
		select {} // hung (review25_test.go)
	}
	return sdk.Result{Scores: make([]float32, len(pkts))}, nil
}

func (probe) Health(context.Context) sdk.Health {
	if probeHangHealth.Load() {
		select {} // hung (review27_test.go)
	}
	var ms []string
	probeModels.Range(func(k, v any) bool {
		ms = append(ms, k.(string)+"="+v.(string))
		return true
	})
	slices.Sort(ms)
	return sdk.Health{OK: true, Message: strings.TrimSpace("probe " + strings.Join(ms, " "))}
}

// runProbe tries what op says, from inside the plugin, and returns "ok" or
// the errno's name (or the error's text):
//
//	read:PATH  write:PATH  tmpwrite (create and remove a file in $TMPDIR)
//	exec:PATH  tcp:ADDR (connect)  listen:ADDR (TCP)
//	mptcp:ADDR (connect with MPTCP)  mptcp-listen:ADDR  tgkill:PID (signal 0
//	to each thread: "ok:TID" for the first that accepts)
//	udp:ADDR (send a datagram)  packet (create an AF_PACKET socket)
//	netlink (create an AF_NETLINK route socket)  unixpair (socketpair
//	AF_UNIX)  io_uring (io_uring_setup)
//	abstract:NAME (connect)  kill:PID (signal 0)
//	mem:PID (open /proc/PID/task/TID/mem of every thread: "ok:TID" for the
//	first that opens)  status (the plugin's capability sets and no_new_privs:
//	"CapPrm:... CapEff:... CapAmb:... NoNewPrivs:1")  readlink:PATH (the
//	target)
func runProbe(op string) string {
	kind, arg, _ := strings.Cut(op, ":")
	var err error
	switch kind {
	case "read":
		_, err = os.ReadFile(arg)
	case "write":
		err = os.WriteFile(arg, []byte("x"), 0o600)
	case "tmpwrite":
		var f *os.File
		if f, err = os.CreateTemp("", "probe-"); err == nil {
			f.Close()
			err = os.Remove(f.Name())
		}
	case "exec":
		err = exec.Command(arg).Run()
	case "tcp":
		var c net.Conn
		if c, err = net.DialTimeout("tcp", arg, 5*time.Second); err == nil {
			c.Close()
		}
	case "listen", "mptcp-listen":
		// Go listens with MPTCP by default where the kernel has it;
		// "listen" asks for plain TCP.
		var lc net.ListenConfig
		lc.SetMultipathTCP(kind == "mptcp-listen")
		var l net.Listener
		if l, err = lc.Listen(context.Background(), "tcp", arg); err == nil {
			l.Close()
		}
	case "mptcp":
		d := net.Dialer{Timeout: 5 * time.Second}
		d.SetMultipathTCP(true)
		var c net.Conn
		if c, err = d.Dial("tcp", arg); err == nil {
			c.Close()
		}
	case "udp":
		var c net.Conn
		if c, err = net.Dial("udp", arg); err == nil {
			_, err = c.Write([]byte("probe"))
			c.Close()
		}
	case "packet", "netlink":
		domain, typ, proto := unix.AF_PACKET, unix.SOCK_RAW, 0
		if kind == "netlink" {
			domain, proto = unix.AF_NETLINK, unix.NETLINK_ROUTE
		}
		var fd int
		if fd, err = unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto); err == nil {
			unix.Close(fd)
		}
	case "unixpair":
		var fds [2]int
		if fds, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err == nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
		}
	case "io_uring":
		var params [120]byte // struct io_uring_params
		fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0)
		if errno != 0 {
			err = errno
		} else {
			unix.Close(int(fd))
		}
	case "abstract":
		var c net.Conn
		if c, err = net.Dial("unix", "@"+arg); err == nil {
			c.Close()
		}
	case "kill":
		var pid int
		if pid, err = strconv.Atoi(arg); err == nil {
			err = syscall.Kill(pid, 0)
		}
	case "hang-score": // every later ScorePackets hangs (review25_test.go)
		probeHang.Store(true)
	case "hang-load": // this LoadModel never returns (review27_test.go)
		select {}
	case "hang-health": // every later Health hangs (review27_test.go)
		probeHangHealth.Store(true)
	case "readlink": // the link's target (review27_test.go)
		var target string
		if target, err = os.Readlink(arg); err == nil {
			return target
		}
	case "flood": // arg lines written to stderr at once (review27_test.go)
		var n int
		if n, err = strconv.Atoi(arg); err == nil {
			line := []byte(strings.Repeat("x", 100) + "\n")
			for range n { // fd 2: go-plugin's Serve replaced os.Stderr
				if _, err = unix.Write(2, line); err != nil {
					break
				}
			}
		}
	case "status":
		b, rerr := os.ReadFile("/proc/self/status")
		if rerr != nil {
			err = rerr
			break
		}
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			// CapInh and CapBnd left out: the answer is a model name
			// (sdk.MaxModelText).
			if f := strings.Fields(l); len(f) == 2 && (f[0] == "CapPrm:" || f[0] == "CapEff:" || f[0] == "CapAmb:" || f[0] == "NoNewPrivs:") {
				out = append(out, f[0]+f[1])
			}
		}
		return strings.Join(out, " ")
	case "tgkill":
		// Signal 0 to each thread of process arg: "ok:TID" for the first
		// that accepts.
		var tids []os.DirEntry
		var pid int
		if pid, err = strconv.Atoi(arg); err == nil {
			tids, err = os.ReadDir("/proc/" + arg + "/task")
		}
		if err == nil {
			err = errors.New("no thread")
			for _, d := range tids {
				tid, _ := strconv.Atoi(d.Name())
				if err = unix.Tgkill(pid, tid, 0); err == nil {
					return "ok:" + d.Name()
				}
			}
		}
	case "mem":
		var tids []os.DirEntry
		if tids, err = os.ReadDir("/proc/" + arg + "/task"); err == nil {
			err = errors.New("no thread")
			for _, d := range tids {
				f, ferr := os.Open("/proc/" + arg + "/task/" + d.Name() + "/mem")
				if ferr == nil {
					f.Close()
					return "ok:" + d.Name()
				}
				err = ferr
			}
		}
	default:
		return "unknown probe " + op
	}
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// needLandlock returns the Landlock ABI version; it skips the test on a kernel without Landlock.
func needLandlock(t *testing.T) int {
	t.Helper()
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		t.Skipf("no Landlock here: %v", errno)
	}
	return int(v)
}

// probeHost starts the probe plugin (this test binary) as the agent's own
// user (KeepPrivileges: as root it would otherwise run as nobody, which
// could not read the test's files anyway, proving nothing about the
// sandbox), with the sandbox as sb.
func probeHost(t *testing.T, sb pluginhost.Sandbox) *pluginhost.Host {
	t.Helper()
	return probeHostLog(t, sb, testLogger(t))
}

func probeHostLog(t *testing.T, sb pluginhost.Sandbox, log *slog.Logger) *pluginhost.Host {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h, err := pluginhost.New(pluginhost.Config{Path: self, Env: []string{probeEnv + "=1"}, KeepPrivileges: true,
		Sandbox: sb, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_ = h.Close(cctx)
	})
	return h
}

func probeIn(t *testing.T, h *pluginhost.Host, op string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := h.LoadModel(ctx, op)
	if err != nil {
		t.Fatalf("probe %s: %v", op, err)
	}
	return m.Name
}

// threadsWithNoNewPrivs returns the ids of this process's threads that have
// no_new_privs set (the thread that launched a confined plugin).
func threadsWithNoNewPrivs(t *testing.T) []string {
	t.Helper()
	return threadsWith(t, "NoNewPrivs:", "1")
}

// threadsWithSeccomp returns the ids of this process's threads in seccomp
// filter mode (the thread that launched a confined plugin).
func threadsWithSeccomp(t *testing.T) []string {
	t.Helper()
	return threadsWith(t, "Seccomp:", "2")
}

// processHas reports whether this process's main thread has field (with
// its colon) set to value in its status: the whole process has it, as
// under a systemd unit with NoNewPrivileges= or SystemCallFilter=.
func processHas(t *testing.T, field, value string) bool {
	t.Helper()
	return slices.Contains(threadsWith(t, field, value), strconv.Itoa(os.Getpid()))
}

// threadsWith returns the ids of this process's threads whose status has
// field (with its colon) set to value.
func threadsWith(t *testing.T, field, value string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/status")
		if err != nil {
			continue // the thread ended meanwhile
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == field && f[1] == value {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

// TestSandbox starts the probe plugin (this test binary) unconfined, then
// confined, and checks from inside it that the sandbox allows what a plugin
// needs (the handshake, scoring, an allowed file, its private directory)
// and denies the rest (a file outside the allowed paths, executing a
// program, writing outside its directory, signals and abstract Unix sockets
// of the agent: Landlock; TCP, UDP, MPTCP, packet and netlink sockets and
// io_uring: the seccomp socket filter, with EPERM); the unconfined run shows
// that each denial is the sandbox's. Without a filter for the architecture,
// TCP is Landlock's (EACCES) and UDP and MPTCP stay open.
// It also checks that the agent itself stays unrestricted: every other
// thread still reads the file the plugin may not and creates UDP sockets,
// only the one thread that launched the plugin is filtered, and it ends
// when the plugin has exited.
func TestSandbox(t *testing.T) {
	abi := needLandlock(t)
	t.Logf("Landlock ABI %d", abi)
	secretDir, allowedDir := t.TempDir(), t.TempDir()
	secret := filepath.Join(secretDir, "agent.key")
	allowed := filepath.Join(allowedDir, "model.vgb")
	for _, f := range []string{secret, allowed} {
		if err := os.WriteFile(f, []byte("not for plugins"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var plain net.ListenConfig // a plain TCP server (Go listens with MPTCP by default)
	plain.SetMultipathTCP(false)
	tcp, err := plain.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	go acceptAll(tcp)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	abstractName := fmt.Sprintf("vigil-sandbox-test-%d", os.Getpid())
	abstract, err := net.Listen("unix", "@"+abstractName)
	if err != nil {
		t.Fatal(err)
	}
	defer abstract.Close()
	go acceptAll(abstract)
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(os.Getpid())

	type check struct {
		op             string
		free, confined string // expected outcome unconfined, confined
	}
	checks := []check{
		{"read:" + allowed, "ok", "ok"},
		{"read:" + secret, "ok", "EACCES"},
		{"write:" + filepath.Join(secretDir, "dropped"), "ok", "EACCES"},
		{"tmpwrite", "ok", "ok"}, // the private directory
		{"exec:" + truePath, "ok", "EACCES"},
		{"unixpair", "ok", "ok"},
	}
	filtered := pluginhost.SocketFilterSupported()
	if filtered {
		// The filter refuses every socket but Unix sockets, before
		// Landlock sees a connect or bind. AF_PACKET and io_uring may
		// be refused without it too (no CAP_NET_RAW, io_uring
		// disabled): the unconfined outcome is this process's.
		checks = append(checks,
			check{"udp:" + udp.LocalAddr().String(), "ok", "EPERM"},
			check{"tcp:" + tcp.Addr().String(), "ok", "EPERM"},
			check{"listen:127.0.0.1:0", "ok", "EPERM"},
			check{"mptcp:" + tcp.Addr().String(), "ok", "EPERM"},
			check{"mptcp-listen:127.0.0.1:0", "ok", "EPERM"},
			check{"netlink", "ok", "EPERM"},
			check{"packet", runProbe("packet"), "EPERM"},
			check{"io_uring", runProbe("io_uring"), "EPERM"})
	} else {
		t.Logf("no socket filter for %s: Landlock only", runtime.GOARCH)
		checks = append(checks, check{"udp:" + udp.LocalAddr().String(), "ok", "ok"}) // Landlock does not cover UDP
		if abi >= 4 {
			checks = append(checks,
				check{"tcp:" + tcp.Addr().String(), "ok", "EACCES"},
				check{"listen:127.0.0.1:0", "ok", "EACCES"},
				// Landlock's TCP rights cover IPPROTO_TCP sockets
				// only: MPTCP (which falls back to plain TCP with
				// any peer) is not restricted.
				check{"mptcp:" + tcp.Addr().String(), "ok", "ok"},
				check{"mptcp-listen:127.0.0.1:0", "ok", "ok"})
		}
	}
	if abi >= 6 {
		checks = append(checks,
			check{"kill:" + pid, "ok", "EPERM"},
			check{"abstract:" + abstractName, "ok", "EPERM"})
	}
	// A process with no_new_privs or a seccomp filter as a whole (its
	// main thread has it) leaves no launching thread to tell apart.
	// Launching threads of earlier tests may still be ending: wait.
	nnpWide, seccompWide := processHas(t, "NoNewPrivs:", "1"), processHas(t, "Seccomp:", "2")
	waitFor(t, "earlier launching threads to end", 10*time.Second, func() bool {
		return (nnpWide || len(threadsWithNoNewPrivs(t)) == 0) && (seccompWide || len(threadsWithSeccomp(t)) == 0)
	})

	for _, confined := range []bool{false, true} {
		name := map[bool]string{false: "unconfined", true: "confined"}[confined]
		t.Run(name, func(t *testing.T) {
			h := probeHost(t, pluginhost.Sandbox{Disable: !confined, ReadOnly: []string{allowedDir}})
			// The handshake worked; the plugin scores (an echo of the
			// batch size) and survives its launching thread's wait (a
			// plugin whose launching thread ended would get its
			// Pdeathsig).
			time.Sleep(600 * time.Millisecond)
			res, err := h.Score(t.Context(), sdktest.SynthPackets(100))
			if err != nil || res.Stats.Count != 100 {
				t.Fatalf("Score = %+v, %v", res.Stats, err)
			}
			if got := h.Info().Name; got != "probe" {
				t.Fatalf("Info name %q", got)
			}
			for _, c := range checks {
				want := c.free
				if confined {
					want = c.confined
				}
				got := probeIn(t, h, c.op)
				t.Logf("%s: %s", c.op, got)
				if got != want {
					t.Errorf("%s: %s, want %s", c.op, got, want)
				}
			}
			if st := h.Stats(); st.Unconfined != 0 || st.Unfiltered != 0 {
				t.Errorf("Stats.Unconfined = %d, Unfiltered = %d", st.Unconfined, st.Unfiltered)
			}
			if !confined {
				return
			}
			// What Landlock leaves open towards the launching thread,
			// which shares the plugin's domain (documented): signals.
			// (Memory: TestSandboxUnitUser.)
			t.Logf("signal 0 to the agent's threads: %s; their memory (a plugin with root's capabilities): %s; launching thread %v",
				probeIn(t, h, "tgkill:"+pid), probeIn(t, h, "mem:"+pid), threadsWithNoNewPrivs(t))

			// The agent is not restricted: many threads read the file
			// the plugin may not, and connect and send where it may
			// not.
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					runtime.LockOSThread() // a thread of its own, new or reused
					defer runtime.UnlockOSThread()
					if _, err := os.ReadFile(secret); err != nil {
						errs <- err
						return
					}
					c, err := net.DialTimeout("tcp", tcp.Addr().String(), 5*time.Second)
					if err != nil {
						errs <- err
						return
					}
					c.Close()
					u, err := net.Dial("udp", udp.LocalAddr().String())
					if err != nil {
						errs <- err
						return
					}
					defer u.Close()
					if _, err := u.Write([]byte("agent")); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("agent thread restricted: %v", err)
			}
			if nnpWide {
				return // the whole process has no_new_privs: nothing to tell apart
			}
			launchers := threadsWithNoNewPrivs(t)
			if len(launchers) != 1 {
				t.Errorf("threads with no_new_privs while the plugin runs: %v, want the launching thread only", launchers)
			}
			if filtered && !seccompWide {
				if got := threadsWithSeccomp(t); !slices.Equal(got, launchers) {
					t.Errorf("threads with a seccomp filter while the plugin runs: %v, want the launching thread %v only", got, launchers)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := h.Close(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the launching thread to end", 10*time.Second, func() bool {
				return len(threadsWithNoNewPrivs(t)) == 0 && (seccompWide || len(threadsWithSeccomp(t)) == 0)
			})
		})
	}
}

func acceptAll(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// unitHelperEnv makes TestSandboxUnitUser the helper it starts as another
// user (when the test runs as root); dumpableEnv makes that helper undo the
// host's PR_SET_DUMPABLE after the plugin started; memOpenEnv=1 tells it
// that the plugin should then be able to open the agent's memory.
const (
	unitHelperEnv = "VIGIL_PLUGINHOST_UNIT_HELPER"
	dumpableEnv   = "VIGIL_PLUGINHOST_DUMPABLE"
	memOpenEnv    = "VIGIL_PLUGINHOST_MEM_OPEN"
)

// TestSandboxUnitUser runs a confined plugin from an agent that runs as a
// non-root user, the plugin as the same user: with the ambient capabilities
// the shipped unit gives (CAP_NET_RAW, CAP_NET_ADMIN) and without any. The
// plugin has no capability and no_new_privs, and cannot open /proc/.../mem
// of any agent thread, not even of the thread that launched it, which
// shares its Landlock domain (Landlock does not stop a task from ptracing
// its own domain). Two things stop it: the agent is non-dumpable (the host
// makes it so), and a tracer needs every permitted capability of its
// tracee (an agent holding capabilities is safe even dumpable). An agent
// without capabilities made dumpable again shows the check can fail. As
// root, the test runs itself as that user; otherwise, as the current one.
func TestSandboxUnitUser(t *testing.T) {
	needLandlock(t)
	if os.Geteuid() == 0 {
		if os.Getenv(unitHelperEnv) != "" {
			t.Fatal("helper still root")
		}
		bin := pluginhost.HelperBinary(t)
		unitCaps := []uintptr{unix.CAP_NET_RAW, unix.CAP_NET_ADMIN}
		for _, tc := range []struct {
			caps     []uintptr
			dumpable bool
			memOpen  bool
		}{
			{unitCaps, false, false},
			{unitCaps, true, false},
			{nil, false, false},
			{nil, true, true},
		} {
			cmd := exec.Command(bin, "-test.run=^TestSandboxUnitUser$", "-test.count=1", "-test.v")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), unitHelperEnv + "=1"}
			if tc.dumpable {
				cmd.Env = append(cmd.Env, dumpableEnv+"=1")
			}
			if tc.memOpen {
				cmd.Env = append(cmd.Env, memOpenEnv+"=1")
			}
			cmd.Dir = "/"
			const id = 65532 // a non-root user other than nobody
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL,
				Credential:  &syscall.Credential{Uid: id, Gid: id, Groups: []uint32{}},
				AmbientCaps: tc.caps}
			out, err := cmd.CombinedOutput()
			if err != nil && strings.HasPrefix(err.Error(), "fork/exec") {
				t.Skipf("cannot start a helper with ambient capabilities here: %v", err)
			}
			t.Logf("helper as uid %d, ambient capabilities %v, dumpable %v:\n%s", id, tc.caps, tc.dumpable, out)
			if err != nil {
				t.Errorf("helper (capabilities %v, dumpable %v): %v", tc.caps, tc.dumpable, err)
			}
		}
		return
	}
	h := probeHost(t, pluginhost.Sandbox{})
	st := probeIn(t, h, "status")
	t.Logf("plugin: %s", st)
	for _, want := range []string{"CapPrm:0000000000000000", "CapEff:0000000000000000", "CapAmb:0000000000000000", "NoNewPrivs:1"} {
		if !strings.Contains(st, want) {
			t.Errorf("plugin status %q lacks %s", st, want)
		}
	}
	if os.Getenv(dumpableEnv) == "1" {
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	got := probeIn(t, h, "mem:"+strconv.Itoa(os.Getpid()))
	t.Logf("plugin opening /proc/%d/task/*/mem: %s (launching thread: %v)", os.Getpid(), got, threadsWithNoNewPrivs(t))
	if open, want := strings.HasPrefix(got, "ok"), os.Getenv(memOpenEnv) == "1"; open != want {
		t.Fatalf("the confined plugin opening the agent's memory: %s, want open=%v", got, want)
	}
}

// TestSandboxUnavailable: without Landlock (here: its system calls refused
// with EPERM, as a seccomp filter such as systemd's @system-service does)
// plugins start with the socket filter only, each launch is counted, and the
// agent warns once.
func TestSandboxUnavailable(t *testing.T) {
	defer pluginhost.SetLandlockProbe(func() (int, error) { return 0, unix.EPERM })()
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	secret, udp := secretAndUDP(t)
	wantUDP := "ok"
	if pluginhost.SocketFilterSupported() {
		wantUDP = "EPERM"
	}
	for range 2 {
		h := probeHostLog(t, pluginhost.Sandbox{}, log)
		if got := probeIn(t, h, "read:"+secret); got != "ok" {
			t.Errorf("unconfined plugin reading %s: %s", secret, got)
		}
		if got := probeIn(t, h, "udp:"+udp.LocalAddr().String()); got != wantUDP {
			t.Errorf("plugin without Landlock sending UDP: %s, want %s", got, wantUDP)
		}
		if st := h.Stats(); st.Unconfined != 1 || st.Unfiltered != 0 || st.Starts != 1 {
			t.Errorf("stats %+v, want one unconfined start, filtered", st)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "Landlock is unavailable"); n != 1 || !strings.Contains(logs.String(), "SystemCallFilter=") {
		t.Errorf("%d warnings, want 1 naming the system call filter:\n%s", n, logs.String())
	}
}

// TestSandboxUnfiltered: without the socket filter (no filter for the
// architecture, or the kernel refuses it: here an empty program, EINVAL)
// plugins start confined by Landlock alone, each launch is counted, the
// agent warns once, and no thread keeps a filter.
func TestSandboxUnfiltered(t *testing.T) {
	abi := needLandlock(t)
	if processHas(t, "Seccomp:", "2") {
		t.Skip("the whole process is filtered already")
	}
	waitFor(t, "earlier launching threads to end", 10*time.Second, func() bool { return len(threadsWithSeccomp(t)) == 0 })
	secret, udp := secretAndUDP(t)
	for _, tc := range []struct {
		name   string
		filter func() (*unix.SockFprog, error)
		reason string // in the warning
	}{
		{"no filter for the architecture", func() (*unix.SockFprog, error) {
			return nil, errors.New("no seccomp socket filter for testarch")
		}, "testarch"},
		{"refused by the kernel", func() (*unix.SockFprog, error) { return &unix.SockFprog{}, nil }, "PR_SET_SECCOMP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer pluginhost.SetSocketFilter(tc.filter)()
			var logs bytes.Buffer
			var mu sync.Mutex
			log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelWarn}))
			for range 2 {
				h := probeHostLog(t, pluginhost.Sandbox{}, log)
				res, err := h.Score(t.Context(), sdktest.SynthPackets(10))
				if err != nil || res.Stats.Count != 10 {
					t.Fatalf("Score = %+v, %v", res.Stats, err)
				}
				if got := probeIn(t, h, "read:"+secret); got != "EACCES" {
					t.Errorf("plugin reading %s: %s, want EACCES (Landlock)", secret, got)
				}
				if got := probeIn(t, h, "udp:"+udp.LocalAddr().String()); got != "ok" {
					t.Errorf("unfiltered plugin sending UDP: %s, want ok", got)
				}
				if abi >= 4 {
					if got := probeIn(t, h, "listen:127.0.0.1:0"); got != "EACCES" {
						t.Errorf("unfiltered plugin listening on TCP: %s, want EACCES (Landlock)", got)
					}
				}
				if st := h.Stats(); st.Unfiltered != 1 || st.Unconfined != 0 || st.Starts != 1 {
					t.Errorf("stats %+v, want one unfiltered start, confined", st)
				}
				if got := threadsWithSeccomp(t); len(got) != 0 {
					t.Errorf("threads with a seccomp filter: %v, want none", got)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			t.Logf("warnings:\n%s", logs.String())
			if n := strings.Count(logs.String(), "seccomp socket filter is unavailable"); n != 1 || !strings.Contains(logs.String(), tc.reason) {
				t.Errorf("%d warnings, want 1 naming %q:\n%s", n, tc.reason, logs.String())
			}
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// secretAndUDP writes a secret file the plugins must not read and opens a
// UDP socket on loopback they must not reach (closed at the test's end).
func secretAndUDP(t *testing.T) (secret string, udp net.PacketConn) {
	t.Helper()
	secret = filepath.Join(t.TempDir(), "agent.key")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = udp.Close() })
	return secret, udp
}
