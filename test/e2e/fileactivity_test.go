package e2e

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/filedetect"
	"github.com/vigil-edge/vigil/agent/watch"
	"github.com/vigil-edge/vigil/test/filework"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// faInstall is a bin/ installation for the file detection tests:
// vigil-agent, vigil-detector-fileactivity, models/fileactivity-*.vgb and
// lib/libonnxruntime.so.
type faInstall struct {
	Dir, Agent string
	Inst       *filedetect.Installation
}

// fileactivityInstall returns VIGIL_BIN when it holds a complete
// installation, else builds one into a temporary directory. It skips unless
// VIGIL_E2E=1 and ONNX Runtime and the baseline bundle are available.
func fileactivityInstall(t *testing.T) *faInstall {
	t.Helper()
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("starts real binaries: set VIGIL_E2E=1 (make test does)")
	}
	if bin := os.Getenv("VIGIL_BIN"); bin != "" {
		inst, err := filedetect.Discover(searchOnly(bin))
		if err == nil && inst.Bundle.Path != "" && inst.ORTLib != "" && nfFileExists(filepath.Join(bin, "vigil-agent")) {
			return &faInstall{Dir: bin, Agent: filepath.Join(bin, "vigil-agent"), Inst: inst}
		}
		t.Logf("VIGIL_BIN=%s has no complete fileactivity installation; building one", bin)
	}
	dir := buildInstall(t, "vigil-fa-bin-", "./plugins/fileactivity/cmd/vigil-detector-fileactivity", "fileactivity-*.vgb")
	inst, err := filedetect.Discover(searchOnly(dir))
	if err != nil {
		t.Fatal(err)
	}
	return &faInstall{Dir: dir, Agent: filepath.Join(dir, "vigil-agent"), Inst: inst}
}

// faSink collects findings in memory.
type faSink struct {
	mu sync.Mutex
	fs []*wirev1.Finding
}

func (s *faSink) Append(_ context.Context, fs []*wirev1.Finding) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fs = append(s.fs, fs...)
	return nil
}

func (s *faSink) snapshot() []*wirev1.Finding {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*wirev1.Finding(nil), s.fs...)
}

// faLogWriter sends log lines to t.Log.
type faLogWriter struct{ t *testing.T }

func (w faLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// searchOnly looks for an installation in dir only.
func searchOnly(dir string) detect.Search {
	return detect.Search{ExeDir: dir, ModelDirs: []string{}, PluginDirs: []string{}, LibDirs: []string{}}
}

// startWatching runs the agent's file pipeline (as `vigil-agent run --watch
// root` builds it, with the real plugin and baseline bundle) and returns it
// with its sink and a stop function that flushes and waits.
func startWatching(t *testing.T, in *faInstall, root string, pluginArgs ...string) (*filedetect.Pipeline, *faSink, func()) {
	t.Helper()
	return startWatchingRoots(t, in, []string{root}, pluginArgs...)
}

// startWatchingRoots is startWatching on several roots.
func startWatchingRoots(t *testing.T, in *faInstall, roots []string, pluginArgs ...string) (*filedetect.Pipeline, *faSink, func()) {
	t.Helper()
	return startWatchingWith(t, in, roots, nil, pluginArgs...)
}

// startWatchingWith is startWatchingRoots with a change to the pipeline's configuration.
func startWatchingWith(t *testing.T, in *faInstall, roots []string, change func(*filedetect.Config), pluginArgs ...string) (*filedetect.Pipeline, *faSink, func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(faLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := filedetect.Config{
		Plugin: in.Inst.Plugin, Bundle: in.Inst.Bundle, ORTLib: in.Inst.ORTLib, StageBundle: true, PluginArgs: pluginArgs,
		Watch:     watch.Config{Roots: roots},
		Aggregate: filedetect.AggregatorConfig{FirstAfter: time.Second, UpdateEvery: 5 * time.Second, Hold: 2 * time.Second},
		Logger:    log,
	}
	if change != nil {
		change(&cfg)
	}
	p, err := filedetect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sink := &faSink{}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, sink) }()
	deadline := time.Now().Add(60 * time.Second)
	for p.PluginPID() == 0 || p.Counters()["watch_dirs"] == 0 {
		select {
		case err := <-done:
			t.Fatalf("pipeline ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipeline did not start: %v", p.Counters())
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pipeline: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("pipeline did not stop")
		}
	}
	t.Cleanup(stop)
	return p, sink, stop
}

func describe(fs []*wirev1.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "\n  %s %s count=%d score=%.3g thr=%.3g top=%v: %s", f.GetSeverity(), f.GetContext().GetPath(), f.GetCount(),
			f.GetScore(), f.GetThreshold(), f.GetTopFeatures(), f.GetSummary())
	}
	return b.String()
}

