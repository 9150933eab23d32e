package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/filedetect"
	agentupdate "github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/test/filework"
)

// shadowPairs collects what a shadow loader hands the updater's observer.
type shadowPairs struct {
	mu             sync.Mutex
	n              int
	active, shadow sdk.Stats
}

func (s *shadowPairs) observe(a, sh sdk.Stats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.active.Count += a.Count
	s.active.Anomalies += a.Anomalies
	s.shadow.Count += sh.Count
	s.shadow.Anomalies += sh.Anomalies
}

func (s *shadowPairs) get() (n int, active, shadow sdk.Stats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.active, s.shadow
}

// faVariant writes the baseline fileactivity bundle again as name@version,
// its manifest changed by edit (unsigned: the updater verifies signatures
// before a loader sees a bundle).
func faVariant(t *testing.T, base, name string, version uint64, edit func(*bundle.Manifest)) string {
	t.Helper()
	return faVariantModel(t, base, name, version, nil, edit)
}

// faVariantModel is faVariant with the model bytes replaced (nil: kept).
func faVariantModel(t *testing.T, base, name string, version uint64, model []byte, edit func(*bundle.Manifest)) string {
	t.Helper()
	b, err := bundle.Read(base, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	m := b.Manifest
	m.Name, m.Version = name, version
	if edit != nil {
		edit(&m)
	}
	if model == nil {
		model = b.Model
	}
	p, err := bundle.WriteFile(t.TempDir(), model, &m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFileactivityShadow: the file pipeline runs a shadow model (a shadow rollout's, through
// update.ShadowLoader as the updater calls it) in a second plugin instance on the same events as
// the active model: every pair the observer gets covers the same batch (equal counts), the shadow
// model, whose threshold is 1,000 times lower, flags far more than the active one, none of its
// anomalies becomes a finding, and its counters say what it flagged. Bad bundles (unreadable, of
// another detector, missing, or with a graph the plugin cannot load) are refused with nothing
// left running; a stopped shadow model sees no more events, and a stopped pipeline takes
// no shadow model.
func TestFileactivityShadow(t *testing.T) {
	in := fileactivityInstall(t)
	root := t.TempDir()
	work := filepath.Join(root, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	p, sink, stop := startWatching(t, in, root)
	l, ok := p.ModelLoaders()[filedetect.DetectorName].(agentupdate.ShadowLoader)
	if !ok {
		t.Fatal("the file pipeline's model loader is not an agentupdate.ShadowLoader")
	}
	ctx := context.Background()

	// Bad input: a corrupt file, a bundle of another detector, a file that is not there.
	corrupt := filepath.Join(t.TempDir(), "corrupt.vgb")
	if err := os.WriteFile(corrupt, []byte("not a bundle"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := faVariant(t, in.Inst.Bundle.Path, "nf-shadow", 1, func(m *bundle.Manifest) { m.Detector = "netflow" })
	// A bundle that reads well, but whose graph ONNX Runtime cannot load: the plugin starts without
	// a model, which must not pass for the shadow model.
	unloadable := faVariantModel(t, in.Inst.Bundle.Path, "fa-broken", 2, []byte("not an onnx graph"), nil)
	var pairs shadowPairs
	for _, bad := range []string{corrupt, other, filepath.Join(root, "missing.vgb"), unloadable} {
		if _, err := l.LoadShadow(ctx, bad, pairs.observe); err == nil {
			t.Errorf("LoadShadow(%s) succeeded", filepath.Base(bad))
		} else {
			t.Logf("refused %s: %v", filepath.Base(bad), err)
		}
	}

	noisy := faVariant(t, in.Inst.Bundle.Path, "fa-shadow", 7, func(m *bundle.Manifest) { m.Threshold *= 1e-3 })
	info, err := l.LoadShadow(ctx, noisy, pairs.observe)
	if err != nil {
		t.Fatalf("LoadShadow: %v", err)
	}
	if info.Name != "fa-shadow" || info.Version != 7 {
		t.Fatalf("shadow model %+v", info)
	}
	// Ordinary work (editing files the way people and tools do) until the shadow model has seen
	// enough of it; bounded.
	start := time.Now()
	for seed := uint64(1); seed <= 60; seed++ {
		if err := filework.Edit(ctx, work, seed); err != nil {
			t.Fatal(err)
		}
		if _, _, sh := pairs.get(); sh.Count >= 150 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("edits for %v", time.Since(start).Round(time.Millisecond))
	// Every event the active plugin scored reaches the shadow (the last batches may still be on
	// their way).
	var n int
	var a, sh sdk.Stats
	var c map[string]uint64
	waitFor(t, 15*time.Second, func() string {
		return fmt.Sprintf("%d pairs: active %+v, shadow %+v; counters %v", n, a, sh, c)
	}, func() bool {
		c = p.Counters()
		n, a, sh = pairs.get()
		return sh.Count >= 100 && sh.Count == c["file_events_scored"] && c["file_shadow_anomalies"] == sh.Anomalies
	})
	t.Logf("%d pairs: active %d events %d anomalies, shadow %d events %d anomalies; counters scored %d shadow_anomalies %d shadow_dropped %d",
		n, a.Count, a.Anomalies, sh.Count, sh.Anomalies, c["file_events_scored"], c["file_shadow_anomalies"], c["file_shadow_dropped"])
	if a.Count != sh.Count {
		t.Errorf("the pairs cover different events: active %d, shadow %d", a.Count, sh.Count)
	}
	if sh.Anomalies <= a.Anomalies || sh.Anomalies < 10 {
		t.Errorf("the shadow model (threshold / 1000) flagged %d events, the active one %d", sh.Anomalies, a.Anomalies)
	}
	if c["file_shadow_dropped"] != 0 {
		t.Errorf("%d events dropped by the shadow at this load", c["file_shadow_dropped"])
	}
	for _, f := range sink.snapshot() {
		if f.GetModel().GetName() == "fa-shadow" {
			t.Fatalf("a finding of the shadow model: %s", describe(sink.snapshot()))
		}
	}

	// Stopped: no more pairs, while the active model goes on.
	if err := l.StopShadow(ctx); err != nil {
		t.Fatal(err)
	}
	n0, _, _ := pairs.get()
	scored0 := p.Counters()["file_events_scored"]
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(work, fmt.Sprintf("after-%d.txt", i)), []byte("notes\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, func() string { return "active model scoring after the shadow stopped" }, func() bool {
		return p.Counters()["file_events_scored"] > scored0
	})
	if n1, _, _ := pairs.get(); n1 != n0 {
		t.Errorf("%d pairs observed after StopShadow", n1-n0)
	}

	// A stopped pipeline takes no shadow model.
	stop()
	if _, err := l.LoadShadow(ctx, noisy, pairs.observe); !errors.Is(err, filedetect.ErrNotRunning) {
		t.Errorf("LoadShadow after the pipeline stopped: %v", err)
	}
}
