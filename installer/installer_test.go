package installer

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every maintainer script and install.sh parses as POSIX sh (and passes
// shellcheck when it is installed).
func TestScriptsParse(t *testing.T) {
	dir := t.TempDir()
	if err := WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	var scripts []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if !d.IsDir() && (strings.HasPrefix(rel, "scripts/") || strings.HasSuffix(rel, ".sh")) {
			scripts = append(scripts, p)
			st, err := os.Stat(p)
			if err != nil {
				return err
			}
			if st.Mode().Perm() != 0o755 {
				t.Errorf("%s mode %v", rel, st.Mode())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) < 10 {
		t.Fatalf("only %d scripts", len(scripts))
	}
	sh := "/bin/sh"
	if _, err := os.Stat("/bin/dash"); err == nil {
		sh = "/bin/dash"
	}
	_, shellcheck := exec.LookPath("shellcheck")
	for _, s := range scripts {
		if out, err := exec.Command(sh, "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", sh, s, err, out)
		}
		if shellcheck == nil {
			if out, err := exec.Command("shellcheck", "--shell=sh", "--severity=warning", s).CombinedOutput(); err != nil {
				t.Errorf("shellcheck %s: %v\n%s", s, err, out)
			}
		}
		b, _ := os.ReadFile(s)
		if strings.Contains(filepath.ToSlash(s), "/scripts/deb/") && !strings.Contains(string(b), "\nset -e\n") {
			t.Errorf("%s: deb maintainer scripts run with set -e", s)
		}
	}
}

func TestREADME(t *testing.T) {
	r := string(README())
	for _, s := range []string{"VIGIL_ENROLL", "SHA256SUMS.sig", "openssl dgst", "install.sh", "plugin_dirs", "model_dirs"} {
		if !strings.Contains(r, s) {
			t.Errorf("README.md does not mention %s", s)
		}
	}
}

// The agent and the server run as different system users, so that a
// compromised agent or detector plugin on a host with both packages cannot
// read the server's CA keys; the agent's unit also hides the server's state.
func TestServiceUsers(t *testing.T) {
	for _, tc := range []struct {
		file          string
		must, mustNot []string
	}{
		{"systemd/vigil-agent.service",
			[]string{"\nUser=vigil\n", "\nGroup=vigil\n", "\nInaccessiblePaths=-/var/lib/vigil-server\n",
				// The plugins' Landlock sandbox (not in @system-service on systemd 252).
				"\nSystemCallFilter=landlock_create_ruleset landlock_add_rule landlock_restrict_self\n"}, nil},
		{"systemd/vigil-server.service",
			[]string{"\nUser=vigil-server\n", "\nGroup=vigil-server\n", "\nStateDirectory=vigil-server\n"},
			[]string{"\nUser=vigil\n", "\nGroup=vigil\n"}},
		{"scripts/deb/server-postinst",
			[]string{"getent passwd vigil-server ", "addgroup --system --quiet vigil-server\n",
				"--ingroup vigil-server --home \"$STATE\"", "--gecos \"Vigil server\" vigil-server\n",
				"STATE=/var/lib/vigil-server\n", "StateDirectory="},
			// No recursive chown (lintian: recursive-privilege-change): systemd re-owns the state.
			[]string{"getent passwd vigil ", "--ingroup vigil ", " vigil\n", "chown -R"}},
		{"scripts/rpm/server-pre",
			[]string{"groupadd -r vigil-server\n", "useradd -r -g vigil-server -d /var/lib/vigil-server ", " vigil-server\n"},
			[]string{"getent passwd vigil ", "-g vigil ", " vigil\n"}},
		{"scripts/rpm/server-post",
			[]string{"StateDirectory="}, []string{"chown -R"}},
		{"scripts/deb/agent-postinst",
			[]string{"getent passwd vigil ", "--ingroup vigil ", "install -d -m 0750 -o vigil -g vigil \"$STATE\""},
			[]string{"vigil-server"}},
		{"scripts/rpm/agent-pre",
			[]string{"groupadd -r vigil\n", "useradd -r -g vigil -d /var/lib/vigil "}, []string{"vigil-server"}},
		// No recursive chown as root of the tree the agent writes (hard links); the unit's
		// StateDirectory= re-owns it.
		{"scripts/rpm/agent-post", []string{"install -d -m 0750 -o vigil -g vigil \"$STATE\""}, []string{"chown -R"}},
		{"scripts/deb/agent-postinst", nil, []string{"chown -R"}},
		{"offline/install.sh", []string{"install -d -m 0750 -o vigil -g vigil \"$STATE\""}, []string{"chown -R"}},
	} {
		b, err := Read(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, m := range tc.must {
			if !strings.Contains(s, m) {
				t.Errorf("%s lacks %q", tc.file, m)
			}
		}
		for _, m := range tc.mustNot {
			if strings.Contains(s, m) {
				t.Errorf("%s has %q", tc.file, m)
			}
		}
	}
	if r := string(README()); !strings.Contains(r, "`vigil-server`") || !strings.Contains(r, "InaccessiblePaths=-/var/lib/vigil-server") {
		t.Error("README.md does not document the server's user and the agent's InaccessiblePaths")
	}
}
