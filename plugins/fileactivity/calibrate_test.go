package fileactivity

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/calib"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/selfcal"
)

func packedELF(path string, ts int64) event.File {
	return event.File{TimeNs: ts, Size: 140000, Mode: 0o755, Op: event.FileCreate, Root: "/srv/a", Path: path,
		Flags:     event.FileFlagSampled | event.FileFlagExecutable | event.FileFlagExecParsed | event.FileFlagHeadTail,
		SampleLen: 65536, Magic: event.MagicELF, Entropy: 7.6, ZeroFrac: 0.02, PrintableFrac: 0.37, HighFrac: 0.49,
		ChiSquare: 900, ExecFlags: event.ExecELF, Sections: 29, Imports: 110, Libraries: 1,
		MaxSectionEntropy: 7.99, ExecSectionEntropy: 7.99}
}

// TestCalibration: no anomaly during the grace period (not even for a packed
// ELF in it); a batch spanning its end is split there; the threshold becomes
// the larger of the model's and the quantile of the scores observed (checked
// against a detector without calibration on the same events); after it,
// exactly the events above that threshold are anomalies; Health reports it.
func TestCalibration(t *testing.T) {
	lib := ortLib(t)
	ctx := context.Background()
	const grace = 10 * time.Second
	q := 0.999 // the early packed ELF, inside the grace period, raises the threshold
	var evs []event.File
	for i := range 60 {
		evs = append(evs, textEvent("/srv/a", i, int64(i)*int64(160*time.Millisecond)))
	}
	evs = append(evs, packedELF("/srv/a/bin/early", int64(5*time.Second)))
	end := len(evs) // events from here on are after the grace period
	for i := range 20 {
		evs = append(evs, textEvent("/srv/a", 60+i, int64(grace)+int64(i)*int64(200*time.Millisecond)))
	}
	evs = append(evs, packedELF("/srv/a/bin/late", int64(grace)+int64(2*time.Second)))
	// Events in stream order.
	for i := 1; i < len(evs); i++ {
		for j := i; j > 0 && evs[j].TimeNs < evs[j-1].TimeNs; j-- {
			evs[j], evs[j-1] = evs[j-1], evs[j]
		}
	}
	end = 0
	for end < len(evs) && evs[end].TimeNs-evs[0].TimeNs < int64(grace) {
		end++
	}

	ref := New(nil, Options{ORTLib: lib})
	defer ref.Close()
	cal := New(nil, Options{ORTLib: lib, Calibrate: grace, CalibrateQuantile: q})
	defer cal.Close()
	for _, d := range []*Detector{ref, cal} {
		if _, err := d.LoadModel(ctx, baseline(t)); err != nil {
			t.Fatal(err)
		}
	}
	own := ref.model.Load().thr
	rr, err := ref.ScoreFiles(ctx, evs)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]float32, len(evs))
	for i, r := range rr.Scores {
		raw[i] = r * own
	}
	if h := cal.Health(ctx); h.Stats["calibrated_fileactivity/v1"] != 0 || h.Message == "model active" {
		t.Fatalf("before any event: %q %v", h.Message, h.Stats)
	}
	res, err := cal.ScoreFiles(ctx, evs) // one batch across the end of the grace period
	if err != nil {
		t.Fatal(err)
	}
	local, err := calib.Quantile(raw[:end], q)
	if err != nil {
		t.Fatal(err)
	}
	m := cal.model.Load()
	want := max(own, float32(local))
	if !m.calibrated || m.observing || m.calSamples != end || math.Abs(float64(m.thr-want)) > 1e-6*float64(want) {
		t.Fatalf("calibrated %v observing %v samples %d (want %d) threshold %g (want %g: own %g, local %g)",
			m.calibrated, m.observing, m.calSamples, end, m.thr, want, own, local)
	}
	if !(m.thr > own) {
		t.Fatalf("threshold %g not raised above the model's %g by an in-grace packed ELF", m.thr, own)
	}
	var wantIdx []uint64
	for i := end; i < len(evs); i++ {
		if raw[i] > m.thr*(1+1e-6) {
			wantIdx = append(wantIdx, uint64(i))
		} else if raw[i] > m.thr*(1-1e-6) {
			t.Fatalf("event %d scores at the threshold (%g vs %g): the check would be ambiguous", i, raw[i], m.thr)
		}
	}
	var got []uint64
	for _, a := range res.Anomalies {
		got = append(got, a.Index)
	}
	if len(got) != len(wantIdx) {
		t.Fatalf("anomalies at %v, want %v (threshold %g)", got, wantIdx, m.thr)
	}
	for i := range got {
		if got[i] != wantIdx[i] || got[i] < uint64(end) {
			t.Fatalf("anomalies at %v, want %v", got, wantIdx)
		}
	}
	h := cal.Health(ctx)
	if h.Stats["calibrated_fileactivity/v1"] != 1 || h.Stats["calibration_samples_fileactivity/v1"] != uint64(end) ||
		h.Stats[selfcal.BitsPrefix+m.info.Digest] != uint64(math.Float32bits(m.calLocal)) || h.Message != "model active" {
		t.Fatalf("health after calibration: %q %v", h.Message, h.Stats)
	}
	t.Logf("%d events observed, own threshold %.5f, local q%g %.5f, active %.5f; %d anomalies after", end, own, q, local, m.thr, len(got))
}

