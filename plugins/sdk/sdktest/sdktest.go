// Package sdktest is the conformance harness every Vigil detector plugin
// passes: Run starts the plugin binary through a plugin host and checks the
// contract of plugins/sdk (handshake, Info, LoadModel keeping the old model
// on error, empty batches, the ring round trip, garbage records, Health, and
// death with the parent).
//
// The SDK imports nothing from the agent, so the host is passed in
// (Options.NewHost); agent/pluginhost/pluginhosttest.NewHost is the agent's
// real host (go-plugin, checksum, AutoMTLS, ring, supervision), so that
// conformance means "works with the agent":
//
//	func TestConformance(t *testing.T) {
//		if !sdktest.Enabled() {
//			t.Skip("set VIGIL_E2E=1")
//		}
//		bin := sdktest.BuildPlugin(t, "github.com/vigil-edge/vigil/plugins/x/cmd/vigil-detector-x")
//		sdktest.Run(t, bin, sdktest.Options{NewHost: pluginhosttest.NewHost, ModelPath: "testdata/x.vgb"})
//	}
package sdktest

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// E2EEnv gates the harness: it starts real processes, so it runs only when
// VIGIL_E2E=1 (as `make test` sets).
const E2EEnv = "VIGIL_E2E"

// childEnv marks the re-executed test binary that plays the agent in the
// parent-death check.
const childEnv = "VIGIL_SDKTEST_PDEATHSIG_CHILD"

const pidPrefix = "VIGIL_SDKTEST_PLUGIN_PID="

// HostConfig is what the harness asks of a host.
type HostConfig struct {
	Path      string
	Args, Env []string
	MaxDelay  time.Duration         // the plugin's batch latency bound
	OnResult  func(sdk.BatchResult) // every ring batch result, in order
	Logger    *slog.Logger

	// ReadOnly are the files and directories the plugin must be able to
	// read besides its start arguments (the directory of the models the
	// harness hands it with LoadModel): a host that confines plugins
	// (agent/pluginhost's Landlock sandbox) allows them.
	ReadOnly []string
}

// HostStats are the host counters the harness checks.
type HostStats struct {
	Published, Scored, Lost, Restarts uint64
}

// Host is the part of a plugin host the harness drives (the agent's is
// agent/pluginhost.Host, adapted by agent/pluginhost/pluginhosttest).
type Host interface {
	Start(ctx context.Context) error
	Close(ctx context.Context) error
	Info() sdk.PluginInfo
	PID() int
	LoadModel(ctx context.Context, bundlePath string) (sdk.ModelInfo, error)
	Health(ctx context.Context) (sdk.Health, error)
	Score(ctx context.Context, pkts []event.Packet) (sdk.Result, error)
	Push(ctx context.Context, pkts []event.Packet) (int, error)
	PushEncoded(ctx context.Context, raw []byte) (int, error)
	Stats() HostStats
}

// Enabled reports whether Run will run (VIGIL_E2E=1, or this process is the
// harness's re-executed stand-in agent): guard expensive setup such as
// BuildPlugin with it.
func Enabled() bool { return os.Getenv(E2EEnv) == "1" || os.Getenv(childEnv) != "" }

// Options tune Run.
type Options struct {
	// NewHost makes the host that starts the plugin (required).
	NewHost func(HostConfig) (Host, error)
	// ModelPath is a valid model bundle for the detector; when set, Run
	// checks that it loads and that a bad bundle leaves it active. It is
	// copied into a temporary directory the plugin (running as nobody when
	// the test runs as root) can read.
	ModelPath string
	// Args and Env are the plugin's arguments and environment.
	Args, Env []string
	// Records is the size of the ring round trip (default 10000).
	Records int
	// SkipParentDeath skips the check that the plugin dies with its parent.
	SkipParentDeath bool
	// Logger receives the host's and the plugin's logs (default: t.Log).
	Logger *slog.Logger
}

