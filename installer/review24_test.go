package installer

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

// TestScriptsTempFiles: scripts run as root create every temporary path
// with mktemp. A name derived from a mktemp file (e.g. "$tmp.old") lies in
// the shared /tmp under a name another user can predict and create first (a
// link, or a file of theirs that root then writes and reads back).
func TestScriptsTempFiles(t *testing.T) {
	assign := regexp.MustCompile(`(?m)^\s*(?:local\s+)?([A-Za-z_][A-Za-z0-9_]*)=\$\(mktemp(?:\s+[^)-][^)]*)?\)`)
	err := fs.WalkDir(FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasPrefix(p, "scripts/") || strings.HasSuffix(p, ".sh")) {
			return err
		}
		b, err := fs.ReadFile(FS(), p)
		if err != nil {
			return err
		}
		s := string(b)
		for _, m := range assign.FindAllStringSubmatch(s, -1) {
			v := regexp.QuoteMeta(m[1])
			derived := regexp.MustCompile(`\$(?:` + v + `|\{` + v + `\})"?[./-]`)
			if loc := derived.FindStringIndex(s); loc != nil {
				t.Errorf("%s: %q derives a path from the mktemp file $%s", p, s[loc[0]:min(loc[1]+8, len(s))], m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
