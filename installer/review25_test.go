package installer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// scriptHarness runs an installer script with its system paths moved into a
// temporary directory and every system command it calls replaced by a stub
// that logs its arguments (and, for runuser, "enrolls" by creating
// identity.json). It never touches the machine.
type scriptHarness struct {
	dir, state, log string
}

func newScriptHarness(t *testing.T) *scriptHarness {
	t.Helper()
	dir := t.TempDir()
	h := &scriptHarness{dir: dir, state: filepath.Join(dir, "state"), log: filepath.Join(dir, "calls.log")}
	stubs := filepath.Join(dir, "stubs")
	for _, d := range []string{stubs, h.state, filepath.Join(dir, "run", "systemd", "system"), filepath.Join(dir, "root", "usr", "lib", "vigil"),
		filepath.Join(dir, "root", "etc", "vigil")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logger := `echo "$(basename "$0") $*" >>"$STUB_LOG"` + "\n"
	enabled := filepath.Join(dir, "enabled")
	for name, body := range map[string]string{
		"getent": "exit 0", "addgroup": "exit 0", "adduser": "exit 0", "groupadd": "exit 0", "useradd": "exit 0",
		"install": "exit 0", "sysctl": "exit 0", "vigil-agent": "exit 0", "sha256sum": "exit 0",
		"vigil-server": "exit 0", "vigilctl": "exit 0",
		"ischroot":           "exit 1",
		"id":                 "echo 0",
		"dpkg-query":         "exit 1",
		"rpm":                "exit 1",
		"runuser":            `: >"$STUB_STATE/identity.json"`,
		"deb-systemd-invoke": "exit 0",
		"deb-systemd-helper": `case "$1 $2" in
  enable*) : >` + enabled + ` ;;
  "--quiet is-enabled") [ -e ` + enabled + ` ] ;;
esac`,
		"systemctl": `case "$*" in
  enable*) : >` + enabled + ` ;;
  "--quiet is-active"*) [ -e ` + filepath.Join(dir, "active") + ` ] ;;
  "is-enabled --quiet"*) [ -e ` + enabled + ` ] ;;
esac`,
	} {
		if err := os.WriteFile(filepath.Join(stubs, name), []byte("#!/bin/sh\n"+logger+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// run runs script (an installer file) with args, its paths moved into the
// harness; enrolled makes the agent enrolled beforehand.
func (h *scriptHarness) run(t *testing.T, script string, enrolled bool, env []string, args ...string) string {
	t.Helper()
	b, err := Read(script)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(h.dir, "root")
	s := strings.NewReplacer(
		"/var/lib/vigil", h.state,
		"/run/systemd/system", filepath.Join(h.dir, "run", "systemd", "system"),
		"/etc/vigil", root+"/etc/vigil",
		"/etc/systemd/system", root+"/etc/systemd/system",
		"/usr/lib/vigil", root+"/usr/lib/vigil",
		"/usr/share/vigil", root+"/usr/share/vigil",
		"/usr/share/doc/vigil-agent", root+"/usr/share/doc/vigil-agent",
	).Replace(string(b))
	_ = os.Remove(filepath.Join(h.state, "identity.json"))
	_ = os.Remove(filepath.Join(h.dir, "enabled"))
	_ = os.Remove(h.log)
	if enrolled {
		if err := os.WriteFile(filepath.Join(h.state, "identity.json"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(h.dir, "script")
	if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", append([]string{path}, args...)...)
	cmd.Dir = h.dir
	cmd.Env = append([]string{"PATH=" + filepath.Join(h.dir, "stubs") + ":/usr/bin:/bin", "STUB_LOG=" + h.log, "STUB_STATE=" + h.state}, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", script, args, err, out)
	}
	calls, _ := os.ReadFile(h.log)
	return string(calls)
}

// TestDebPostinstStartsWhatItEnrolls: the deb postinst that enrolls the
// agent (VIGIL_ENROLL) enables the unit and must start it, also when it
// runs as an upgrade or reinstall ($2 set) of a package that was installed
// but not enrolled. It only ran try-restart then, which does nothing to a
// stopped unit: "enrolled", and the sensor stayed down until the next boot.
// A plain upgrade still restarts only a running agent.
func TestDebPostinstStartsWhatItEnrolls(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	h := newScriptHarness(t)
	enroll := []string{"VIGIL_ENROLL=vigil-agent enroll --server vigil.example:4433 --token vge_x.y --ca-pin sha256:00"}
	for _, tc := range []struct {
		name      string
		enrolled  bool
		env, args []string
		want      string // the deb-systemd-invoke call expected
	}{
		{"fresh install, enroll", false, enroll, []string{"configure"}, "deb-systemd-invoke start vigil-agent.service"},
		{"upgrade of an unenrolled agent, enroll", false, enroll, []string{"configure", "0.9.0"}, "deb-systemd-invoke start vigil-agent.service"},
		{"upgrade of an enrolled agent", true, nil, []string{"configure", "0.9.0"}, "deb-systemd-invoke try-restart vigil-agent.service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := h.run(t, "scripts/deb/agent-postinst", tc.enrolled, tc.env, tc.args...)
			if !strings.Contains(calls, tc.want+"\n") {
				t.Errorf("no %q; calls:\n%s", tc.want, calls)
			}
		})
	}
}

// TestOfflineInstallStartsWhatItEnrolls: the offline install.sh, as the
// deb postinst: enrolling during an upgrade of an installed but unenrolled
// agent enabled the unit and only ran try-restart, so it did not start.
func TestOfflineInstallStartsWhatItEnrolls(t *testing.T) {
	h := newScriptHarness(t)
	// The unpacked bundle: install.sh beside an empty payload and the
	// binary it checks.
	if err := os.MkdirAll(filepath.Join(h.dir, "usr", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"payload.sha256": "", "usr/bin/vigil-agent": "#!/bin/sh\nexit 0\n"} {
		if err := os.WriteFile(filepath.Join(h.dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	list := filepath.Join(h.dir, "root", "usr", "lib", "vigil", "offline-install.list")
	for _, tc := range []struct {
		name     string
		upgrade  bool
		enrolled bool
		args     []string
		want     string
	}{
		{"fresh install, enroll", false, false, []string{"--server", "vigil.example:4433", "--token", "vge_x.y", "--ca-pin", "sha256:00"}, "systemctl start vigil-agent.service"},
		{"upgrade of an unenrolled agent, enroll", true, false, []string{"--server", "vigil.example:4433", "--token", "vge_x.y", "--ca-pin", "sha256:00"}, "systemctl start vigil-agent.service"},
		{"upgrade of an enrolled agent", true, true, nil, "systemctl try-restart vigil-agent.service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.Remove(list)
			if tc.upgrade {
				if err := os.WriteFile(list, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			calls := h.run(t, "offline/install.sh", tc.enrolled, nil, tc.args...)
			if !strings.Contains(calls, tc.want+"\n") {
				t.Errorf("no %q; calls:\n%s", tc.want, calls)
			}
		})
	}
}

// TestOfflinePurgeKeepsOthersConfig: `install.sh --uninstall --purge`
// removes the agent's files from /etc/vigil, and /etc/vigil only when
// nothing else is left in it. It ran rm -rf /etc/vigil, which on a host
// that also runs the vigil-server package deleted the server's
// configuration there: server.env and, as server/export suggests, the SIEM
// forwarders' CA and secret files.
func TestOfflinePurgeKeepsOthersConfig(t *testing.T) {
	h := newScriptHarness(t)
	etc := filepath.Join(h.dir, "root", "etc", "vigil")
	list := filepath.Join(h.dir, "root", "usr", "lib", "vigil", "offline-install.list")
	files := map[string]string{
		filepath.Join(etc, "agent.yaml"):     "the agent's (listed)",
		filepath.Join(etc, "agent.yaml.new"): "the agent's new default",
		filepath.Join(etc, "server.env"):     "the server package's",
		filepath.Join(etc, "soar.secret"):    "the server's webhook secret",
	}
	for f, body := range files {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The list names the agent's files at their real paths; the harness
	// moves them when it rewrites the script, not in the list it reads.
	if err := os.WriteFile(list, []byte(filepath.Join(etc, "agent.yaml")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.run(t, "offline/install.sh", true, nil, "--uninstall", "--purge")
	for f, gone := range map[string]bool{"agent.yaml": true, "agent.yaml.new": true, "server.env": false, "soar.secret": false} {
		_, err := os.Stat(filepath.Join(etc, f))
		if gone && err == nil {
			t.Errorf("%s kept", f)
		}
		if !gone && err != nil {
			t.Errorf("%s (not the agent's) removed: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(h.state, "identity.json")); err == nil {
		t.Error("state kept")
	}
}

// TestDebPostinstEnrollMissingTokenValue: a VIGIL_ENROLL whose last word is
// --token (a paste cut short) made the deb postinst's argument loop shift
// past the end, which dash treats as a fatal error even inside `if enroll`:
// the postinst failed and the package stayed half-configured, although a
// failed enrollment must not fail the install.
func TestDebPostinstEnrollMissingTokenValue(t *testing.T) {
	h := newScriptHarness(t)
	env := []string{"VIGIL_ENROLL=--server vigil.example:4433 --ca-pin sha256:00 --token"}
	calls := h.run(t, "scripts/deb/agent-postinst", false, env, "configure")
	if !strings.Contains(calls, "runuser -u vigil -- vigil-agent enroll --server vigil.example:4433 --ca-pin sha256:00 --state ") {
		t.Errorf("enroll not run as expected; calls:\n%s", calls)
	}
}
