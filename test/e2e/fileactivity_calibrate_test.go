package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/filedetect"
	agentupdate "github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestFileactivityCalibration: per-sensor calibration of the file-activity
// detector through the agent's pipeline and the real plugin, on a watched
// tree. During a 3 s grace period ordinary edits raise no finding; after it
// the pipeline's counters (sent to the server in every Status) report the
// calibration, a ransomware-style encryption is still found, and a plugin
// killed afterwards restarts calibrated, with the same threshold. A shadow
// model started then judges its first events at once.
func TestFileactivityCalibration(t *testing.T) {
	in := fileactivityInstall(t)
	root := t.TempDir()
	share := filepath.Join(root, "share")
	files := sourceTree(t, share, 99, 400)
	const grace = 3 * time.Second
	calArgs := []string{"-calibrate", grace.String(), "-calibrate-quantile", "0.999"}
	calFile := filepath.Join(t.TempDir(), "calibration-fileactivity")
	keepCal := func(c *filedetect.Config) { c.CalibrationFile = calFile }
	p, sink, stop := startWatchingWith(t, in, []string{root}, keepCal, calArgs...)
	const set = "fileactivity/v1"

	// Ordinary edits during the grace period, and one after it (the grace
	// period ends with the first event after it).
	start := time.Now()
	for i := 0; time.Since(start) < grace+time.Second; i++ {
		f := files[i%len(files)]
		if err := os.WriteFile(f, fmt.Appendf(nil, "// edit %d\npackage x\n", i), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	deadline := time.Now().Add(30 * time.Second)
	var c map[string]uint64
	for i := 0; ; i++ {
		c = p.Counters()
		if c["calibrated_"+set] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not calibrated: counters %v", c)
		}
		if err := os.WriteFile(filepath.Join(share, "late.txt"), fmt.Appendf(nil, "note %d\n", i), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	model, active := c["model_threshold_micro_"+set], c["threshold_micro_"+set]
	if model == 0 || c["calibration_samples_"+set] == 0 || active != max(model, c["calibration_local_micro_"+set]) {
		t.Fatalf("calibration counters: %v", c)
	}
	for _, f := range sink.snapshot() {
		t.Errorf("finding during or right after the grace period of ordinary edits: %s", describe([]*wirev1.Finding{f}))
	}

	// Ransomware after calibration: found.
	enc := time.Now()
	ransomware(t, files)
	if f := waitFinding(sink, enc.Add(15*time.Second), func(f *wirev1.Finding) bool {
		return strings.HasPrefix(f.GetContext().GetPath(), share) && f.GetCount() >= 20
	}); f == nil {
		stop()
		t.Fatalf("no burst finding after calibration; counters %v; findings:%s", p.Counters(), describe(sink.snapshot()))
	}

	// A killed plugin restarts calibrated.
	pid := p.PluginPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		r := p.Counters()
		if p.PluginPID() != pid && p.PluginPID() != 0 && r["calibrated_"+set] == 1 && r["calibration_samples_"+set] == 0 {
			if r["threshold_micro_"+set] != active {
				t.Fatalf("restarted plugin's threshold %d µ, before %d µ", r["threshold_micro_"+set], active)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted plugin not calibrated: %v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("threshold %.5f → %.5f (local q0.999 %.5f, %d samples); restored after a kill",
		float64(model)/1e6, float64(active)/1e6, float64(c["calibration_local_micro_"+set])/1e6, c["calibration_samples_"+set])

	// A shadow model on this calibrated sensor observes while flagging at its own threshold, as
	// it would once activated: its first events (well within a grace period of its own) are
	// judged, not kept silent. Its threshold is 1,000 times lower, so they are flagged.
	l, ok := p.ModelLoaders()[filedetect.DetectorName].(agentupdate.ShadowLoader)
	if !ok {
		t.Fatal("no shadow loader")
	}
	var pairs shadowPairs
	noisy := faVariant(t, in.Inst.Bundle.Path, "fa-shadow", 9, func(m *bundle.Manifest) { m.Threshold *= 1e-3 })
	if _, err := l.LoadShadow(context.Background(), noisy, pairs.observe); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := os.WriteFile(filepath.Join(share, fmt.Sprintf("shadow-%d.txt", i)), []byte("note\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var sh sdk.Stats
	waitFor(t, 15*time.Second, func() string { return fmt.Sprintf("shadow scored the edits: %+v", sh) }, func() bool {
		_, _, sh = pairs.get()
		return sh.Count >= 10
	})
	if sh.Anomalies == 0 {
		t.Fatalf("the shadow model kept silent on a calibrated sensor: %+v", sh)
	}
	t.Logf("shadow model on the calibrated sensor: %d of %d events flagged at once", sh.Anomalies, sh.Count)
	if err := l.StopShadow(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A model update on this calibrated sensor, as the updater makes it: load, then the probe
	// batch. The new model's grace period starts with the first live event after it. The probe's
	// events, dated 2020, used to start it, so the next live event ended it at once: the model was
	// "calibrated" on the 16 probe scores.
	ml := p.ModelLoaders()[filedetect.DetectorName]
	ctx := context.Background()
	if _, err := ml.LoadModel(ctx, faVariant(t, in.Inst.Bundle.Path, "fa-upd", 10, nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := ml.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	scored := p.Counters()["file_events_scored"]
	if err := os.WriteFile(filepath.Join(share, "after-update.txt"), []byte("note\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, func() string { return "the live event after the update scored" }, func() bool {
		return p.Counters()["file_events_scored"] > scored
	})
	h, err := ml.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.Stats["calibrated_"+set] != 0 || h.Model.Name != "fa-upd" {
		t.Fatalf("right after the update's probe and one live event the new model %s is calibrated (%d samples): %v",
			h.Model.Name, h.Stats["calibration_samples_"+set], h.Stats)
	}

	// The agent restarts (a reboot, an upgrade): the pipeline's model is calibrated from its
	// first event, with the same threshold, instead of observing, silent, for another grace period.
	stop()
	p2, _, stop2 := startWatchingWith(t, in, []string{root}, keepCal, calArgs...)
	defer stop2()
	if err := os.WriteFile(filepath.Join(share, "after-restart.txt"), []byte("note\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() string { return fmt.Sprintf("calibrated after the agent restart: %v", p2.Counters()) }, func() bool {
		r := p2.Counters()
		return r["calibrated_"+set] == 1 && r["calibration_samples_"+set] == 0 && r["threshold_micro_"+set] == active
	})
}
