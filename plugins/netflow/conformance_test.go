package netflow

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/agent/pluginhost/pluginhosttest"
	"github.com/vigil-edge/vigil/plugins/sdk/sdktest"
)

// buildPlugin returns the plugin binary: VIGIL_BIN's if present, else a cgo
// build into a directory an unprivileged plugin can read.
func buildPlugin(t *testing.T) string {
	t.Helper()
	name := "vigil-detector-netflow"
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

// TestConformance runs the SDK's conformance harness against the real
// plugin binary with the baseline netflow/v1 bundle.
func TestConformance(t *testing.T) {
	if !sdktest.Enabled() {
		t.Skip("conformance starts the plugin binary: set VIGIL_E2E=1")
	}
	lib, err := filepath.Abs(ortLib(t))
	if err != nil {
		t.Fatal(err)
	}
	bundles := baselineBundles(t)
	model := bundles[0]
	if shipped, _ := filepath.Glob("../../models/baseline/nethost-*.vgb"); len(shipped) == 1 {
		abs, err := filepath.Abs(shipped[0])
		if err != nil {
			t.Fatal(err)
		}
		model = abs
	}
	sdktest.Run(t, buildPlugin(t), sdktest.Options{NewHost: pluginhosttest.NewHost, ModelPath: model, Env: []string{"ONNXRUNTIME_LIB=" + lib}})
}

// TestBadCalibratedArg: a plugin given a -calibrated list it cannot parse
// still starts, with its models, and calibrates again (fail safe: a plugin
// that refused to run would leave the sensor unmonitored).
func TestBadCalibratedArg(t *testing.T) {
	if !sdktest.Enabled() {
		t.Skip("starts the plugin binary: set VIGIL_E2E=1")
	}
	lib, err := filepath.Abs(ortLib(t))
	if err != nil {
		t.Fatal(err)
	}
	h, err := pluginhost.New(pluginhost.Config{Path: buildPlugin(t),
		Args: []string{"-bundle", nethostBundle(t), "-calibrate", "1h", "-calibrated", "sha256:nothex=zz"},
		Env:  []string{"ONNXRUNTIME_LIB=" + lib}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatalf("plugin with a bad -calibrated did not start: %v", err)
	}
	defer h.Close(ctx)
	hl, err := h.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hl.Model.Name != "nethost" || !strings.HasPrefix(hl.Message, "calibrating") || hl.Stats["calibrated_"+hl.Model.FeatureSet] != 0 {
		t.Fatalf("health: %q, model %+v, stats %v", hl.Message, hl.Model, hl.Stats)
	}
}
