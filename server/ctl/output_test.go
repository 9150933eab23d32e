package ctl

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

func TestSafeText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"sensor-1", "sensor-1"},
		{"héllo wörld ✓", "héllo wörld ✓"},
		{"a\x1b[2Jb", `a\x1b[2Jb`},
		{"x\ry", `x\x0dy`},
		{"tab\there\nnew", `tab\x09here\x0anew`},
		{"\x1b]8;;http://evil/\x07click\x1b]8;;\x07", `\x1b]8;;http://evil/\x07click\x1b]8;;\x07`},
		{"del\x7f c1\u009b2J", `del\x7f c1\x9b2J`},
		{"bidi \u202Egnp.exe\u202C \u2066x\u2069 \u200F", `bidi \u{202e}gnp.exe\u{202c} \u{2066}x\u{2069} \u{200f}`},
		{"line\u2028para\u2029", `line\u{2028}para\u{2029}`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`},
	} {
		if got := safeText(c.in); got != c.want {
			t.Errorf("safeText(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// terminalSafe reports the first rune of s a terminal would interpret (other than the newlines
// that end lines).
func terminalSafe(s string) (rune, bool) {
	for _, r := range s {
		if r == '\n' {
			continue
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r) {
			return r, false
		}
	}
	return 0, true
}

// TestSensorTextEscaped: text an agent controls (hostname, finding summary, rollout state and
// reason) reaches the operator's terminal escaped, in tables and in the other lines.
func TestSensorTextEscaped(t *testing.T) {
	const evil = "x\x1b]0;pwned\x07\r\x1b[2K\u202Eok\u009b"
	answers := map[string]any{
		"/api/v1/agents": map[string]any{"agents": []map[string]any{{"id": "a-1", "entity": "acme", "hostname": evil, "version": evil}}},
		"/api/v1/findings": map[string]any{"findings": []map[string]any{{"id": 1, "agent_id": "a-1", "entity": "acme",
			"detector": "netflow", "severity": "high", "summary": evil}}},
		"/api/v1/rollouts/status": []map[string]any{{"id": "r-1", "model": map[string]any{"name": "nf", "version": 2},
			"state": "halted", "state_reason": "halted automatically: " + evil, "shadow": true, "halt_factor": 2,
			"shadow_totals": map[string]any{"agents": 1, "verdict": map[string]any{"reason": evil}},
			"counts":        map[string]int{evil: 1},
			"agents":        []map[string]any{{"agent_id": "a-1", "entity": "acme", "state": evil, "reason": evil}}}},
		"/api/v1/agents/a-1/revoke": map[string]any{"id": "a-1", "entity": evil},
		"/api/v1/findings/1/triage": map[string]any{"status": evil, "assignee": evil},
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &env{}
	v := map[string]string{"VIGIL_SERVER": srv.URL, "VIGIL_TOKEN": "t", "VIGIL_CA": ca}
	for _, args := range [][]string{
		{"agents", "list"},
		{"agents", "revoke", "a-1"},
		{"findings", "list", "--limit", "1"},
		{"findings", "triage", "1", "--status", "resolved"},
		{"rollout", "status"},
	} {
		code, out, errs := e.run(t, v, args...)
		if code != 0 {
			t.Fatalf("%v: %d %s", args, code, errs)
		}
		if r, ok := terminalSafe(out); !ok {
			t.Errorf("%v: %U reaches the terminal:\n%q", args, r, out)
		}
		if !strings.Contains(out, `\x1b]0;pwned\x07\x0d\x1b[2K\u{202e}ok\x9b`) {
			t.Errorf("%v: the text is not shown escaped:\n%s", args, out)
		}
	}
}

// TestPrintJSONControls: --json output carries no raw DEL, C1 or bidi
// control from a sensor's text (encoding/json leaves them as they are), and
// still decodes to the same strings.
func TestPrintJSONControls(t *testing.T) {
	in := map[string]string{
		"summary": "scan\u009b2J from\u202eevil\u2066 \x7f done",
		"path":    "/srv/share/\u0085line\ttab\nnew",
		"plain":   "héllo ✓",
	}
	var out bytes.Buffer
	a := &App{Stdout: &out}
	if err := a.PrintJSON(in); err != nil {
		t.Fatal(err)
	}
	doc := out.String()
	for _, r := range doc {
		if r != '\n' && unsafeRune(r) {
			t.Fatalf("raw control %U in output:\n%q", r, doc)
		}
	}
	for _, want := range []string{`\u009b`, `\u202e`, `\u2066`, `\u007f`, `\u0085`, `\t`, `\n`, "héllo ✓"} {
		if !strings.Contains(doc, want) {
			t.Errorf("output lacks %s:\n%s", want, doc)
		}
	}
	var back map[string]string
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, doc)
	}
	for k, v := range in {
		if back[k] != v {
			t.Errorf("%s decodes to %q, want %q", k, back[k], v)
		}
	}
	// A document without such runes is written unchanged.
	if plain := []byte("{\n  \"a\": \"b\"\n}\n"); !bytes.Equal(escapeJSONControls(plain), plain) {
		t.Error("escapeJSONControls changed a plain document")
	}
}