// TestCalibrationRestored: a model whose digest is restored starts
// calibrated (no grace period); another observes, flagging at its own
// threshold: the restored entry says the sensor's grace period is over.
// Without any restored entry, the first model observes silently.
func TestCalibrationRestored(t *testing.T) {
	lib := ortLib(t)
	ctx := context.Background()
	probe := New(nil, Options{ORTLib: lib})
	defer probe.Close()
	info, err := probe.LoadModel(ctx, baseline(t))
	if err != nil {
		t.Fatal(err)
	}
	evs := []event.File{textEvent("/srv/a", 0, 1e9), packedELF("/srv/a/bin/x", 2e9)}
	for _, tc := range []struct {
		name     string
		restored map[string]float32
		flagged  bool
	}{
		{"restored", map[string]float32{info.Digest: info.Threshold * 1.01}, true},
		{"other digest", map[string]float32{"sha256:" + strings.Repeat("ab", 32): 1}, true},
		{"none", nil, false},
	} {
		d := New(nil, Options{ORTLib: lib, Calibrate: time.Hour, Calibrated: tc.restored})
		if _, err := d.LoadModel(ctx, baseline(t)); err != nil {
			t.Fatal(err)
		}
		res, err := d.ScoreFiles(ctx, evs)
		if err != nil {
			t.Fatal(err)
		}
		if (len(res.Anomalies) > 0) != tc.flagged {
			t.Errorf("%s: %d anomalies (scores %v), want flagged %v", tc.name, len(res.Anomalies), res.Scores, tc.flagged)
		}
		m := d.model.Load()
		if restored := tc.name == "restored"; restored != m.calibrated || restored == m.observing {
			t.Errorf("%s: calibrated %v observing %v", tc.name, m.calibrated, m.observing)
		}
		if want := info.Threshold; tc.name == "restored" && m.thr != want*1.01 || tc.name != "restored" && m.thr != want {
			t.Errorf("%s: threshold %g (model's %g)", tc.name, m.thr, want)
		}
		_ = d.Close()
	}
}

// TestCalibrationIgnoresProbe: the probe batch (sdk.ProbeFiles) that the
// agent's updater scores after loading a model is scored like any batch, but
// per-sensor calibration learns nothing from it. Its events are dated 2020:
// they used to start the new model's grace period, so the next real event
// ended it at once, and the model was "calibrated" on the 16 probe scores.
func TestCalibrationIgnoresProbe(t *testing.T) {
	lib := ortLib(t)
	ctx := context.Background()
	const grace = 10 * time.Second
	d := New(nil, Options{ORTLib: lib, Calibrate: grace, CalibrateQuantile: 0.999})
	defer d.Close()
	if _, err := d.LoadModel(ctx, baseline(t)); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC).UnixNano()
	at := func(i int, sec float64) event.File { return textEvent("/srv/a", i, base+int64(sec*1e9)) }
	score := func(evs ...event.File) {
		t.Helper()
		if _, err := d.ScoreFiles(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	// The sensor's grace period, then a model update: the new model observes.
	for i := range 12 {
		score(at(i, float64(i)))
	}
	if m := d.model.Load(); !m.calibrated {
		t.Fatal("the first model is not calibrated after its grace period")
	}
	if _, err := d.LoadModel(ctx, baseline(t)); err != nil {
		t.Fatal(err)
	}
	res, err := d.ScoreFiles(ctx, sdk.ProbeFiles())
	if err != nil || len(res.Scores) != len(sdk.ProbeFiles()) {
		t.Fatalf("probe: %v, %d scores", err, len(res.Scores))
	}
	score(at(20, 13), at(21, 14))
	if m := d.model.Load(); !m.observing || m.calibrated {
		t.Fatalf("after the probe and 1 s of events: observing %v calibrated %v (%d samples)", m.observing, m.calibrated, m.calSamples)
	}
	score(at(22, 20), at(23, 24))
	m := d.model.Load()
	if !m.calibrated || m.calSamples != 3 {
		t.Fatalf("after the grace period: calibrated %v on %d samples, want the 3 real events before its end", m.calibrated, m.calSamples)
	}
}
