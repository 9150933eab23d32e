package pluginhost

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestProcAttr(t *testing.T) {
	nobody := &syscall.Credential{Uid: NobodyID, Gid: NobodyID, Groups: []uint32{}}
	own := &syscall.Credential{Uid: 5000, Gid: 5000}
	for _, tc := range []struct {
		name  string
		cfg   Config
		pv    privileges
		cred  *syscall.Credential
		flags uintptr
	}{
		{"root", Config{}, privileges{setIDs: true, newNetns: true}, nobody, syscall.CLONE_NEWNET},
		{"root, own credential, network", Config{Credential: own, Network: true}, privileges{setIDs: true, newNetns: true}, own, 0},
		{"root, keep privileges", Config{KeepPrivileges: true}, privileges{setIDs: true, newNetns: true}, nil, 0},
		// The shipped unit: user vigil with CAP_NET_RAW and CAP_NET_ADMIN.
		{"unprivileged", Config{}, privileges{}, nil, 0},
		// A non-root agent with CAP_SETUID and CAP_SETGID switches users
		// as root does.
		{"setuid and setgid capabilities", Config{}, privileges{setIDs: true}, nobody, 0},
		{"CAP_SYS_ADMIN", Config{}, privileges{newNetns: true}, nil, syscall.CLONE_NEWNET},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := procAttr(&tc.cfg, tc.pv)
			if a.Pdeathsig != syscall.SIGKILL {
				t.Errorf("Pdeathsig %v", a.Pdeathsig)
			}
			if fmt.Sprint(a.Credential) != fmt.Sprint(tc.cred) {
				t.Errorf("Credential %+v, want %+v", a.Credential, tc.cred)
			}
			if a.Cloneflags != tc.flags {
				t.Errorf("Cloneflags %#x, want %#x", a.Cloneflags, tc.flags)
			}
			if len(a.AmbientCaps) != 0 {
				t.Errorf("AmbientCaps %v", a.AmbientCaps)
			}
		})
	}
}

// capsHelperEnv makes the test binary a helper process for
// TestPluginCapabilities (see TestCapsHelper).
const capsHelperEnv = "VIGIL_PLUGINHOST_CAPS_HELPER"

// TestCapsHelper is no test: run with capsHelperEnv=plugin, the test binary
// prints its identity and capabilities, as a plugin would have them; with
// capsHelperEnv=agent, it prints its own, then starts itself as a plugin the
// way Host.launch does (sysProcAttr, withoutAmbientCaps) and prints the
// plugin's.
func TestCapsHelper(t *testing.T) {
	switch os.Getenv(capsHelperEnv) {
	case "plugin":
		printStatus(os.Stdout, "plugin")
	case "agent":
		printStatus(os.Stdout, "agent")
		out, err := startHelper(os.Args[0], "plugin", (&Host{cfg: Config{Network: true}}).sysProcAttr(), true)
		fmt.Print(out)
		if err != nil {
			fmt.Printf("agent error: %v\n", err)
		}
	default:
		t.Skip("helper process of TestPluginCapabilities")
	}
}

// printStatus prints the identity and capability lines of
// /proc/self/status, each after prefix.
func printStatus(w io.Writer, prefix string) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fmt.Fprintf(w, "%s error: %v\n", prefix, err)
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "Cap") || strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:") {
			fmt.Fprintf(w, "%s %s\n", prefix, l)
		}
	}
}

// startHelper runs the test binary bin as helper role with attributes
// attr, through withoutAmbientCaps if launch, and returns its output.
func startHelper(bin, role string, attr *syscall.SysProcAttr, launch bool) (string, error) {
	cmd := exec.Command(bin, "-test.run=^TestCapsHelper$")
	cmd.Env = []string{capsHelperEnv + "=" + role}
	cmd.Dir = "/"
	cmd.SysProcAttr = attr
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := cmd.Start
	if launch {
		start = func() error { return withoutAmbientCaps(cmd.Start) }
	}
	if err := start(); err != nil {
		return out.String(), fmt.Errorf("start %s helper: %w", role, err)
	}
	if err := cmd.Wait(); err != nil {
		return out.String(), fmt.Errorf("%s helper: %w", role, err)
	}
	return out.String(), nil
}