// waitFinding polls the sink until match finds a finding or the deadline.
func waitFinding(sink *faSink, deadline time.Time, match func(*wirev1.Finding) bool) *wirev1.Finding {
	for {
		for _, f := range sink.snapshot() {
			if match(f) {
				return f
			}
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sourceTree copies several hundred files of Go's own source tree (the
// seed picks which) into dir.
func sourceTree(t *testing.T, dir string, seed uint64, n int) []string {
	t.Helper()
	files, err := filework.CopySourceTree(dir, seed, n)
	if err != nil {
		t.Skipf("no Go source tree to copy: %v", err)
	}
	if len(files) < 300 {
		t.Fatalf("copied only %d files", len(files))
	}
	return files
}

// ransomware encrypts every file with a fresh AES-256 key (CTR, a random IV
// in front), in place, then renames it to .locked; it returns the count.
func ransomware(t *testing.T, files []string) int {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	blk, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		plain, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		iv := make([]byte, aes.BlockSize)
		_, _ = rand.Read(iv)
		out := make([]byte, len(plain))
		cipher.NewCTR(blk, iv).XORKeyStream(out, plain)
		if err := os.WriteFile(f, append(iv, out...), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f, f+".locked"); err != nil {
			t.Fatal(err)
		}
	}
	return len(files)
}

// TestFileactivityRansomware: a ransomware simulation (AES-256-CTR over
// every file of a copied source tree, in place, then a rename to .locked)
// under a watched folder produces a burst finding within 10 s of its start.
func TestFileactivityRansomware(t *testing.T) {
	in := fileactivityInstall(t)
	root := t.TempDir()
	share := filepath.Join(root, "share")
	files := sourceTree(t, share, 424242, 500)
	p, sink, stop := startWatching(t, in, root)
	time.Sleep(time.Second)

	start := time.Now()
	encrypted := ransomware(t, files)
	t.Logf("encrypted and renamed %d files in %v", encrypted, time.Since(start).Round(time.Millisecond))
	f := waitFinding(sink, start.Add(10*time.Second), func(f *wirev1.Finding) bool {
		return strings.HasPrefix(f.GetContext().GetPath(), share) && f.GetCount() >= 20
	})
	if f == nil {
		stop()
		t.Fatalf("no burst finding within 10 s; counters %v; findings:%s", p.Counters(), describe(sink.snapshot()))
	}
	t.Logf("finding after %v: %s", time.Since(start).Round(time.Millisecond), describe([]*wirev1.Finding{f}))
	if !strings.Contains(f.GetSummary(), ".locked") {
		t.Errorf("summary does not name the new extension: %q", f.GetSummary())
	}
	if f.GetSeverity() < wirev1.Severity_SEVERITY_MEDIUM || len(f.GetTopFeatures()) == 0 || f.GetModel().GetDigest() == "" {
		t.Errorf("finding %+v", f)
	}
}

// TestFileactivityRootLost: a watch root renamed away while the agent runs
// (a deploy swapping a directory, or an attacker) is counted, and the
// pipeline keeps watching the other root (a ransomware run there gives its
// finding); once a directory is back at the lost root's path it is watched
// again (a ransomware run in it gives its finding too).
func TestFileactivityRootLost(t *testing.T) {
	in := fileactivityInstall(t)
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	for _, d := range []string{a, b} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p, sink, stop := startWatchingRoots(t, in, []string{a, b})
	if err := os.Rename(a, a+".old"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.Counters()["watch_roots_lost"] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("root loss not counted: %v", p.Counters())
		}
		time.Sleep(50 * time.Millisecond)
	}
	burst := func(dir string, seed uint64) {
		t.Helper()
		files := sourceTree(t, filepath.Join(dir, "share"), seed, 400)
		time.Sleep(time.Second)
		start := time.Now()
		ransomware(t, files)
		// The burst's folder is the common folder of its events: dir's share,
		// or an ancestor when the burst also holds the other root's events.
		if f := waitFinding(sink, start.Add(20*time.Second), func(f *wirev1.Finding) bool {
			path := f.GetContext().GetPath()
			return (strings.HasPrefix(path, dir+"/") || strings.HasPrefix(dir, path+"/")) && f.GetCount() >= 20 &&
				f.GetTimeUnixNano() >= start.UnixNano()
		}); f == nil {
			stop()
			t.Fatalf("no burst finding under %s within 20 s; counters %v; findings:%s", dir, p.Counters(), describe(sink.snapshot()))
		}
	}
	// The other root is watched again right away.
	deadline = time.Now().Add(30 * time.Second)
	for p.Counters()["watch_dirs"] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the remaining root is not watched: %v", p.Counters())
		}
		time.Sleep(50 * time.Millisecond)
	}
	burst(b, 7)
	// The lost root comes back.
	dirs := p.Counters()["watch_dirs"]
	if err := os.MkdirAll(a, 0o755); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for p.Counters()["watch_dirs"] <= dirs {
		if time.Now().After(deadline) {
			t.Fatalf("the lost root is not watched again: %v", p.Counters())
		}
		time.Sleep(50 * time.Millisecond)
	}
	burst(a, 8)
	if n := p.Counters()["watch_roots_lost"]; n != 1 {
		t.Errorf("watch_roots_lost %d, want 1", n)
	}
}