// Run checks the plugin binary at path against the SDK contract. It skips
// unless VIGIL_E2E=1.
func Run(t *testing.T, path string, opts Options) {
	if opts.NewHost == nil {
		t.Fatal("sdktest.Options.NewHost is required (agent/pluginhost/pluginhosttest.NewHost)")
	}
	if os.Getenv(childEnv) != "" {
		runChild(t, path, opts)
		return
	}
	if os.Getenv(E2EEnv) != "1" {
		t.Skipf("conformance starts the plugin binary: set %s=1 to run it", E2EEnv)
	}
	if opts.Records <= 0 {
		opts.Records = 10000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	dir := ReadableTempDir(t)
	model := ""
	if opts.ModelPath != "" {
		model = filepath.Join(dir, filepath.Base(opts.ModelPath))
		copyFile(t, opts.ModelPath, model)
	}

	var rmu sync.Mutex
	var results []sdk.BatchResult
	h, err := opts.NewHost(HostConfig{
		Path: path, Args: opts.Args, Env: opts.Env, Logger: opts.Logger, ReadOnly: []string{dir},
		MaxDelay: time.Millisecond,
		OnResult: func(br sdk.BatchResult) {
			rmu.Lock()
			results = append(results, br)
			rmu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatalf("handshake / start: %v", err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_ = h.Close(cctx)
	})

	t.Run("Info", func(t *testing.T) {
		in := h.Info()
		if in.Name == "" || in.Version == "" {
			t.Errorf("Info name %q version %q: both required", in.Name, in.Version)
		}
		if in.EventKind != sdk.EventPacket && in.EventKind != sdk.EventFile {
			t.Errorf("Info event kind %v", in.EventKind)
		}
		if len(in.FeatureSets) == 0 {
			t.Error("Info names no feature set")
		}
		for _, fs := range in.FeatureSets {
			if !regexp.MustCompile(`^[a-z0-9_-]+/v[0-9]+$`).MatchString(fs) {
				t.Errorf("feature set %q is not name/vN", fs)
			}
		}
		if in.Dim <= 0 {
			t.Errorf("Info dim %d", in.Dim)
		}
	})

	t.Run("LoadModel", func(t *testing.T) {
		if model != "" {
			m, err := h.LoadModel(ctx, model)
			if err != nil {
				t.Fatalf("LoadModel(%s): %v", opts.ModelPath, err)
			}
			if m.Name == "" || !strings.HasPrefix(m.Digest, "sha256:") {
				t.Errorf("model info %+v: name and sha256 digest required", m)
			}
		}
		before, err := h.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		garbage := filepath.Join(dir, "garbage.vgb")
		writeRandom(t, garbage, 4096)
		for _, bad := range []string{filepath.Join(dir, "does-not-exist.vgb"), garbage, dir} {
			if m, err := h.LoadModel(ctx, bad); err == nil {
				t.Errorf("LoadModel(%s) succeeded: %+v", bad, m)
			}
		}
		after, err := h.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after.Model != before.Model {
			t.Errorf("a failed LoadModel changed the model: %+v -> %+v", before.Model, after.Model)
		}
	})

	t.Run("ScoreEmpty", func(t *testing.T) {
		if h.Info().EventKind != sdk.EventPacket {
			t.Skip("not a packet detector")
		}
		res, err := h.Score(ctx, nil)
		if err != nil {
			t.Fatalf("Score(empty): %v", err)
		}
		if res.Stats.Count != 0 || len(res.Anomalies) != 0 {
			t.Errorf("Score(empty) = %+v", res)
		}
		pkts := synthPackets(100)
		res, err = h.Score(ctx, pkts)
		if err != nil {
			t.Fatalf("Score(100): %v", err)
		}
		if res.Stats.Count != 100 {
			t.Errorf("Score(100) stats count %d", res.Stats.Count)
		}
		for _, a := range res.Anomalies {
			if a.Index >= 100 {
				t.Errorf("anomaly index %d out of batch", a.Index)
			}
		}
	})

	waitScored := func(t *testing.T, want uint64) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for h.Stats().Scored < want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if st := h.Stats(); st.Scored != want {
			t.Fatalf("scored %d records, want %d (stats %+v)", st.Scored, want, st)
		}
	}

	t.Run("RingRoundTrip", func(t *testing.T) {
		if h.Info().EventKind != sdk.EventPacket {
			t.Skip("not a packet detector")
		}
		start := h.Stats().Published
		pkts := synthPackets(opts.Records)
		n, err := h.Push(ctx, pkts)
		if err != nil || n != len(pkts) {
			t.Fatalf("Push = %d, %v", n, err)
		}
		waitScored(t, start+uint64(n))
		rmu.Lock()
		defer rmu.Unlock()
		var count uint64
		next := uint64(0)
		for i, br := range results {
			if i > 0 && br.Start != next {
				t.Fatalf("result %d covers [%d, %d), want start %d", i, br.Start, br.End, next)
			}
			next = br.End
			if br.Stats.Count != br.End-br.Start {
				t.Errorf("result [%d, %d) stats count %d", br.Start, br.End, br.Stats.Count)
			}
			if br.Err != "" {
				t.Errorf("batch [%d, %d) failed: %s", br.Start, br.End, br.Err)
			}
			if br.Stats.P50 > br.Stats.P90 || br.Stats.P90 > br.Stats.P99 || br.Stats.P99 > br.Stats.Max {
				t.Errorf("quantiles not ordered: %+v", br.Stats)
			}
			count += br.Stats.Count
		}
		if count != uint64(opts.Records) {
			t.Errorf("stats count %d, want %d", count, opts.Records)
		}
	})

	t.Run("GarbageRecords", func(t *testing.T) {
		if h.Info().EventKind != sdk.EventPacket {
			t.Skip("not a packet detector")
		}
		before := h.Stats()
		raw := make([]byte, 5000*event.PacketRecordSize)
		_, _ = rand.Read(raw)
		n, err := h.PushEncoded(ctx, raw)
		if err != nil || n != 5000 {
			t.Fatalf("PushEncoded = %d, %v", n, err)
		}
		waitScored(t, before.Scored+5000)
		if st := h.Stats(); st.Restarts != before.Restarts || st.Lost != before.Lost {
			t.Fatalf("plugin did not survive garbage records: %+v", st)
		}
	})

	t.Run("Health", func(t *testing.T) {
		hl, err := h.Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !hl.OK {
			t.Errorf("Health not ok: %q", hl.Message)
		}
		if st := h.Stats(); st.Restarts != 0 || st.Lost != 0 {
			t.Errorf("restarts or losses during conformance: %+v", st)
		}
	})

	t.Run("DiesWithParent", func(t *testing.T) {
		if opts.SkipParentDeath {
			t.Skip("skipped by options")
		}
		checkParentDeath(t)
	})
}

// runChild plays the agent for checkParentDeath: it starts the plugin,
// prints its pid and waits to be killed.
func runChild(t *testing.T, path string, opts Options) {
	h, err := opts.NewHost(HostConfig{Path: path, Args: opts.Args, Env: opts.Env})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s%d\n", pidPrefix, h.PID())
	time.Sleep(5 * time.Minute)
	t.Fatal("child was not killed")
}

// checkParentDeath re-executes this test binary as a stand-in agent that
// starts the plugin, SIGKILLs it, and expects the plugin to die (Pdeathsig).
func checkParentDeath(t *testing.T) {
	parts := strings.Split(t.Name(), "/")
	parts = parts[:len(parts)-1] // the test that called Run
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	cmd := exec.Command(os.Args[0], "-test.run="+strings.Join(parts, "/"), "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pidc := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), pidPrefix); ok {
				if pid, err := strconv.Atoi(v); err == nil {
					pidc <- pid
				}
			}
		}
		close(pidc)
		_, _ = io.Copy(io.Discard, out)
	}()
	var pid int
	select {
	case p, ok := <-pidc:
		if !ok || p <= 0 {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal("stand-in agent did not report a plugin pid")
		}
		pid = p
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("stand-in agent did not start the plugin in time")
	}
	if !alive(pid) {
		t.Fatalf("plugin %d not running before the agent was killed", pid)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("plugin %d outlived its killed parent", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie (an orphaned zombie
// may stay unreaped when PID 1 does not reap).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// synthPackets returns n plausible TCP/UDP packets, every 97th a SYN+FIN.
func synthPackets(n int) []event.Packet {
	pkts := make([]event.Packet, n)
	for i := range pkts {
		p := &pkts[i]
		p.TimestampNs = int64(1_700_000_000_000_000_000 + i*1000)
		p.SrcIP = [16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 0, 14: byte(i >> 8), 15: byte(i)}
		p.DstIP = [16]byte{10: 0xff, 11: 0xff, 12: 192, 13: 168, 14: 1, 15: 1}
		p.SrcPort, p.DstPort = uint16(1024+i%50000), 443
		p.Length, p.TTL, p.Flags = 60, 64, event.FlagIPv4
		p.Proto, p.TCPFlags = event.ProtoTCP, event.TCPAck
		if i%7 == 0 {
			p.Proto, p.TCPFlags, p.DstPort = event.ProtoUDP, 0, 53
		}
		if i%97 == 0 {
			p.Proto, p.TCPFlags = event.ProtoTCP, event.TCPSyn|event.TCPFin
		}
	}
	return pkts
}

// SynthPackets returns n synthetic packets (every 97th a TCP SYN+FIN), for
// detector tests and benchmarks.
func SynthPackets(n int) []event.Packet { return synthPackets(n) }

// BuildPlugin builds the main package pkg (an import path or a directory)
// into a temporary directory that an unprivileged plugin user can read and
// execute, and returns the binary's path. If VIGIL_BIN holds a binary of the
// same name it is used instead.
func BuildPlugin(t testing.TB, pkg string) string {
	t.Helper()
	name := filepath.Base(pkg)
	if bin := os.Getenv("VIGIL_BIN"); bin != "" {
		if p := filepath.Join(bin, name); isExecutable(p) {
			dst := filepath.Join(ReadableTempDir(t), name)
			copyFile(t, p, dst)
			_ = os.Chmod(dst, 0o755)
			return dst
		}
	}
	dst := filepath.Join(ReadableTempDir(t), name)
	cmd := exec.Command("go", "build", "-o", dst, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return dst
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// ReadableTempDir returns a temporary directory (removed after the test)
// that other users can read and traverse, as a plugin running as nobody
// must.
func ReadableTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vigil-sdktest-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeRandom(t testing.TB, path string, n int) {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// testWriter sends log output to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
