package installer

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// unitFile is a systemd unit parsed the simple way: section -> key -> the
// values of its assignments in order (no line continuations, which the
// units do not use).
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, name string) unitFile {
	t.Helper()
	b, err := Read(name)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] != nil {
				t.Fatalf("%s:%d: section [%s] twice", name, n, section)
			}
			u[section] = map[string][]string{}
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: line continuation (the test's parser does not handle it)", name, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.TrimSpace(k) != k || k == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", name, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// one returns the value of a key assigned once, and fails otherwise.
func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u[section][key]
	if len(v) != 1 {
		t.Errorf("[%s] %s= assigned %d times (%q), want once", section, key, len(v), v)
		return ""
	}
	return v[0]
}

// TestBackupUnits: the packaged daily backup runs `vigil-server backup
// --dir` as vigil-server, in vigil-server.service's sandbox minus the
// network, writing only its data directory and /var/backups/vigil-server,
// which root creates 0700 for it before each run (/var/backups is root's,
// and ProtectSystem=strict makes the rest read-only). The timer is daily,
// spread, and catches up after downtime.
func TestBackupUnits(t *testing.T) {
	svc := parseUnit(t, "systemd/vigil-server-backup.service")
	server := parseUnit(t, "systemd/vigil-server.service")
	for key, want := range map[string]string{
		"Type":                    "oneshot",
		"User":                    "vigil-server",
		"Group":                   "vigil-server",
		"EnvironmentFile":         "-/etc/vigil/server.env",
		"Environment":             "VIGIL_BACKUP_KEEP=7",
		"ExecStartPre":            "+/usr/bin/install -d -m 0700 -o vigil-server -g vigil-server /var/backups/vigil-server",
		"ExecStart":               "/usr/bin/vigil-server backup --data /var/lib/vigil-server --dir /var/backups/vigil-server --keep ${VIGIL_BACKUP_KEEP}",
		"ReadWritePaths":          "/var/backups/vigil-server",
		"StateDirectory":          "vigil-server",
		"PrivateNetwork":          "yes",
		"RestrictAddressFamilies": "AF_UNIX",
		"ProtectSystem":           "strict",
		"CapabilityBoundingSet":   "",
		"NoNewPrivileges":         "yes",
		"UMask":                   "0077",
	} {
		if got := svc.one(t, "Service", key); got != want {
			t.Errorf("vigil-server-backup.service: %s=%s, want %s", key, got, want)
		}
	}
	if got := svc.one(t, "Unit", "Documentation"); got == "" {
		t.Error("vigil-server-backup.service: no Documentation= (lintian)")
	}
	// Started by the timer only: nothing to enable.
	if _, ok := svc["Install"]; ok {
		t.Error("vigil-server-backup.service has an [Install] section: only the timer is enabled")
	}
	for _, s := range []string{"Restart", "RemainAfterExit"} {
		if v, ok := svc["Service"][s]; ok {
			t.Errorf("vigil-server-backup.service: %s=%q", s, v)
		}
	}

	// The same sandbox as the server, setting for setting, except what is
	// the server's own (how it runs, its network, its resources): a
	// hardening setting added to vigil-server.service fails here until the
	// backup has it too, or is listed here with a reason.
	notShared := map[string]string{
		"Type": "oneshot", "ExecStartPre": "creates the backup directory", "ExecStart": "backup",
		"Restart": "a oneshot run by a timer", "RestartSec": "", "TimeoutStopSec": "",
		"RestrictAddressFamilies": "no network: AF_UNIX",
		"MemoryHigh":              "resources of a copy", "MemoryMax": "", "CPUQuota": "", "TasksMax": "", "LimitNOFILE": "",
	}
	for key, want := range server["Service"] {
		if _, ok := notShared[key]; ok {
			continue
		}
		if got := svc["Service"][key]; !slices.Equal(got, want) {
			t.Errorf("vigil-server-backup.service: %s=%q, vigil-server.service has %q", key, got, want)
		}
	}
	for _, key := range []string{"MemoryMax", "CPUQuota", "TasksMax", "TimeoutStartSec"} {
		if svc.one(t, "Service", key) == "" {
			t.Errorf("vigil-server-backup.service: no %s limit", key)
		}
	}

	timer := parseUnit(t, "systemd/vigil-server-backup.timer")
	for key, want := range map[string]string{"OnCalendar": "daily", "Persistent": "true"} {
		if got := timer.one(t, "Timer", key); got != want {
			t.Errorf("vigil-server-backup.timer: %s=%s, want %s", key, got, want)
		}
	}
	if d := timer.one(t, "Timer", "RandomizedDelaySec"); d == "" || d == "0" {
		t.Errorf("vigil-server-backup.timer: RandomizedDelaySec=%q", d)
	}
	if u, ok := timer["Timer"]["Unit"]; ok && !slices.Equal(u, []string{"vigil-server-backup.service"}) {
		t.Errorf("vigil-server-backup.timer starts %q", u)
	}
	if got := timer.one(t, "Install", "WantedBy"); got != "timers.target" {
		t.Errorf("vigil-server-backup.timer: WantedBy=%s, want timers.target", got)
	}
	if timer.one(t, "Unit", "Documentation") == "" {
		t.Error("vigil-server-backup.timer: no Documentation=")
	}
}

