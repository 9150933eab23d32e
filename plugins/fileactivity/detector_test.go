package fileactivity

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/agent/pluginhost/pluginhosttest"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/sdktest"
)

// ortLib returns the ONNX Runtime library for tests, or skips.
func ortLib(t testing.TB) string {
	p := os.Getenv("ONNXRUNTIME_LIB")
	if p == "" {
		p = "../../.cache/onnxruntime-1.24.3/libonnxruntime.so"
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no ONNX Runtime library (set ONNXRUNTIME_LIB): %v", err)
	}
	abs, _ := filepath.Abs(p)
	return abs
}

func baseline(t testing.TB) string {
	b, _ := filepath.Glob("../../models/baseline/fileactivity-*.vgb")
	if len(b) == 0 {
		t.Skip("no fileactivity baseline bundle in models/baseline")
	}
	return b[len(b)-1]
}

// textEvent is an ordinary source file being created.
func textEvent(root string, i int, ts int64) event.File {
	return event.File{TimeNs: ts, Size: 2000, Mode: 0o644, Op: event.FileCreate, Root: root,
		Path:  root + "/src/pkg/file" + string(rune('a'+i%26)) + ".go",
		Flags: event.FileFlagSampled, SampleLen: 2000, Magic: event.MagicText, ExtMagic: event.MagicText,
		Entropy: 4.6, PrintableFrac: 0.99, ChiSquare: 30000}
}

func TestScoreFiles(t *testing.T) {
	lib := ortLib(t)
	d := New(nil, Options{ORTLib: lib})
	defer d.Close()
	ctx := context.Background()

	// No model: nothing flagged, one score per event.
	evs := []event.File{textEvent("/srv", 0, 1e9)}
	res, err := d.ScoreFiles(ctx, evs)
	if err != nil || len(res.Scores) != 1 || len(res.Anomalies) != 0 {
		t.Fatalf("without model: %+v, %v", res, err)
	}
	if _, err := d.ScorePackets(ctx, nil); err == nil {
		t.Error("ScorePackets succeeded on a file detector")
	}
	m, err := d.LoadModel(ctx, baseline(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.FeatureSet != "fileactivity/v1" || !strings.HasPrefix(m.Digest, "sha256:") {
		t.Errorf("model info %+v", m)
	}
	// A refused bundle keeps the model.
	if _, err := d.LoadModel(ctx, "/nonexistent.vgb"); err == nil {
		t.Error("loading a missing bundle succeeded")
	}
	if h := d.Health(ctx); h.Model != m {
		t.Errorf("model changed after a failed load: %+v", h.Model)
	}

	// Ordinary text files created at a calm pace: no anomaly.
	evs = evs[:0]
	for i := range 50 {
		evs = append(evs, textEvent("/srv/a", i, int64(i+1)*int64(200*time.Millisecond)))
	}
	res, err = d.ScoreFiles(ctx, evs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Anomalies) != 0 {
		t.Errorf("%d anomalies among ordinary text files: %+v", len(res.Anomalies), res.Anomalies[0])
	}
	// A packed ELF (encrypted code section): a file anomaly naming the path.
	packed := event.File{TimeNs: 11e9, Size: 140000, Mode: 0o755, Op: event.FileCreate, Root: "/srv/a",
		Path:      "/srv/a/bin/helper",
		Flags:     event.FileFlagSampled | event.FileFlagExecutable | event.FileFlagExecParsed | event.FileFlagHeadTail,
		SampleLen: 65536, Magic: event.MagicELF, Entropy: 7.6, ZeroFrac: 0.02, PrintableFrac: 0.37, HighFrac: 0.49,
		ChiSquare: 900, ExecFlags: event.ExecELF, Sections: 29, Imports: 110, Libraries: 1,
		MaxSectionEntropy: 7.99, ExecSectionEntropy: 7.99}
	res, err = d.ScoreFiles(ctx, []event.File{packed})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Anomalies) != 1 {
		t.Fatalf("packed ELF not flagged: scores %v", res.Scores)
	}
	a := res.Anomalies[0]
	if a.Context[sdk.ContextPath] != packed.Path || a.Context[ContextKind] != KindFile || len(a.TopFeatures) != TopK {
		t.Errorf("anomaly %+v", a)
	}
	if a.Score <= a.Threshold {
		t.Errorf("score %v not above threshold %v", a.Score, a.Threshold)
	}
}

// TestConformance runs the SDK's conformance harness against the plugin
// binary through the agent's real plugin host.
func TestConformance(t *testing.T) {
	if !sdktest.Enabled() {
		t.Skip("starts the plugin binary: set VIGIL_E2E=1")
	}
	lib := ortLib(t)
	model := baseline(t)
	bin := buildPlugin(t)
	sdktest.Run(t, bin, sdktest.Options{
		NewHost: closeBounded, ModelPath: model,
		Env: []string{"ONNXRUNTIME_LIB=" + lib},
	})
}

func TestSafePath(t *testing.T) {
	for in, want := range map[string]string{
		"/srv/a b/ü.txt":   "/srv/a b/ü.txt",
		"/x/line\nbreak":   `/x/line\nbreak`,
		"/x/\xff\xfe":      `/x/\xff\xfe`,
		`/x/back\slash`:    `/x/back\\slash`,
		"/x/tab\there\x7f": `/x/tab\there\x7f`,
	} {
		if got := SafePath(in); got != want {
			t.Errorf("SafePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzSafePath(f *testing.F) {
	for _, s := range []string{"/a/b", "/x/\xff", "a\nb", `c\d`, "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := SafePath(s)
		if !utf8.ValidString(out) {
			t.Fatalf("SafePath(%q) = %q: invalid UTF-8", s, out)
		}
		for _, r := range out {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("SafePath(%q) = %q: control character", s, out)
			}
		}
	})
}

// buildPlugin returns the plugin binary: VIGIL_BIN's if present, else a cgo
// build (ONNX Runtime) into a directory an unprivileged plugin can read.
// (sdktest.BuildPlugin builds with CGO_ENABLED=0, which cannot link ONNX
// Runtime.)
func buildPlugin(t *testing.T) string {
	t.Helper()
	const name = "vigil-detector-fileactivity"
	dst := filepath.Join(sdktest.ReadableTempDir(t), name)
	if bin := os.Getenv("VIGIL_BIN"); bin != "" {
		if b, err := os.ReadFile(filepath.Join(bin, name)); err == nil {
			if err := os.WriteFile(dst, b, 0o755); err != nil {
				t.Fatal(err)
			}
			return dst
		}
	}
	cmd := exec.Command("go", "build", "-o", dst, "./cmd/"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dst
}

// closeBounded wraps the agent's host so that Close returns within its
// context even when the host's Close blocks: agent/pluginhost (at the time
// of writing) waits forever in Close for a plugin without a packet ring,
// because its exit watcher returns on cancellation without ending the
// instance. The plugin process is killed before that wait, so nothing leaks
// but a goroutine. Remove once pluginhost ends ring-less instances on stop.
func closeBounded(cfg sdktest.HostConfig) (sdktest.Host, error) {
	h, err := pluginhosttest.NewHost(cfg)
	if err != nil {
		return nil, err
	}
	return boundedHost{h}, nil
}

type boundedHost struct{ sdktest.Host }

func (b boundedHost) Close(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- b.Host.Close(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return nil
	}
}
