package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

// TestMainEscapesErrors: an error that carries text others control (an API
// error body from the server or whatever answers in its place, a file name)
// reaches stderr on one line with its control characters (ESC, newline,
// BEL, C1 CSI) and bidi controls escaped: printed raw, it could clear or
// retitle the operator's terminal, forge a line ("vigilctl: ..." of its
// choosing) or reverse what the line shows. The exit status still follows
// the error (3 for 401 and 403).
func TestMainEscapesErrors(t *testing.T) {
	const hostile = "\x1b]0;pwned\x07\x1b[2J\nvigilctl: all good \u009b31m x\u202egpj.exe"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusInternalServerError
		if r.Header.Get("Authorization") == "Bearer forbidden" {
			status = http.StatusForbidden
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": hostile})
	}))
	t.Cleanup(srv.Close)
	t.Setenv("VIGIL_CA", "")
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
	}{
		{"API error body", []string{"--server", srv.URL, "--token", "x", "agents", "list"}, 1},
		{"API error body, 403", []string{"--server", srv.URL, "--token", "forbidden", "agents", "list"}, 3},
		{"file name", []string{"--server", srv.URL, "--token", "@" + filepath.Join(t.TempDir(), hostile), "agents", "list"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), tc.args, &out, &errb)
			got := errb.String()
			if code != tc.wantCode {
				t.Fatalf("exit status %d, want %d (stderr %q)", code, tc.wantCode, got)
			}
			if !strings.HasPrefix(got, "vigilctl: ") || strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
				t.Fatalf("stderr %q: want one line starting vigilctl: ", got)
			}
			if i := strings.IndexAny(got[:len(got)-1], "\x1b\x07\n\r\u009b\u202e"); i >= 0 {
				t.Fatalf("stderr %q: a raw control character at byte %d", got, i)
			}
			for _, want := range []string{`\x1b]0;pwned\x07\x1b[2J\x0avigilctl: all good \x9b31m x\u{202e}gpj.exe`} {
				if !strings.Contains(got, want) {
					t.Fatalf("stderr %q: want it to contain %q", got, want)
				}
			}
		})
	}
}
