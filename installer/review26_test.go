package installer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebReinstallAfterRemoveStartsWhatRan: `apt remove` stops the unit
// (prerm) and keeps its state and enablement; a reinstall is configured as
// an upgrade (postinst configure <removed version>), which only ran
// try-restart: the enabled, enrolled agent (or server) that ran before the
// removal stayed stopped until the next boot. prerm now marks a unit that
// was running, and postinst starts it; a unit the admin had stopped stays
// stopped, and a plain upgrade still only restarts.
func TestDebReinstallAfterRemoveStartsWhatRan(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, pkg := range []struct {
		name, unit, stateSuffix string
		enrolled                bool
	}{
		{"agent", "vigil-agent.service", "", true},
		{"server", "vigil-server.service", "-server", false},
	} {
		for _, tc := range []struct {
			name     string
			prerm    string // prerm's first argument
			active   bool   // the unit runs when prerm runs
			postinst []string
			want     string // the deb-systemd-invoke call expected from postinst
			notWant  string
		}{
			{"reinstall after remove of a running unit", "remove", true, []string{"configure", "0.9.0"}, "start", "try-restart"},
			{"reinstall after remove of a stopped unit", "remove", false, []string{"configure", "0.9.0"}, "try-restart", "start"},
			{"upgrade of a running unit", "upgrade", true, []string{"configure", "0.9.0"}, "try-restart", "start"},
			{"failed removal of a running unit", "remove", true, []string{"abort-remove"}, "start", "try-restart"},
		} {
			t.Run(pkg.name+"/"+tc.name, func(t *testing.T) {
				h := newScriptHarness(t)
				state := h.state + pkg.stateSuffix
				if err := os.MkdirAll(state, 0o755); err != nil {
					t.Fatal(err)
				}
				if tc.active {
					if err := os.WriteFile(filepath.Join(h.dir, "active"), nil, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				h.run(t, "scripts/deb/"+pkg.name+"-prerm", false, nil, tc.prerm)
				calls := h.run(t, "scripts/deb/"+pkg.name+"-postinst", pkg.enrolled, nil, tc.postinst...)
				if want := "deb-systemd-invoke " + tc.want + " " + pkg.unit + "\n"; !strings.Contains(calls, want) {
					t.Errorf("no %q; calls:\n%s", want, calls)
				}
				if bad := "deb-systemd-invoke " + tc.notWant + " " + pkg.unit + "\n"; strings.Contains(calls, bad) {
					t.Errorf("%q; calls:\n%s", bad, calls)
				}
				if _, err := os.Stat(filepath.Join(state, ".running-at-remove")); !os.IsNotExist(err) {
					t.Errorf("the mark is left after postinst: %v", err)
				}
			})
		}
	}
}

// TestDebPrermMarkFollowsNoLink: the state directory belongs to the
// service's user (vigil, vigil-server), and prerm runs as root: a link
// that user left at the mark's name must not make root create, or touch,
// the file it points to (`touch` followed it: e.g. /etc/nologin). A mark
// that cannot be made, or a state directory that does not exist, does not
// fail the removal.
func TestDebPrermMarkFollowsNoLink(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, pkg := range []struct{ name, stateSuffix string }{{"agent", ""}, {"server", "-server"}} {
		for _, tc := range []string{"link", "no state directory", "mark present"} {
			t.Run(pkg.name+"/"+tc, func(t *testing.T) {
				h := newScriptHarness(t)
				state := h.state + pkg.stateSuffix
				if err := os.WriteFile(filepath.Join(h.dir, "active"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				target := filepath.Join(h.dir, "target")
				mark := filepath.Join(state, ".running-at-remove")
				switch tc {
				case "link":
					if err := os.MkdirAll(state, 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.Symlink(target, mark); err != nil {
						t.Fatal(err)
					}
				case "no state directory":
					if err := os.RemoveAll(state); err != nil {
						t.Fatal(err)
					}
				case "mark present":
					if err := os.MkdirAll(state, 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(mark, nil, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				calls := h.run(t, "scripts/deb/"+pkg.name+"-prerm", false, nil, "remove")
				if !strings.Contains(calls, "deb-systemd-invoke stop") {
					t.Errorf("not stopped; calls:\n%s", calls)
				}
				if _, err := os.Lstat(target); !os.IsNotExist(err) {
					t.Errorf("prerm created the link's target %s: %v", target, err)
				}
				if tc == "mark present" {
					if _, err := os.Stat(mark); err != nil {
						t.Errorf("the mark is gone: %v", err)
					}
				}
			})
		}
	}
}
