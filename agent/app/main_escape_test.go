package app

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestMainEscapesErrors: an error that carries text others control (here a
// file name, as from a watched folder or an admin's listing) reaches stderr
// on one line with its control characters (ESC, newline, BEL, C1 CSI) and
// bidi controls escaped, for errors and for exitErrors (whose status is
// kept): printed raw, it could clear or retitle the operator's terminal,
// forge a line of its choosing or reverse what the line shows.
func TestMainEscapesErrors(t *testing.T) {
	const hostile = "\x1b]0;pwned\x07\x1b[2J\nvigil-agent: all good \u009b31m x\u202egpj.exe"
	const escaped = `\x1b]0;pwned\x07\x1b[2J\x0avigil-agent: all good \x9b31m x\u{202e}gpj.exe`
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
	}{
		{"error", []string{"status", "--config", filepath.Join(dir, hostile)}, 1},
		{"exitError", []string{"record", "--dir", dir, "--out", filepath.Join(dir, hostile)}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), tc.args, &out, &errb)
			got := errb.String()
			if code != tc.wantCode {
				t.Fatalf("exit status %d, want %d (stderr %q)", code, tc.wantCode, got)
			}
			if !strings.HasPrefix(got, "vigil-agent: ") || strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
				t.Fatalf("stderr %q: want one line starting vigil-agent: ", got)
			}
			if i := strings.IndexAny(got[:len(got)-1], "\x1b\x07\n\r\u009b\u202e"); i >= 0 {
				t.Fatalf("stderr %q: a raw control character at byte %d", got, i)
			}
			if !strings.Contains(got, escaped) {
				t.Fatalf("stderr %q: want it to contain %q", got, escaped)
			}
		})
	}
}
