package pluginhost

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLandlockABIMasks(t *testing.T) {
	const (
		abi1 = 0x1fff // EXECUTE .. MAKE_SYM
		tcp  = unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP
		all  = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
	)
	for _, tc := range []struct {
		abi        int
		fs, net    uint64
		scoped     uint64
		flags      uintptr
		hasRefer   bool
		hasTrunc   bool
		hasIoctl   bool
		hasResolve bool
	}{
		{abi: 0},
		{abi: 1, fs: abi1},
		{abi: 2, fs: abi1 | unix.LANDLOCK_ACCESS_FS_REFER},
		{abi: 3, fs: abi1 | unix.LANDLOCK_ACCESS_FS_REFER | unix.LANDLOCK_ACCESS_FS_TRUNCATE},
		{abi: 4, fs: abi1 | unix.LANDLOCK_ACCESS_FS_REFER | unix.LANDLOCK_ACCESS_FS_TRUNCATE, net: tcp},
		{abi: 5, fs: 0xffff, net: tcp},
		{abi: 6, fs: 0xffff, net: tcp, scoped: all},
		{abi: 7, fs: 0xffff, net: tcp, scoped: all, flags: unix.LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON},
		{abi: 8, fs: 0xffff, net: tcp, scoped: all, flags: unix.LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON},
		{abi: 9, fs: 0xffff | unix.LANDLOCK_ACCESS_FS_RESOLVE_UNIX, net: tcp, scoped: all, flags: unix.LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON},
	} {
		if got := handledFS(tc.abi); got != tc.fs {
			t.Errorf("ABI %d: handled fs %#x, want %#x", tc.abi, got, tc.fs)
		}
		if got := handledNet(tc.abi); got != tc.net {
			t.Errorf("ABI %d: handled net %#x, want %#x", tc.abi, got, tc.net)
		}
		if got := scopes(tc.abi); got != tc.scoped {
			t.Errorf("ABI %d: scoped %#x, want %#x", tc.abi, got, tc.scoped)
		}
		if got := restrictFlags(tc.abi); got != tc.flags {
			t.Errorf("ABI %d: flags %#x, want %#x", tc.abi, got, tc.flags)
		}
	}
}

