package bundletest

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
)

func TestDiff(t *testing.T) {
	dir := t.TempDir()
	base := bundle.Manifest{Name: "m", Detector: "netflow", Version: 1, FeatureSet: "nethost/v7", Dim: 2, Threshold: 0.5,
		Metrics: map[string]float64{"fpr": 0.001}, Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Expires: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), Quantization: bundle.QuantInt8Static}
	write := func(sub string, model []byte, edit func(*bundle.Manifest)) string {
		t.Helper()
		m := base
		m.Metrics = map[string]float64{"fpr": 0.001}
		edit(&m)
		p, err := bundle.WriteFile(t.TempDir(), model, &m)
		if err != nil {
			t.Fatal(sub, err)
		}
		return p
	}
	model := []byte("model bytes")
	want := write("want", model, func(*bundle.Manifest) {})
	cases := []struct {
		name  string
		model []byte
		edit  func(*bundle.Manifest)
		diff  string // "" = none
	}{
		{"same", model, func(*bundle.Manifest) {}, ""},
		{"threshold in the last bits", model, func(m *bundle.Manifest) { m.Threshold *= 1 + 1e-7 }, ""},
		{"threshold", model, func(m *bundle.Manifest) { m.Threshold = 0.6 }, "threshold 0.6"},
		{"metric", model, func(m *bundle.Manifest) { m.Metrics["fpr"] = 0.002 }, "metric fpr"},
		{"extra metric", model, func(m *bundle.Manifest) { m.Metrics["tpr"] = 1 }, "metric tpr not in"},
		{"model", []byte("other bytes"), func(*bundle.Manifest) {}, "the model differs"},
		{"manifest", model, func(m *bundle.Manifest) { m.Dim = 3 }, "manifest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			diffs, err := Diff(want, write(c.name, c.model, c.edit))
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(diffs, "; ")
			if c.diff == "" && got != "" || c.diff != "" && !strings.Contains(got, c.diff) {
				t.Errorf("diffs %q, want %q", got, c.diff)
			}
		})
	}
	if _, err := Diff(want, dir+"/missing.vgb"); err == nil {
		t.Error("a missing bundle gives no error")
	}
}
