package pluginhost_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/sdktest"
)

const examplePkg = "github.com/vigil-edge/vigil/plugins/example/cmd/vigil-detector-example"

var (
	buildOnce  sync.Once
	exampleBin string
)

func needE2E(t testing.TB) string {
	t.Helper()
	if os.Getenv(sdktest.E2EEnv) != "1" {
		t.Skipf("starts plugin processes: set %s=1", sdktest.E2EEnv)
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vigil-pluginhost-")
		if err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(dir, 0o755)
		exampleBin = filepath.Join(dir, "vigil-detector-example")
		out, err := runGo("build", "-o", exampleBin, examplePkg)
		if err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	})
	return exampleBin
}

func TestMain(m *testing.M) {
	if serveProbe() || serveStuckConsume() || serveHostile() || serveStopInfo() {
		os.Exit(0)
	}
	code := m.Run()
	if exampleBin != "" {
		_ = os.RemoveAll(filepath.Dir(exampleBin))
	}
	os.Exit(code)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tw{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tw struct{ t testing.TB }

func (w tw) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// resultLog records batch results and checks they are contiguous per
// instance.
type resultLog struct {
	mu      sync.Mutex
	results []sdk.BatchResult
}

func (l *resultLog) add(br sdk.BatchResult) {
	l.mu.Lock()
	l.results = append(l.results, br)
	l.mu.Unlock()
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKillPluginMidStream SIGKILLs a slow plugin while records stream into a
// small ring: the host restarts it, pushing never blocks for long, and every
// record is accounted for exactly once: scored, lost in flight (published,
// not consumed: head - tail), unreported, or dropped before publication.
func TestKillPluginMidStream(t *testing.T) {
	bin := needE2E(t)
	var rl resultLog
	// The model is loaded after the start (and reloaded into the restarted
	// plugin): its directory must be readable in the sandbox.
	dir := sdktest.ReadableTempDir(t)
	h, err := pluginhost.New(pluginhost.Config{
		Path: bin, Args: []string{"-batch-sleep=3ms"}, Logger: testLogger(t),
		RingSlots: 1024, MaxBatch: 128, MaxDelay: time.Millisecond,
		FullWait: 20 * time.Millisecond, DownWait: 20 * time.Millisecond,
		MinBackoff: 50 * time.Millisecond, OnResult: rl.add,
		Sandbox: pluginhost.Sandbox{ReadOnly: []string{dir}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	model, err := filepath.Abs("../../plugins/example/testdata/model.json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(model)
	model = filepath.Join(dir, "model.json")
	if err := os.WriteFile(model, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := h.LoadModel(ctx, model)
	if err != nil {
		t.Fatal(err)
	}

	var given atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the capture loop
		defer wg.Done()
		pkts := sdktest.SynthPackets(256)
		for {
			select {
			case <-stop:
				return
			default:
			}
			given.Add(uint64(len(pkts)))
			if _, err := h.Push(ctx, pkts); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(100 * time.Microsecond) // ~2.5M packets/s at most
		}
	}()

	waitFor(t, "records to be scored", 30*time.Second, func() bool { return h.Stats().Scored > 3000 })
	pid := h.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restart", 30*time.Second, func() bool { return h.Stats().Restarts == 1 && h.PID() != 0 })
	if h.PID() == pid {
		t.Fatal("same pid after restart")
	}
	scoredAtRestart := h.Stats().Scored
	waitFor(t, "records scored by the new instance", 30*time.Second, func() bool {
		return h.Stats().Scored > scoredAtRestart+3000
	})
	hl, err := h.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if hl.Model != m {
		t.Errorf("model after restart %+v, want %+v (reloaded)", hl.Model, m)
	}
	close(stop)
	wg.Wait()
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	if err := h.Close(cctx); err != nil {
		t.Fatal(err)
	}

	st := h.Stats()
	t.Logf("stats after kill and drain: %+v", st)
	if st.Restarts != 1 || st.Starts != 2 {
		t.Errorf("restarts %d starts %d", st.Restarts, st.Starts)
	}
	if st.LostInFlight == 0 {
		t.Errorf("expected records in flight in the full ring at the kill")
	}
	if got := st.Scored + st.Lost(); got != given.Load() {
		t.Errorf("scored %d + lost %d = %d, want every given record %d", st.Scored, st.Lost(), got, given.Load())
	}
	if st.Published != st.Scored+st.LostInFlight+st.Unreported {
		t.Errorf("published %d != scored %d + lost in flight %d + unreported %d",
			st.Published, st.Scored, st.LostInFlight, st.Unreported)
	}
	// The results show one gap in the sequence: the records the dead
	// instance never reported, exactly LostInFlight + Unreported.
	rl.mu.Lock()
	defer rl.mu.Unlock()
	var gaps []string
	var gap uint64
	next := uint64(0)
	for _, br := range rl.results {
		if br.Start != next {
			gaps = append(gaps, fmt.Sprintf("[%d,%d)", next, br.Start))
			gap += br.Start - next
		}
		next = br.End
	}
	if len(gaps) != 1 || gap != st.LostInFlight+st.Unreported {
		t.Errorf("gaps %v (total %d), want one gap of %d", gaps, gap, st.LostInFlight+st.Unreported)
	}
	if next != st.Published {
		t.Errorf("results end at %d, published %d", next, st.Published)
	}
}

// TestPluginUnprivileged: as root, the plugin runs as nobody in its own,
// empty network namespace, with the parent-death signal set.
func TestPluginUnprivileged(t *testing.T) {
	bin := needE2E(t)
	if os.Geteuid() != 0 {
		t.Skip("not root: the plugin keeps the agent's uid")
	}
	h, err := pluginhost.New(pluginhost.Config{Path: bin, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	pid := h.PID()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "Uid:", "Gid:":
			if strings.Join(f[1:], " ") != "65534 65534 65534 65534" {
				t.Errorf("%s", line)
			}
		case "CapEff:", "CapPrm:":
			if f[1] != "0000000000000000" {
				t.Errorf("%s", line)
			}
		}
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	plug, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil || plug == self {
		t.Errorf("plugin network namespace %q (agent's %q, err %v)", plug, self, err)
	}
}

// TestCloseDrains: records pushed before Close are scored, not lost.
func TestCloseDrains(t *testing.T) {
	bin := needE2E(t)
	h, err := pluginhost.New(pluginhost.Config{Path: bin, Logger: testLogger(t), Args: []string{"-batch-sleep=1ms"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	pkts := sdktest.SynthPackets(50000)
	if n, err := h.Push(t.Context(), pkts); err != nil || n != len(pkts) {
		t.Fatalf("Push = %d, %v", n, err)
	}
	if err := h.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := h.Stats(); st.Scored != 50000 || st.Lost() != 0 || st.Anomalies != uint64((50000+96)/97) {
		t.Fatalf("after Close: %+v", st)
	}
	if _, err := h.Push(t.Context(), pkts[:1]); err == nil {
		t.Fatal("Push after Close succeeded")
	}
}

// TestLoadModelWaitsForStart: a model handed to the host before its plugin is
// up (an update offered as the agent starts) is loaded once the plugin is up,
// not refused; WaitRunning fails with ErrNotRunning when ctx ends first and
// with ErrClosed on a closed host. Before, LoadModel refused at once with
// ErrNotRunning, and the updater rejected the rollout.
func TestLoadModelWaitsForStart(t *testing.T) {
	bin := needE2E(t)
	dir := sdktest.ReadableTempDir(t)
	b, err := os.ReadFile("../../plugins/example/testdata/model.json")
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "model.json")
	if err := os.WriteFile(model, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := pluginhost.Config{Path: bin, Logger: testLogger(t), RingSlots: 1024, MaxBatch: 128,
		Sandbox: pluginhost.Sandbox{ReadOnly: []string{dir}}}
	h, err := pluginhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	short, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err = h.WaitRunning(short)
	scancel()
	if !errors.Is(err, pluginhost.ErrNotRunning) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRunning before Start = %v, want ErrNotRunning after the deadline", err)
	}

	type res struct {
		m   sdk.ModelInfo
		err error
	}
	got := make(chan res, 1)
	go func() {
		m, err := h.LoadModel(ctx, model)
		got <- res{m, err}
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case r := <-got:
		t.Fatalf("LoadModel returned before the plugin started: %+v %v", r.m, r.err)
	default:
	}
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || r.m.Name == "" {
		t.Fatalf("LoadModel before Start: %+v %v", r.m, r.err)
	}
	if h.WaitRunning(ctx) != nil {
		t.Fatal("WaitRunning with the plugin up failed")
	}

	closed, err := pluginhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := closed.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := closed.WaitRunning(ctx); !errors.Is(err, pluginhost.ErrClosed) {
		t.Fatalf("WaitRunning on a closed host = %v, want ErrClosed", err)
	}
}