// TestFileactivityWiper: overwriting every file of a watched source tree
// with zeros in place (CaddyWiper's method) produces a burst finding within
// 10 s that says so. Deleting the files (what `rm -rf` does) is not a wiper
// finding: the benign cleanup workload does the same (TestFileactivityBenign).
func TestFileactivityWiper(t *testing.T) {
	in := fileactivityInstall(t)
	root := t.TempDir()
	share := filepath.Join(root, "www")
	sourceTree(t, share, 515151, 500)
	p, sink, stop := startWatching(t, in, root)
	time.Sleep(time.Second)
	start := time.Now()
	n, err := filework.OverwriteWiper(context.Background(), share)
	if err != nil || n < 400 {
		t.Fatalf("wiper overwrote %d files: %v", n, err)
	}
	f := waitFinding(sink, start.Add(10*time.Second), func(f *wirev1.Finding) bool {
		return strings.HasPrefix(f.GetContext().GetPath(), share) && strings.Contains(f.GetSummary(), "overwritten with constant bytes")
	})
	if f == nil {
		stop()
		t.Fatalf("no wiper finding within 10 s; counters %v; findings:%s", p.Counters(), describe(sink.snapshot()))
	}
	t.Logf("finding after %v: %s", time.Since(start).Round(time.Millisecond), describe([]*wirev1.Finding{f}))
	if f.GetSeverity() < wirev1.Severity_SEVERITY_HIGH || f.GetCount() < 20 {
		t.Errorf("wiper finding %+v", f)
	}
}

// TestFileactivityBenign: ordinary workloads on the same kind of tree give
// no finding: unpacking a source archive, building (gcc), editing files,
// log rotation, a package-manager-like install of many files, saving office
// documents. The seeds differ from the trainer's.
func TestFileactivityBenign(t *testing.T) {
	in := fileactivityInstall(t)
	root := t.TempDir()
	sourceTree(t, filepath.Join(root, "share"), 424242, 500)
	p, sink, stop := startWatching(t, in, root)
	ctx := context.Background()
	r := mrand.New(mrand.NewPCG(99, 1))
	for _, wl := range filework.Benign() {
		seed := 700000 + r.Uint64N(100000)
		t0 := time.Now()
		before := len(sink.snapshot())
		if err := wl.Run(ctx, root, seed); err != nil {
			t.Fatalf("workload %s: %v", wl.Name, err)
		}
		time.Sleep(3 * time.Second) // let held findings come out
		if fs := sink.snapshot()[before:]; len(fs) > 0 {
			t.Errorf("workload %s (seed %d, %v) gave %d findings:%s", wl.Name, seed, time.Since(t0).Round(time.Millisecond), len(fs), describe(fs))
		}
	}
	stop()
	c := p.Counters()
	t.Logf("counters: %v", c)
	if c["file_events_scored"] < 1000 || c["file_events_lost"] != 0 {
		t.Errorf("events scored %d, lost %d", c["file_events_scored"], c["file_events_lost"])
	}
	if fs := sink.snapshot(); len(fs) > 0 {
		t.Errorf("%d findings on benign workloads:%s", len(fs), describe(fs))
	}
}

// dirScanResult is `vigil-agent scan --dir --json`'s output.
type dirScanResult struct {
	Summary struct {
		Files    uint64  `json:"files"`
		Seconds  float64 `json:"seconds"`
		Findings int     `json:"findings"`
		Skipped  uint64  `json:"skipped"`
	} `json:"summary"`
	Findings []struct {
		Detector    string `json:"detector"`
		Severity    string `json:"severity"`
		Count       uint64 `json:"count"`
		Score       float64
		Threshold   float64
		Summary     string                `json:"summary"`
		Context     struct{ Path string } `json:"context"`
		TopFeatures []struct {
			Name         string  `json:"name"`
			Contribution float64 `json:"contribution"`
		} `json:"top_features"`
		Model struct{ Name, Digest string } `json:"model"`
	} `json:"findings"`
}

