package packaging

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const sumA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" // sha256 of ""

// FuzzParseChecksums: the SHA256SUMS reader never panics; what it accepts
// is one entry per line, each a lowercase hex digest and a plain file name
// found once, and it reads back the same from the text WriteChecksums
// would write for it.
func FuzzParseChecksums(f *testing.F) {
	for _, s := range []string{
		sumA + "  vigil-agent_1.0.0_amd64.deb\n" + sumA + "  vigil-server_1.0.0_amd64.deb\n",
		sumA + "  a\n",
		sumA + " *a\n",
		sumA + "  a\r\n",
		sumA + "  a",
		sumA + "  ..\n",
		sumA + "  ../etc/passwd\n",
		sumA + "  a\n\n",
		strings.ToUpper(sumA) + "  a\n",
		sumA + "  a\n" + sumA + "  a\n",
		sumA + "  a b  c\n",
		"\n",
		"",
		sumA + "  a\n" + strings.Repeat("x", 70000) + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sums, err := parseChecksums(data)
		if err != nil {
			if sums != nil {
				t.Fatalf("error %v with entries", err)
			}
			return
		}
		if len(sums) == 0 || len(sums) != strings.Count(string(data), "\n") {
			t.Fatalf("%d entries from %d lines", len(sums), strings.Count(string(data), "\n"))
		}
		var b strings.Builder
		names := map[string]bool{}
		for _, c := range sums {
			if !validSum(c.SHA256) || !validName(c.Name) || names[c.Name] {
				t.Fatalf("accepted entry %+v", c)
			}
			if filepath.Join("/rel", c.Name) != "/rel/"+c.Name {
				t.Fatalf("name %q leaves the release folder", c.Name)
			}
			names[c.Name] = true
			fmt.Fprintf(&b, "%s  %s\n", c.SHA256, c.Name)
		}
		again, err := parseChecksums([]byte(b.String()))
		if err != nil || !slices.Equal(again, sums) {
			t.Fatalf("canonical text reads back as %v, %v", again, err)
		}
	})
}

// TestVerifyChecksumsStrict: every line of SHA256SUMS is verified or is an
// error. The old reader stopped at a line longer than bufio.Scanner's 64
// KiB without an error (the lines after it went unverified) and took ".."
// for a file name.
func TestVerifyChecksumsStrict(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sums, want string // want "" = verified
	}{
		{"good", sumA + "  a\n", ""},
		{"long line hides a bad sum", sumA + "  a\n" + strings.Repeat("x", 70000) + "\n" + sumA + "  b\n", "line 2"},
		{"dot dot", sumA + "  a\n" + sumA + "  ..\n", "line 2"},
		{"binary mode", sumA + " *a\n", "line 1"},
		{"uppercase", strings.ToUpper(sumA) + "  a\n", "line 1"},
		{"twice", sumA + "  a\n" + sumA + "  a\n", `"a" listed twice`},
		{"no final newline", sumA + "  a", "newline"},
		{"empty", "", "empty"},
		{"tampered", sumA + "  b\n", "SHA256SUMS says"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, ChecksumsFile), []byte(tc.sums), 0o644); err != nil {
				t.Fatal(err)
			}
			err := VerifyChecksums(dir)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("VerifyChecksums: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("VerifyChecksums = %.200v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
