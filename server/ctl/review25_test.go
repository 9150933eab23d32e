package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/eval"
	"github.com/vigil-edge/vigil/test/trafficgen"
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

// TestModelFlagsCheckedBeforeWork: flags that make the bundle invalid
// (name, version, validity) or the evaluation impossible (--fpr) must fail
// at once, before any capture is read, not after a training run of minutes
// or hours (the manifest used to be validated only when the bundle was
// written). No ONNX Runtime is needed: every case fails before the model.
func TestModelFlagsCheckedBeforeWork(t *testing.T) {
	dir := t.TempDir()
	capFile := filepath.Join(dir, "b.pcap") // not a capture: reading it would fail differently
	if err := os.WriteFile(capFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "no.vgb")
	train := []string{"model", "train", "--feature-set", "nethost/v1", "--benign", capFile, "--out", dir}
	eval := []string{"model", "eval", "--bundle", missing, "--benign", capFile, "--attack", capFile, "--out", dir}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"train name with capitals", append(train, "--name", "Site A"), `--name "Site A"`},
		{"train version 0", append(train, "--version", "0"), "--version 0"},
		{"train validity 0", append(train, "--validity", "0s"), "--validity 0s"},
		{"train validity negative", append(train, "--validity", "-24h"), "--validity -24h0m0s"},
		{"eval fpr above 1", append(eval, "--fpr", "1.5"), "--fpr 1.5"},
		{"eval fpr negative", append(eval, "--fpr", "-0.01"), "--fpr -0.01"},
		{"eval fpr 0", append(eval, "--fpr", "0"), "--fpr 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := Main(context.Background(), c.args, &out, &errb); code == 0 || !strings.Contains(errb.String(), c.want) {
				t.Errorf("exit %d, stderr %q, want an error containing %q", code, errb.String(), c.want)
			}
			if strings.Contains(errb.String(), "reading captures") || strings.Contains(errb.String(), "skipped") {
				t.Errorf("captures were read before the flag was refused: %q", errb.String())
			}
		})
	}
}

// TestEvalAttackerOnce: a lab truth file names the attacker once per attack
// it ran, and every lab attack comes from the same host (10.99.0.66). The
// report's attacker cell listed that address once per attack ("10.99.0.66,
// 10.99.0.66, ..."); each attacker is listed once.
func TestEvalAttackerOnce(t *testing.T) {
	if os.Getenv("ONNXRUNTIME_LIB") == "" {
		t.Skip("ONNXRUNTIME_LIB not set: model train and eval need ONNX Runtime")
	}
	dir := t.TempDir()
	benign := writeBenign(t, dir, 3, 300, 60, 10*time.Second)
	out := filepath.Join(dir, "out")
	runCtl(t, "model", "train", "--feature-set", "nethost/v1", "--benign", benign, "--epochs", "1", "--name", "t", "--out", out)
	attacks := filepath.Join(dir, "attacks")
	if err := os.Mkdir(attacks, 0o755); err != nil {
		t.Fatal(err)
	}
	info := writeCapture(t, filepath.Join(attacks, "scan.pcap"), trafficgen.Config{Seed: 9, Sessions: 60, Duration: 10 * time.Second, Scan: true})
	span := func(name string) string {
		return fmt.Sprintf(`{"name":%q,"command":"synthetic","attacker":%q,"start":%q,"end":%q}`, name, info.Scanner.String(),
			info.ScanStart.Format(time.RFC3339Nano), info.ScanEnd.Format(time.RFC3339Nano))
	}
	truth := filepath.Join(dir, "truth.json")
	if err := os.WriteFile(truth, []byte(`{"capture":"scan.pcap","attacks":[`+span("nmap")+","+span("hping3")+`]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var rep eval.Report
	js := runCtl(t, "model", "eval", "--bundle", filepath.Join(out, "t-1.vgb"), "--benign", benign, "--attack", attacks,
		"--labels", truth, "--out", filepath.Join(dir, "eval"), "--json")
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	if len(rep.Attacks) != 1 || rep.Attacks[0].Attacker != info.Scanner.String() || !rep.Attacks[0].Labelled {
		t.Errorf("attacks %+v, want the attacker %s once", rep.Attacks, info.Scanner)
	}
}

// TestTrainFindsORTFirst: model train loaded ONNX Runtime only to calibrate
// the trained model, so a vigilctl without the library (or a wrong --ort)
// read every capture and trained for as long as that takes before it
// failed. ONNX Runtime is loaded once per process, so the check runs in a
// child process with a library path that does not exist.
func TestTrainFindsORTFirst(t *testing.T) {
	if os.Getenv("VIGIL_R25_CHILD") == "1" {
		var out, errb bytes.Buffer
		code := Main(context.Background(), []string{"model", "train", "--feature-set", "nethost/v1", "--benign", os.Getenv("VIGIL_R25_BENIGN"),
			"--epochs", "1", "--out", t.TempDir(), "--ort", "/nonexistent/libonnxruntime.so"}, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), "/nonexistent/libonnxruntime.so") || strings.Contains(errb.String(), "reading captures") {
			t.Fatalf("exit %d, stderr %q: want the library refused before any capture is read", code, errb.String())
		}
		return
	}
	dir := t.TempDir()
	benign := writeBenign(t, dir, 3, 300, 60, 10*time.Second)
	cmd := exec.Command(os.Args[0], "-test.run=^TestTrainFindsORTFirst$", "-test.count=1")
	cmd.Env = append(os.Environ(), "VIGIL_R25_CHILD=1", "VIGIL_R25_BENIGN="+benign, "ONNXRUNTIME_LIB=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}