// helperStatus parses startHelper's output: role -> field ("CapEff:",
// "Uid:", ...) -> value.
func helperStatus(out string) map[string]map[string]string {
	m := map[string]map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || (f[0] != "agent" && f[0] != "plugin") {
			continue
		}
		if m[f[0]] == nil {
			m[f[0]] = map[string]string{}
		}
		m[f[0]][f[1]] = strings.Join(f[2:], " ")
	}
	return m
}

// helperBinary copies the test binary where any user can execute it (a
// plugin may run as nobody).
func helperBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "vigil-pluginhost-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

const noCaps = "0000000000000000"

// checkPluginStatus checks a plugin helper's identity and capabilities: no
// effective, permitted or ambient capability, and uid (if not -1). The
// inheritable set may stay (clearing it takes capset, which the unit's
// system call filter forbids): without permitted capabilities it only
// matters for programs with inheritable file capabilities, which the
// unit's NoNewPrivileges ignores.
func checkPluginStatus(t *testing.T, st map[string]string, uid int) {
	t.Helper()
	if len(st) == 0 {
		t.Fatal("no status from the plugin helper")
	}
	for _, k := range []string{"CapPrm:", "CapEff:", "CapAmb:"} {
		if st[k] != noCaps {
			t.Errorf("plugin %s %s, want %s", k, st[k], noCaps)
		}
	}
	t.Logf("plugin CapInh: %s", st["CapInh:"])
	if uid >= 0 {
		want := strings.TrimSpace(strings.Repeat(fmt.Sprintf("%d ", uid), 4))
		if st["Uid:"] != want || st["Gid:"] != want {
			t.Errorf("plugin Uid: %s Gid: %s, want %s", st["Uid:"], st["Gid:"], want)
		}
	}
}

// TestPluginCapabilities: a plugin started as Host.launch starts it has no
// capability in its effective, permitted, inheritable or ambient sets, and
// runs as nobody when the agent may switch users: as root, and, with
// VIGIL_E2E=1 and root to set it up, as a non-root agent holding ambient
// capabilities the way the systemd unit gives them (CAP_NET_RAW and
// CAP_NET_ADMIN; then also CAP_SETUID and CAP_SETGID).
func TestPluginCapabilities(t *testing.T) {
	bin := helperBinary(t)
	t.Run("this process", func(t *testing.T) {
		h := &Host{cfg: Config{Network: true}}
		out, err := startHelper(bin, "plugin", h.sysProcAttr(), true)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		uid := -1
		if SwitchesUser() {
			uid = NobodyID
		}
		checkPluginStatus(t, helperStatus(out)["plugin"], uid)
	})

	const agentID = 65532 // a non-root user other than nobody
	for _, tc := range []struct {
		name string
		caps []uintptr
		uid  int // the plugin's
	}{
		{"ambient CAP_NET_RAW CAP_NET_ADMIN", []uintptr{unix.CAP_NET_RAW, unix.CAP_NET_ADMIN}, agentID},
		{"ambient CAP_SETUID CAP_SETGID", []uintptr{unix.CAP_NET_RAW, unix.CAP_NET_ADMIN, unix.CAP_SETUID, unix.CAP_SETGID}, NobodyID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if os.Getenv("VIGIL_E2E") != "1" {
				t.Skip("starts an agent helper with ambient capabilities: set VIGIL_E2E=1")
			}
			if os.Geteuid() != 0 {
				t.Skip("needs root to start the agent helper as another user with ambient capabilities")
			}
			// The agent helper runs as the unit runs the agent: a non-root
			// user whose capabilities are all ambient.
			attr := &syscall.SysProcAttr{
				Pdeathsig:   syscall.SIGKILL,
				Credential:  &syscall.Credential{Uid: agentID, Gid: agentID, Groups: []uint32{}},
				AmbientCaps: tc.caps,
			}
			out, err := startHelper(bin, "agent", attr, false)
			if err != nil && strings.HasPrefix(err.Error(), "start ") {
				t.Skipf("cannot start a helper with ambient capabilities here: %v", err)
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			st := helperStatus(out)
			var want uint64
			for _, c := range tc.caps {
				want |= 1 << c
			}
			if got := st["agent"]["CapAmb:"]; got != fmt.Sprintf("%016x", want) {
				t.Fatalf("agent helper CapAmb: %s, want %016x (setup failed)\n%s", got, want, out)
			}
			if strings.Contains(out, "agent error:") {
				t.Fatalf("agent helper:\n%s", out)
			}
			checkPluginStatus(t, st["plugin"], tc.uid)
		})
	}
}