// TestBackupTimerNotEnabled: the package ships the timer off, as it ships
// vigil-server itself: no server maintainer script enables, presets or
// starts a unit, on install or upgrade (the admin runs systemctl enable
// --now vigil-server-backup.timer); server.env documents the keep count.
func TestBackupTimerNotEnabled(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, tc := range []struct {
		script string
		args   []string
	}{
		{"scripts/deb/server-postinst", []string{"configure"}},
		{"scripts/deb/server-postinst", []string{"configure", "0.9.0"}},
		{"scripts/rpm/server-post", []string{"1"}},
		{"scripts/rpm/server-post", []string{"2"}},
	} {
		h := newScriptHarness(t)
		if err := os.MkdirAll(h.state+"-server", 0o755); err != nil {
			t.Fatal(err)
		}
		calls := h.run(t, tc.script, false, nil, tc.args...)
		for _, line := range strings.Split(calls, "\n") {
			if strings.HasPrefix(line, "systemctl is-enabled --quiet vigil-server-backup.timer") {
				continue // the question whether the admin enabled it (not enabled here)
			}
			if strings.Contains(line, "backup") || strings.Contains(line, " enable") || strings.Contains(line, "preset") ||
				strings.Contains(line, "deb-systemd-invoke start") {
				t.Errorf("%s %q: %q", tc.script, tc.args, line)
			}
		}
	}
	env, err := Read("config/server.env")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(env), "\n#VIGIL_BACKUP_KEEP=7\n") {
		t.Error("server.env does not show VIGIL_BACKUP_KEEP's default (#VIGIL_BACKUP_KEEP=7)")
	}
	r := string(README())
	for _, s := range []string{"systemctl enable --now vigil-server-backup.timer", "/var/backups/vigil-server", "VIGIL_BACKUP_KEEP"} {
		if !strings.Contains(r, s) {
			t.Errorf("README.md does not mention %s", s)
		}
	}
}

// TestBackupTimerFollowsRemoval: an enabled backup timer was left firing
// after `apt remove` / `rpm -e` (at a unit whose program is gone), and its
// enablement after a purge. prerm stops it, postrm purge drops its
// enablement, rpm's preun disables it, and a reinstall starts it again if
// the admin had enabled it.
func TestBackupTimerFollowsRemoval(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, tc := range []struct {
		script  string
		args    []string
		enabled bool
		want    string
	}{
		{"scripts/deb/server-prerm", []string{"remove"}, true, "deb-systemd-invoke stop vigil-server-backup.timer vigil-server-backup.service"},
		{"scripts/deb/server-postrm", []string{"purge"}, true, "deb-systemd-helper purge vigil-server-backup.timer"},
		{"scripts/rpm/server-preun", []string{"0"}, true, "systemctl disable --now vigil-server-backup.timer"},
		{"scripts/deb/server-postinst", []string{"configure", "0.9.0"}, true, "deb-systemd-invoke start vigil-server-backup.timer"},
		{"scripts/deb/server-postinst", []string{"configure", "0.9.0"}, false, ""},
	} {
		h := newScriptHarness(t)
		if err := os.MkdirAll(h.state+"-server", 0o755); err != nil {
			t.Fatal(err)
		}
		if tc.enabled {
			stub := "#!/bin/sh\necho \"$(basename \"$0\") $*\" >>\"$STUB_LOG\"\n" +
				"case \"$*\" in \"is-enabled --quiet vigil-server-backup.timer\") exit 0 ;; \"is-enabled --quiet\"*) exit 1 ;; esac\n"
			if err := os.WriteFile(filepath.Join(h.dir, "stubs", "systemctl"), []byte(stub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		calls := h.run(t, tc.script, false, nil, tc.args...)
		if tc.want != "" && !strings.Contains(calls, tc.want+"\n") {
			t.Errorf("%s %q: no %q; calls:\n%s", tc.script, tc.args, tc.want, calls)
		}
		if tc.want == "" && strings.Contains(calls, "start vigil-server-backup") {
			t.Errorf("%s %q: started a timer the admin did not enable; calls:\n%s", tc.script, tc.args, calls)
		}
	}
}
