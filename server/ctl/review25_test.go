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
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
)

// TestExportControls: `vigilctl findings export` copied the server's JSON
// lines to stdout as they came. encoding/json leaves DEL, the C1 controls
// (U+009B is CSI) and the bidi controls raw, so a file path or summary from
// a sensor (a file name any local user on a watched host can choose) drove
// the operator's terminal, as `--json` did before session 18. The lines are
// now written with those runes as \u escapes, also when a rune is split
// across reads, and still decode to the same findings.
func TestExportControls(t *testing.T) {
	evil := "/srv/share/\u009b2J\u202eexe.doc\x7f é"
	line, _ := json.Marshal(map[string]any{"id": 1, "summary": "scan\u0085", "context": map[string]string{"path": evil}})
	body := append(append(append([]byte{}, line...), '\n'), append(line, '\n')...)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/findings/export" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		// One byte at a time: runes are split across the client's reads.
		for i := range body {
			w.Write(body[i : i+1])
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &env{}
	code, out, errs := e.run(t, map[string]string{"VIGIL_SERVER": srv.URL, "VIGIL_TOKEN": "t", "VIGIL_CA": ca}, "findings", "export")
	if code != 0 {
		t.Fatalf("export: %d %s", code, errs)
	}
	if r, ok := terminalSafe(out); !ok {
		t.Errorf("%U reaches the terminal:\n%q", r, out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), out)
	}
	for _, l := range lines {
		var f struct {
			Summary string            `json:"summary"`
			Context map[string]string `json:"context"`
		}
		if err := json.Unmarshal([]byte(l), &f); err != nil || f.Context["path"] != evil || f.Summary != "scan\u0085" {
			t.Errorf("line decodes to %+v (%v), want the path %q", f, err, evil)
		}
	}

	// The writer alone, fed byte by byte, holds back split runes.
	var buf bytes.Buffer
	w := &jsonControlWriter{w: &buf}
	for i := range body {
		if n, err := w.Write(body[i : i+1]); n != 1 || err != nil {
			t.Fatalf("write: %d %v", n, err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if buf.String() != out {
		t.Errorf("byte-by-byte writer gives\n%q\nwant\n%q", buf.String(), out)
	}
}

// TestInspectKeyIDEscaped: `model inspect` is the command for a bundle that
// is not verified yet, and it printed each signature's keyid as the file
// had it. A DSSE keyid is any string (only the signature is syntax-checked),
// so a crafted bundle drove the terminal of the admin inspecting it.
func TestInspectKeyIDEscaped(t *testing.T) {
	model := []byte("not really onnx")
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := &bundle.Manifest{Name: "nf", Detector: "netflow", Version: 3, FeatureSet: "netflow/v1", Dim: 4, Threshold: 1,
		Created: created, Expires: created.AddDate(1, 0, 0), Quantization: bundle.QuantInt8Dyn}
	dsse, err := bundle.NewEnvelope(model, m)
	if err != nil {
		t.Fatal(err)
	}
	dsse.Signatures = append(dsse.Signatures, bundle.Signature{KeyID: "k\x1b]0;pwned\x07\x1b[2J\u202e\u009b", Sig: "c2ln"})
	envJSON, err := json.Marshal(dsse)
	if err != nil {
		t.Fatal(err)
	}
	var tarball bytes.Buffer
	if err := bundle.PackEnvelope(&tarball, model, envJSON, created); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nf-3.vgb")
	if err := os.WriteFile(path, tarball.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &env{}
	code, out, errs := e.run(t, map[string]string{}, "model", "inspect", path)
	if code != 0 {
		t.Fatalf("inspect: %d %s", code, errs)
	}
	if r, ok := terminalSafe(out); !ok {
		t.Errorf("%U reaches the terminal:\n%q", r, out)
	}
	if !strings.Contains(out, `keyid k\x1b]0;pwned\x07\x1b[2J\u{202e}\x9b`) {
		t.Errorf("keyid not shown escaped:\n%s", out)
	}
}
