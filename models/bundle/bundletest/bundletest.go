// Package bundletest holds test helpers for model bundles.
package bundletest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/vigil-edge/vigil/models/bundle"
)

// Same fails t unless the bundle at got matches the committed bundle want
// (Diff), and logs both digests.
func Same(t *testing.T, want, got string) {
	t.Helper()
	diffs, err := Diff(want, got)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Errorf("retrained %s: %s", filepath.Base(want), d)
	}
	wd, _ := bundle.Digest(want)
	gd, _ := bundle.Digest(got)
	t.Logf("%s: committed digest %s, retrained %s", filepath.Base(want), wd, gd)
}

// Diff lists how the bundle at got differs from the bundle at want. The
// model must be the same byte for byte (the graph and its constants are
// computed in Go), and so must the manifest, except that its threshold and
// metrics may differ by a relative 1e-4: they come from ONNX Runtime's
// scores, whose float arithmetic may differ in the last bits on another CPU.
func Diff(want, got string) ([]string, error) {
	w, err := bundle.Read(want, bundle.DefaultLimits())
	if err != nil {
		return nil, err
	}
	g, err := bundle.Read(got, bundle.DefaultLimits())
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(g.Model, w.Model) {
		return []string{fmt.Sprintf("the model differs (%d bytes, committed %d)", len(g.Model), len(w.Model))}, nil
	}
	var diffs []string
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-4*max(math.Abs(a), math.Abs(b)) }
	wm, gm := w.Manifest, g.Manifest
	if !near(gm.Threshold, wm.Threshold) {
		diffs = append(diffs, fmt.Sprintf("threshold %v, committed %v", gm.Threshold, wm.Threshold))
	}
	for k, v := range wm.Metrics {
		if gv, ok := gm.Metrics[k]; !ok || !near(gv, v) {
			diffs = append(diffs, fmt.Sprintf("metric %s %v (present: %v), committed %v", k, gv, ok, v))
		}
	}
	for k := range gm.Metrics {
		if _, ok := wm.Metrics[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("metric %s not in the committed bundle", k))
		}
	}
	gm.Threshold, gm.Metrics = wm.Threshold, wm.Metrics
	gm.ModelSHA256 = wm.ModelSHA256 // the model was compared above
	if !reflect.DeepEqual(gm, wm) {
		diffs = append(diffs, fmt.Sprintf("manifest %+v, committed %+v", gm, wm))
	}
	return diffs, nil
}

// WriteUnchecked writes model and m as the bundle dir/NAME-VERSION.vgb
// without validating the manifest (Pack would refuse an invalid one), with
// one syntactically valid signature: the bundle a careless or hostile signer
// could produce, for testing what readers refuse. It sets m.ModelSHA256.
func WriteUnchecked(t testing.TB, dir string, model []byte, m *bundle.Manifest) string {
	t.Helper()
	m.ModelSHA256 = bundle.SHA256Hex(model)
	st := bundle.Statement{Type: bundle.StatementType, PredicateType: bundle.PredicateType, Predicate: m,
		Subject: []bundle.Subject{{Name: bundle.ModelFile, Digest: map[string]string{"sha256": m.ModelSHA256}}}}
	payload, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	env, err := json.Marshal(bundle.Envelope{PayloadType: bundle.PayloadType, Payload: base64.StdEncoding.EncodeToString(payload),
		Signatures: []bundle.Signature{{KeyID: "test", Sig: "c2ln"}}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundle.PackEnvelope(&buf, model, env, m.Created); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, m.FileName())
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