func scanDir(t *testing.T, in *faInstall, dir string) dirScanResult {
	t.Helper()
	cmd := exec.Command(in.Agent, "scan", "--json", "--dir", dir)
	cmd.Env = append(os.Environ(), "ONNXRUNTIME_LIB="+in.Inst.ORTLib)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("vigil-agent scan --dir %s: %v\nstderr:\n%s", dir, err, errb.String())
	}
	var res dirScanResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("scan --json output: %v\n%s", err, out.String())
	}
	return res
}

// ordinaryFolder writes a folder of ordinary files: documents, images,
// web scripts, shell and Python scripts, ordinary ELF executables.
func ordinaryFolder(t *testing.T, dir string, seed uint64) []string {
	t.Helper()
	r := mrand.New(mrand.NewPCG(seed, 3))
	var out []string
	for i := range 120 {
		kind := filework.DocKinds[i%len(filework.DocKinds)]
		sub := filepath.Join(dir, []string{"docs", "www", "scripts", "media"}[i%4])
		_ = os.MkdirAll(sub, 0o755)
		p := filepath.Join(sub, fmt.Sprintf("file%03d.%s", i, kind))
		mode := os.FileMode(0o644)
		if kind == "sh" || kind == "py" {
			mode = 0o755
		}
		if err := os.WriteFile(p, filework.DocFile(r, kind), mode); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	bin := filepath.Join(dir, "bin")
	_ = os.MkdirAll(bin, 0o755)
	for _, e := range filework.ELFs() {
		b, err := os.ReadFile(e)
		if err != nil {
			continue
		}
		p := filepath.Join(bin, filepath.Base(e))
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// TestFileactivityDroppedFiles: packed executables (an ordinary ELF whose
// .text section is overwritten with AES-encrypted bytes; one compressed
// into a self-extracting script with gzexe) and a base64-obfuscated script
// dropped into a folder of ordinary files are flagged by `vigil-agent scan
// --dir` (the real binary and plugin), each finding naming the file; the
// ordinary files are not.
func TestFileactivityDroppedFiles(t *testing.T) {
	in := fileactivityInstall(t)
	dir := t.TempDir()
	ordinary := ordinaryFolder(t, dir, 31337)
	elfs := filework.ELFs()
	if len(elfs) < 3 {
		t.Skip("not enough ELF executables on this system")
	}
	// Clean scan first: the ordinary folder alone gives no finding.
	res := scanDir(t, in, dir)
	if res.Summary.Files != uint64(len(ordinary)) {
		t.Errorf("scanned %d files, want %d", res.Summary.Files, len(ordinary))
	}
	for _, f := range res.Findings {
		t.Errorf("ordinary file flagged: %s %s (%s)", f.Severity, f.Context.Path, f.Summary)
	}

	time.Sleep(20 * time.Millisecond) // later modification times: the drops come last
	packed, err := filework.PackedELF(elfs[0], 7)
	if err != nil {
		t.Fatal(err)
	}
	drops := map[string]string{
		filepath.Join(dir, "bin", "update-helper"):    "packed ELF",
		filepath.Join(dir, "www", "install.sh"):       "base64 script",
		filepath.Join(dir, "scripts", "backup-agent"): "gzexe",
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "update-helper"), packed, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "install.sh"), filework.Base64Script(7), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := filework.Gzexe(context.Background(), elfs[2], filepath.Join(dir, "scripts", "backup-agent")); err != nil {
		t.Skipf("gzexe: %v", err)
	}
	res = scanDir(t, in, dir)
	flagged := map[string]bool{}
	for _, f := range res.Findings {
		flagged[f.Context.Path] = true
		if _, ok := drops[f.Context.Path]; !ok {
			t.Errorf("ordinary file flagged: %s %s (%s)", f.Severity, f.Context.Path, f.Summary)
			continue
		}
		if f.Detector != "fileactivity" || len(f.TopFeatures) == 0 || f.Model.Digest == "" || !strings.Contains(f.Summary, f.Context.Path) {
			t.Errorf("finding %+v", f)
		}
		t.Logf("%s: %s %.3g/%.3g top %s: %s", drops[f.Context.Path], f.Severity, f.Score, f.Threshold, f.TopFeatures[0].Name, f.Summary)
	}
	for p, what := range drops {
		if !flagged[p] {
			t.Errorf("%s %s not flagged", what, p)
		}
	}
}

// rssBytes is a process's resident set size (0 if unknown).
func rssBytes(pid int) uint64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb uint64
			_, _ = fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}

// TestFileactivityAdversarial: the live pipeline (watcher + real plugin)
// over a hostile tree: link loops, a link to /, names with newlines and
// invalid UTF-8, a 5 GiB sparse file, a folder deleted while watched, a
// permission-denied folder, 100,000 empty files. No crash, no lost events,
// clear counters; scan --dir over the same tree works too. (As root the 000
// folder here is readable anyway; TestFileactivityPermissionDenied tests
// unreadable folders and files as an unprivileged user.)
func TestFileactivityAdversarial(t *testing.T) {
	in := fileactivityInstall(t)
	root := t.TempDir()
	_ = os.Symlink(root, filepath.Join(root, "loop"))
	_ = os.Symlink("/", filepath.Join(root, "slash"))
	_ = os.Symlink("b", filepath.Join(root, "a"))
	_ = os.Symlink("a", filepath.Join(root, "b"))
	p, sink, stop := startWatching(t, in, root)
	odd := filepath.Join(root, "line\nbreak\xff\xfe.sh")
	if err := os.WriteFile(odd, filework.Base64Script(3), 0o755); err != nil {
		t.Fatal(err)
	}
	// Let its file finding out before the mass activity below starts: a
	// burst in the same tree absorbs the file anomalies it holds (all under
	// FileAlwaysRatio, 10 ×).
	time.Sleep(3 * time.Second)
	sparse := filepath.Join(root, "sparse.img")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Truncate(5 << 30)
	_, _ = f.WriteAt([]byte("tail"), 5<<30-4)
	_ = f.Close()
	gone := filepath.Join(root, "gone", "deep")
	_ = os.MkdirAll(gone, 0o755)
	for i := range 50 {
		_ = os.WriteFile(filepath.Join(gone, fmt.Sprint(i)), []byte("x"), 0o644)
	}
	_ = os.RemoveAll(filepath.Join(root, "gone"))
	denied := filepath.Join(root, "denied")
	_ = os.Mkdir(denied, 0o755)
	_ = os.WriteFile(filepath.Join(denied, "secret"), []byte("secret"), 0o600)
	_ = os.Chmod(denied, 0)
	t.Cleanup(func() { _ = os.Chmod(denied, 0o755) })
	// Memory: the agent side (this process: watcher, pipeline, aggregator)
	// and the plugin, sampled while the 100,000 files are created and
	// watched.
	var peakHeap, peakPlugin uint64
	memStop := make(chan struct{})
	memDone := make(chan struct{})
	go func() {
		defer close(memDone)
		var ms goruntime.MemStats
		for {
			select {
			case <-memStop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			goruntime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse+ms.StackInuse)
			peakPlugin = max(peakPlugin, rssBytes(p.PluginPID()))
		}
	}()
	many := filepath.Join(root, "many")
	const n = 100000
	for d := range 100 {
		sub := filepath.Join(many, fmt.Sprint(d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range n / 100 {
			fh, err := os.Create(filepath.Join(sub, fmt.Sprint(i)))
			if err != nil {
				t.Fatal(err)
			}
			_ = fh.Close()
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	for p.Counters()["file_events_scored"] < n && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	close(memStop)
	<-memDone
	t.Logf("BENCH memory while watching %d files: agent-side heap+stacks peak %.1f MiB (Go runtime), plugin RSS peak %.1f MiB",
		n, float64(peakHeap)/(1<<20), float64(peakPlugin)/(1<<20))
	stop()
	c := p.Counters()
	t.Logf("counters: %v", c)
	t.Logf("findings:%s", describe(sink.snapshot()))
	if c["file_events_scored"] < n || c["file_events_lost"] != 0 || c["file_plugin_restarts"] != 0 {
		t.Errorf("scored %d (want >= %d), lost %d, plugin restarts %d", c["file_events_scored"], n, c["file_events_lost"], c["file_plugin_restarts"])
	}
	found := false
	for _, f := range sink.snapshot() {
		if strings.Contains(f.GetContext().GetPath(), `line\nbreak\xff\xfe.sh`) {
			found = true
		}
	}
	if !found {
		t.Errorf("the obfuscated script with a newline and invalid UTF-8 in its name was not reported on its own (escaped)")
	}
	res := scanDir(t, in, root)
	t.Logf("scan --dir: %d files, %d skipped, %d findings in %.1f s", res.Summary.Files, res.Summary.Skipped, res.Summary.Findings, res.Summary.Seconds)
	if res.Summary.Files < n {
		t.Errorf("scan --dir scored %d files, want >= %d", res.Summary.Files, n)
	}
}
