package e2e

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vigil-edge/vigil/agent/detect"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// nfInstall is a bin/ installation for the packet detection tests:
// vigil-agent, vigil-detector-netflow, models/*.vgb and lib/libonnxruntime.so.
type nfInstall struct {
	Dir, Agent, Plugin, ORT string
	Bundles                 []detect.BundleInfo
}

// repoRoot is the repository's root (this file is test/e2e/...).
func nfRepoRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// netflowInstall returns VIGIL_BIN when it holds a complete installation,
// else builds one into a temporary directory (world-readable, so that a
// plugin started as nobody can read it). It skips unless VIGIL_E2E=1 and
// ONNX Runtime and the baseline bundles are available.
func netflowInstall(t *testing.T) *nfInstall {
	t.Helper()
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("starts real binaries: set VIGIL_E2E=1 (make test does)")
	}
	if bin := os.Getenv("VIGIL_BIN"); bin != "" {
		in := &nfInstall{Dir: bin, Agent: filepath.Join(bin, "vigil-agent"), Plugin: filepath.Join(bin, detect.PluginName)}
		if nfFileExists(in.Agent) && nfFileExists(in.Plugin) {
			if inst, err := detect.Discover(detect.Search{ExeDir: bin, ModelDirs: []string{}, PluginDirs: []string{}, LibDirs: []string{}}); err == nil && len(inst.Bundles) > 0 && inst.ORTLib != "" {
				in.ORT, in.Bundles = inst.ORTLib, inst.Bundles
				return in
			}
		}
	}
	dir := buildInstall(t, "vigil-nf-bin-", "./plugins/netflow/cmd/vigil-detector-netflow", "*.vgb")
	inst, err := detect.Discover(detect.Search{ExeDir: dir, ModelDirs: []string{}, PluginDirs: []string{}, LibDirs: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	return &nfInstall{Dir: dir, Agent: filepath.Join(dir, "vigil-agent"), Plugin: inst.Plugin, ORT: inst.ORTLib, Bundles: inst.Bundles}
}

// buildInstall builds a temporary installation laid out like bin/ (the
// agent, one detector plugin, lib/libonnxruntime.so and the baseline bundles
// of models/baseline matching bundleGlob), world-readable so that a plugin
// started as nobody can use it. It skips when ONNX Runtime or the bundles
// are missing.
func buildInstall(t *testing.T, prefix, pluginPkg, bundleGlob string) string {
	t.Helper()
	root := nfRepoRoot(t)
	ort := os.Getenv("ONNXRUNTIME_LIB")
	if ort == "" {
		ort = filepath.Join(root, ".cache", "onnxruntime-1.24.3", "libonnxruntime.so")
	}
	if !nfFileExists(ort) {
		t.Skipf("no ONNX Runtime library (set ONNXRUNTIME_LIB): %s", ort)
	}
	bundles, _ := filepath.Glob(filepath.Join(root, "models", "baseline", bundleGlob))
	if len(bundles) == 0 {
		t.Skipf("no baseline bundles %s in models/baseline (make models)", bundleGlob)
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755)
	for _, d := range []string{"models", "lib"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	build := func(pkg, cgo string) {
		cmd := exec.Command("go", "build", "-o", dir+"/", pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	build("./agent/cmd/vigil-agent", "0")
	build(pluginPkg, "1")
	nfCopy(t, ort, filepath.Join(dir, "lib", "libonnxruntime.so"))
	for _, b := range bundles {
		nfCopy(t, b, filepath.Join(dir, "models", filepath.Base(b)))
	}
	return dir
}

func nfFileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func nfCopy(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// scanResult is `vigil-agent scan --json`'s output.
type scanResult struct {
	Summary struct {
		Packets        uint64  `json:"packets"`
		Seconds        float64 `json:"seconds"`
		Findings       int     `json:"findings"`
		Decoded        uint64  `json:"decoded"`
		PacketsPerSec  float64 `json:"packets_per_second"`
		Anomalies      uint64  `json:"anomalies"`
		EventsLost     uint64  `json:"events_lost"`
		PluginRestarts uint64  `json:"plugin_restarts"`
	} `json:"summary"`
	Findings []map[string]any `json:"findings"`
}

// runScan runs `vigil-agent scan --json` and returns its parsed output and
// raw stdout.
func runScan(t *testing.T, in *nfInstall, args ...string) (scanResult, []byte) {
	t.Helper()
	cmd := exec.Command(in.Agent, append([]string{"scan", "--json"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("vigil-agent scan %v: %v\nstderr:\n%s", args, err, errb.String())
	}
	var res scanResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("scan --json output: %v\n%s", err, out.String())
	}
	return res, out.Bytes()
}
