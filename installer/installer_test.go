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
