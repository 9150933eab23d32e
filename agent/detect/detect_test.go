package detect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/plugins/sdk"
)

// fakePlugin is any regular file: New only pins the binary's checksum, it
// starts nothing.
func fakePlugin(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), PluginName)
	if err := os.WriteFile(p, []byte("#!/bin/false\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func fakeBundle(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nethost-1.vgb")
	if err := os.WriteFile(p, []byte("bundle"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestModelLoaders: the pipeline hands its (not yet started) plugin host to
// the updater before Run, with a world-readable stage directory for the
// unprivileged plugin.
func TestModelLoaders(t *testing.T) {
	p, err := New(Config{Plugin: fakePlugin(t), Bundles: []BundleInfo{{Path: fakeBundle(t), FeatureSet: "nethost/v1"}},
		Interfaces: []string{"eth-test0"}, StageBundles: true})
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(p.stageDir)
	lm := p.ModelLoaders()
	l, ok := lm[DetectorName]
	if !ok || len(lm) != 1 {
		t.Fatalf("ModelLoaders() = %v, want one %q loader", lm, DetectorName)
	}
	pl, ok := l.(*pipelineLoader)
	if !ok {
		t.Fatalf("loader is %T, want the pipeline's loader", l)
	}
	if _, ok := l.(update.ShadowLoader); !ok {
		t.Fatal("the pipeline's loader does not run shadow models")
	}
	hl := pl.HostLoader
	if hl.Host == nil || hl.Host != p.host.Load() {
		t.Fatal("HostLoader.Host is not the pipeline's plugin host")
	}
	st, err := os.Stat(hl.StageDir)
	if err != nil || !st.IsDir() || st.Mode().Perm()&0o005 != 0o005 {
		t.Fatalf("stage dir %q: %v %v (must be a world-readable directory)", hl.StageDir, st, err)
	}
	// The staged bundle is what the plugin is told to load, and readable.
	i := slices.Index(p.pluginArgs, "-bundle")
	if i < 0 || filepath.Dir(p.pluginArgs[i+1]) != hl.StageDir {
		t.Fatalf("plugin args %v do not name a staged bundle", p.pluginArgs)
	}
	if st, err := os.Stat(p.pluginArgs[i+1]); err != nil || st.Mode().Perm()&0o004 == 0 {
		t.Fatalf("staged bundle: %v %v", st, err)
	}
	// Live capture: the plugin keeps its random hash seed.
	if slices.Contains(p.pluginArgs, "-hash-seed") {
		t.Fatalf("live pipeline fixes the hash seed: %v", p.pluginArgs)
	}
}

// TestOfflineHashSeed: an offline scan is reproducible by default (a fixed
// hash seed), and an explicit seed wins.
func TestOfflineHashSeed(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "1592590337"},
		{[]string{"-hash-seed", "7"}, "7"},
		{[]string{"--hash-seed=9"}, ""},
	} {
		p, err := New(Config{Plugin: fakePlugin(t), Bundles: []BundleInfo{{Path: fakeBundle(t)}}, Pcaps: []string{"x.pcap"}, PluginArgs: c.args})
		if err != nil {
			t.Fatal(err)
		}
		i := slices.Index(p.pluginArgs, "-hash-seed")
		got := ""
		if i >= 0 {
			got = p.pluginArgs[i+1]
		}
		if got != c.want {
			t.Errorf("args %v: plugin args %v, want -hash-seed %q", c.args, p.pluginArgs, c.want)
		}
		if n := len(slices.DeleteFunc(slices.Clone(p.pluginArgs), func(s string) bool { return s != "-hash-seed" })); n > 1 {
			t.Errorf("hash seed given twice: %v", p.pluginArgs)
		}
	}
}

// TestShadowLaunchArgs: on a calibrating sensor, the shadow instance is
// started, like the active one, with the calibrations the active instance
// reported (-calibrated): it inherits -calibrate, and without them every
// model it runs observed silently again, the active models included.
func TestShadowLaunchArgs(t *testing.T) {
	digest := fmt.Sprintf("sha256:%064x", 1)
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"-calibrate", "10m"}, []string{"-calibrated", digest + "=3f800000"}},
		{nil, nil},
	} {
		p, err := New(Config{Plugin: fakePlugin(t), Bundles: []BundleInfo{{Path: fakeBundle(t), FeatureSet: "nethost/v6"}},
			Interfaces: []string{"eth-test0"}, PluginArgs: c.args})
		if err != nil {
			t.Fatal(err)
		}
		p.cal.remember(digest, 0x3f800000)
		for _, role := range []string{"", "shadow"} {
			hc := p.hostConfig([]string{"active.vgb", "shadow.vgb"}, nil, role)
			var got []string
			if hc.LaunchArgs != nil {
				got = hc.LaunchArgs()
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("plugin args %v, role %q: launch args %q, want %q", c.args, role, got, c.want)
			}
			if !slices.Equal(hc.Args[len(hc.Args)-len(c.args):], c.args) {
				t.Errorf("plugin args %v, role %q: args %q", c.args, role, hc.Args)
			}
		}
	}
}

