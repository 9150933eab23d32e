package packaging

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/installer"
)

// TestServerBackupUnits: the server package (deb and rpm) ships the
// backup timer and its service beside vigil-server.service, as plain
// files (not conffiles: changes go in drop-ins), from the embedded
// installer files; the agent package does not.
func TestServerBackupUnits(t *testing.T) {
	stage := t.TempDir()
	if err := installer.WriteTo(stage); err != nil {
		t.Fatal(err)
	}
	server := serverSpec(&Options{}, &inputs{}, stage)
	agent := agentSpec(&Options{}, &inputs{}, stage)
	for _, unit := range []string{"vigil-server.service", "vigil-server-backup.service", "vigil-server-backup.timer"} {
		for format, dir := range map[string]string{FormatDeb: "/lib/systemd/system/", FormatRPM: "/usr/lib/systemd/system/"} {
			found := 0
			for _, e := range sortedEntries(server, format) {
				if e.dst != dir+unit {
					continue
				}
				found++
				if e.mode != 0o644 || e.typ != "" {
					t.Errorf("%s %s: mode %04o type %q, want 0644 and a plain file", format, e.dst, e.mode, e.typ)
				}
				if e.src != filepath.Join(stage, "systemd", unit) {
					t.Errorf("%s %s: from %s", format, e.dst, e.src)
				}
				if _, err := os.Stat(e.src); err != nil {
					t.Errorf("%s %s: %v", format, e.dst, err)
				}
			}
			if found != 1 {
				t.Errorf("the %s server package has %s%s %d times, want once", format, dir, unit, found)
			}
			for _, e := range sortedEntries(agent, format) {
				if filepath.Base(e.dst) == unit {
					t.Errorf("the %s agent package has %s", format, e.dst)
				}
			}
		}
	}
}