// TestBuildPolicy checks the rules of a plugin's ruleset without starting
// anything: what is allowed where, masked by the ABI and by file type.
func TestBuildPolicy(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "plugin")
	interp := filepath.Join(dir, "ld.so")
	models := filepath.Join(dir, "models")
	bundle := filepath.Join(dir, "bundle.vgb")
	link := filepath.Join(dir, "bundle-link.vgb")
	private := filepath.Join(dir, "private")
	for _, f := range []string{bin, interp, bundle} {
		if err := os.WriteFile(f, nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{models, private} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(bundle, link); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	in := policyInput{Binary: bin, Interp: interp, ReadOnly: []string{models, bundle, link, missing, models}, Private: private}

	const (
		rf   = unix.LANDLOCK_ACCESS_FS_READ_FILE
		rd   = unix.LANDLOCK_ACCESS_FS_READ_DIR
		ex   = unix.LANDLOCK_ACCESS_FS_EXECUTE
		wf   = unix.LANDLOCK_ACCESS_FS_WRITE_FILE
		tr   = unix.LANDLOCK_ACCESS_FS_TRUNCATE
		made = unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK |
			unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR
	)
	for _, tc := range []struct {
		abi  int
		want map[string]uint64 // path -> access; absent: no rule
	}{
		{1, map[string]uint64{
			bin: ex | rf, interp: ex | rf, models: rf | rd, bundle: rf, private: rf | rd | wf | made,
			"/proc": rf | rd, "/sys": rf | rd, "/usr": rf | rd, "/dev/null": rf | wf, "/dev/urandom": rf,
			"/etc/ld.so.cache": rf,
		}},
		{7, map[string]uint64{
			bin: ex | rf, interp: ex | rf, models: rf | rd, bundle: rf, private: rf | rd | wf | tr | made,
			"/proc": rf | rd, "/sys": rf | rd, "/usr": rf | rd, "/dev/null": rf | wf | tr, "/dev/urandom": rf,
			"/etc/ld.so.cache": rf,
		}},
	} {
		p := buildPolicy(tc.abi, in)
		if p.HandledFS != handledFS(tc.abi) || p.HandledNet != handledNet(tc.abi) || p.Scoped != scopes(tc.abi) {
			t.Errorf("ABI %d: handled %#x %#x %#x", tc.abi, p.HandledFS, p.HandledNet, p.Scoped)
		}
		got := map[string]uint64{}
		for _, r := range p.Rules {
			if _, dup := got[r.Path]; dup {
				t.Errorf("ABI %d: two rules for %s", tc.abi, r.Path)
			}
			got[r.Path] = r.Access
			if r.Access&^p.HandledFS != 0 {
				t.Errorf("ABI %d: %s allows %#x, beyond the handled %#x", tc.abi, r.Path, r.Access, p.HandledFS)
			}
		}
		for path, acc := range tc.want {
			if _, err := os.Stat(path); err != nil {
				continue // a system path this machine lacks
			}
			if got[path] != acc {
				t.Errorf("ABI %d: %s allows %#x, want %#x", tc.abi, path, got[path], acc)
			}
		}
		// Nothing else of the test directory, nor the agent's secrets.
		for path := range got {
			if strings.HasPrefix(path, dir) && tc.want[path] == 0 {
				t.Errorf("ABI %d: unexpected rule for %s", tc.abi, path)
			}
			for _, deny := range []string{"/", "/etc", "/var", "/var/lib", "/var/lib/vigil", "/home", "/root", "/tmp", "/dev"} {
				if path == deny {
					t.Errorf("ABI %d: rule for %s", tc.abi, path)
				}
			}
		}
		if !slices.Contains(p.Skipped, missing) {
			t.Errorf("ABI %d: skipped %v, want %s among them", tc.abi, p.Skipped, missing)
		}
	}
	if p := buildPolicy(0, in); len(p.Rules) != 0 || p.HandledFS != 0 {
		t.Errorf("ABI 0: %+v", p)
	}

	// The running kernel accepts the ruleset (file rules with file rights
	// only, every right within its ABI), without restricting anything.
	abi, err := landlockABI()
	if err != nil {
		t.Skipf("no Landlock here: %v", err)
	}
	fd, err := buildPolicy(abi, in).create()
	if err != nil {
		t.Fatalf("ABI %d: %v", abi, err)
	}
	unix.Close(fd)
	// A file whose rule asks for directory rights (it was a directory
	// when the policy was built) is masked, not refused.
	fd, err = (&policy{ABI: abi, HandledFS: handledFS(abi), Rules: []pathRule{{Path: bundle, Access: accRead}}}).create()
	if err != nil {
		t.Fatalf("file rule with directory rights: %v", err)
	}
	unix.Close(fd)
}

func TestBundleArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, nil},
		{[]string{"-bundle", "/a.vgb", "-bundle=/b.vgb", "--bundle", "/c.vgb", "--bundle=/d.vgb"}, []string{"/a.vgb", "/b.vgb", "/c.vgb", "/d.vgb"}},
		{[]string{"-calibrate", "1h", "-bundles", "/x", "bundle", "/y", "-hash-seed=1"}, nil},
		{[]string{"-noop", "-bundle"}, nil},
	} {
		if got := bundleArgs(tc.args); !slices.Equal(got, tc.want) {
			t.Errorf("bundleArgs(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestORTDirs(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	links := filepath.Join(dir, "lib")
	for _, d := range []string{real, links} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lib := filepath.Join(real, "libonnxruntime.so.1.24.3")
	if err := os.WriteFile(lib, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(links, "libonnxruntime.so")
	if err := os.Symlink(lib, link); err != nil {
		t.Fatal(err)
	}
	if got := ortDirs([]string{"A=1", "ONNXRUNTIME_LIB=" + link}); !slices.Equal(got, []string{links, real}) {
		t.Errorf("ortDirs(link) = %q", got)
	}
	if got := ortDirs([]string{"ONNXRUNTIME_LIB=/nowhere/x.so", "ONNXRUNTIME_LIB=" + lib}); !slices.Equal(got, []string{real}) {
		t.Errorf("ortDirs(last wins) = %q", got)
	}
	if got := ortDirs([]string{"PATH=/usr/bin"}); got != nil {
		t.Errorf("ortDirs(none) = %q", got)
	}
}

func TestELFInterp(t *testing.T) {
	if got := elfInterp("/nonexistent"); got != "" {
		t.Errorf("elfInterp(missing) = %q", got)
	}
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := elfInterp(notELF); got != "" {
		t.Errorf("elfInterp(script) = %q", got)
	}
	sh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Skip(err)
	}
	got := elfInterp(sh)
	if got == "" {
		t.Skipf("%s is static", sh)
	}
	if !filepath.IsAbs(got) {
		t.Fatalf("elfInterp(%s) = %q", sh, got)
	}
	if _, err := os.Stat(got); err != nil {
		t.Fatalf("interpreter %s: %v", got, err)
	}
}

func TestUnavailableHint(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{unix.ENOSYS, "5.13"},
		{unix.EOPNOTSUPP, "not enabled"},
		{unix.EPERM, "SystemCallFilter="},
		{errors.New("other"), "probe failed"},
	} {
		if got := unavailableHint(tc.err); !strings.Contains(got, tc.want) {
			t.Errorf("unavailableHint(%v) = %q, want it to mention %q", tc.err, got, tc.want)
		}
	}
}

func TestConfinementDescribe(t *testing.T) {
	fp := &unix.SockFprog{}
	for _, tc := range []struct {
		c    confinement
		want string
	}{
		{confinement{abi: 7, ruleset: 3, filter: fp}, "landlock ABI 7, seccomp"},
		{confinement{abi: 7, ruleset: 3}, "landlock ABI 7"},
		{confinement{ruleset: -1, filter: fp}, "seccomp"},
		{confinement{ruleset: -1}, "unavailable"},
	} {
		if got := tc.c.describe(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.c, got, tc.want)
		}
	}
}