// TestStatsDuringRun: the uplink's status writer reads the pipeline's
// counters while Run starts (a data race on Run's start time, found by an
// end-to-end run of race-enabled binaries); under -race this test failed.
// Run fails here (the plugin is /bin/false), after recording its start.
func TestStatsDuringRun(t *testing.T) {
	p, err := New(Config{Plugin: fakePlugin(t), Bundles: []BundleInfo{{Path: fakeBundle(t)}}, Pcaps: []string{"x.pcap"}})
	if err != nil {
		t.Fatal(err)
	}
	if e := p.Stats().Elapsed; e != 0 {
		t.Fatalf("elapsed before Run = %v, want 0", e)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				_ = p.Counters()
			}
		}
	}()
	runErr := p.Run(t.Context(), nil)
	close(stop)
	<-done
	if runErr == nil {
		t.Fatal("Run with a plugin that exits at once returned nil")
	}
	if e := p.Stats().Elapsed; e <= 0 {
		t.Fatalf("elapsed after Run = %v, want > 0 (Run records its start)", e)
	}
}

// TestSetModel: a model the updater hands the running plugin replaces, in
// what the pipeline reports, the model of its feature-set family (or of its
// name, without one); the other feature sets' models stay. Before, the pipeline
// went on reporting the models it had started with.
func TestSetModel(t *testing.T) {
	p, err := New(Config{Plugin: fakePlugin(t), Interfaces: []string{"eth-test0"}, Bundles: []BundleInfo{
		{Path: fakeBundle(t), Name: "nethost", Version: 9, FeatureSet: "nethost/v7"},
		{Path: fakeBundle(t), Name: "netflow", Version: 9, FeatureSet: "netflow/v1"},
		{Path: fakeBundle(t), Name: "old", Version: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	str := func() string {
		var s []string
		for _, r := range p.ActiveModels() {
			s = append(s, fmt.Sprintf("%s@%d", r.Name, r.Version))
			if r.Detector != DetectorName {
				t.Errorf("model %s has detector %q", r.Name, r.Detector)
			}
		}
		return strings.Join(s, " ")
	}
	for _, c := range []struct {
		m    sdk.ModelInfo
		want string
	}{
		{sdk.ModelInfo{Name: "nethost-site", Version: 10, FeatureSet: "nethost/v7"}, "nethost-site@10 netflow@9 old@1"},
		{sdk.ModelInfo{Name: "netflow", Version: 10, FeatureSet: "netflow/v1"}, "nethost-site@10 netflow@10 old@1"},
		{sdk.ModelInfo{Name: "old", Version: 2}, "nethost-site@10 netflow@10 old@2"},
		// Another version of the nethost family takes its place (the plugin's host slot), as the
		// plugin does; it was listed beside it, two active nethost models reported.
		{sdk.ModelInfo{Name: "nethost", Version: 11, FeatureSet: "nethost/v8"}, "nethost@11 netflow@10 old@2"},
	} {
		p.setModel(c.m)
		if got := str(); got != c.want {
			t.Errorf("after %s@%d (%s): %q, want %q", c.m.Name, c.m.Version, c.m.FeatureSet, got, c.want)
		}
	}
}

// TestLoadShadowWaitsForStart: a shadow offer that comes while the pipeline is starting (the
// agent's first Hello repeats pending offers) waits for it, at most the plugin host's
// StartTimeout, instead of being refused with ErrNotRunning; once the pipeline has stopped, or
// when it does not start in time, it is refused.
func TestLoadShadowWaitsForStart(t *testing.T) {
	p, err := New(Config{Plugin: fakePlugin(t), Bundles: []BundleInfo{{Path: fakeBundle(t), FeatureSet: "nethost/v7"}},
		Interfaces: []string{"eth-test0"}, Host: pluginhost.Config{StartTimeout: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	notABundle := fakeBundle(t)
	start := time.Now()
	if _, err := p.LoadShadow(t.Context(), notABundle, nil); !errors.Is(err, ErrNotRunning) || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("never started: %v after %v", err, time.Since(start))
	}
	time.AfterFunc(50*time.Millisecond, func() { // what Run does once its plugin and bundles are up
		p.running.Store(true)
		p.readyOnce.Do(func() { close(p.ready) })
	})
	_, err = p.LoadShadow(t.Context(), notABundle, nil)
	if err == nil || errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "shadow bundle") {
		t.Fatalf("offered while starting: %v, want the bundle itself refused", err)
	}
	p.running.Store(false) // stopped
	start = time.Now()
	if _, err := p.LoadShadow(t.Context(), notABundle, nil); !errors.Is(err, ErrNotRunning) || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("after the pipeline stopped: %v after %v", err, time.Since(start))
	}
}
