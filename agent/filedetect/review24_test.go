package filedetect

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/watch"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/sdktest"
)

// TestRewatchSkipsLinkedRoot: a lost root whose path comes back as a
// symbolic link to a directory cannot be watched (the watcher never follows
// links). It must not count as back: the other roots are watched again, and
// a watcher running on them is not stopped for it, or no root at all would
// be watched while the link stays.
func TestRewatchSkipsLinkedRoot(t *testing.T) {
	base := t.TempDir()
	a, b, elsewhere := filepath.Join(base, "a"), filepath.Join(base, "b"), filepath.Join(base, "elsewhere")
	for _, d := range []string{a, elsewhere} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(elsewhere, b); err != nil {
		t.Fatal(err)
	}
	p := &Pipeline{cfg: Config{Watch: watch.Config{Roots: []string{a, b}}}, log: slog.New(slog.DiscardHandler)}
	if got := p.existingRoots(); len(got) != 1 || got[0] != a {
		t.Errorf("existing roots %q, want only %s", got, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rootRetry+2*time.Second)
	defer cancel()
	w := p.rewatch(ctx)
	if w == nil {
		t.Fatal("rewatch watched nothing: the root that exists stays unwatched")
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rcancel()
	_ = w.Run(rctx, make(chan []event.File, 1)) // releases the watcher
	if got := w.Roots(); len(got) != 1 || got[0] != a {
		t.Errorf("watching %q, want %s", got, a)
	}
}

// TestScoreLongPathsFitTheCall: BatchMax events with long paths (a rename
// carries two) exceed the plugin's gRPC message limit (4 MiB) in one Score
// call, which then fails and loses every event of the call: anyone who can
// name files deep enough blinds the detector. Starts the plugin.
func TestScoreLongPathsFitTheCall(t *testing.T) {
	lib := os.Getenv("ONNXRUNTIME_LIB")
	if lib == "" {
		t.Skip("starts the fileactivity plugin with ONNX Runtime: set ONNXRUNTIME_LIB")
	}
	bundles, _ := filepath.Glob("../../models/baseline/fileactivity-*.vgb")
	if len(bundles) == 0 {
		t.Skip("no fileactivity baseline bundle in models/baseline")
	}
	bundle, _ := filepath.Abs(bundles[len(bundles)-1])
	plugin := filepath.Join(sdktest.ReadableTempDir(t), PluginName)
	cmd := exec.Command("go", "build", "-o", plugin, "../../plugins/fileactivity/cmd/"+PluginName)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx := context.Background()
	eng, stop, err := startOffline(ctx, ScanConfig{Plugin: plugin, Bundle: detect.BundleInfo{Path: bundle}, ORTLib: lib,
		StageBundle: true})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	root := "/srv/share"
	dir := root + "/" + strings.Repeat("d", 1900)
	evs := make([]event.File, eng.cfg.BatchMax)
	for i := range evs {
		old := dir + "/" + strings.Repeat("f", 100) + strings.Repeat("x", i%50) + ".doc"
		evs[i] = event.File{TimeNs: int64(i+1) * int64(time.Millisecond), Op: event.FileRename, Root: root,
			Path: old + ".locked", OldPath: old, Size: 1000}
	}
	eng.score(ctx, evs)
	if st := eng.stats(); st.Lost != 0 || st.Scored != uint64(len(evs)) {
		t.Fatalf("scored %d, lost %d of %d events", st.Scored, st.Lost, len(evs))
	}
}
