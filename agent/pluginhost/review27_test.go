package pluginhost_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	pb "github.com/vigil-edge/vigil/plugins/sdk/proto"
)

// probeHangHealth makes the probe plugin's Health hang (probe op
// "hang-health").
var probeHangHealth atomic.Bool

// TestPluginInheritsNoStrayDescriptors: a descriptor the agent holds
// without close-on-exec was inherited by every plugin it launched. The live
// capture's AF_PACKET sockets are such descriptors (gopacket's afpacket
// opens them without SOCK_CLOEXEC): a plugin compromised by the records it
// parses could read every packet with its payload, and inject packets on
// the monitored interface, from inside its sandbox (the seccomp filter and
// Landlock refuse new sockets, not inherited ones). A plugin gets standard
// input, output and error, its ring and its wake pipe: nothing else.
func TestPluginInheritsNoStrayDescriptors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent-secret")
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	fileFD, err := unix.Open(path, unix.O_RDONLY, 0) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fileFD)
	sockFD, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0) // no SOCK_CLOEXEC, like afpacket's
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sockFD)
	sock, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(sockFD))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		sb   pluginhost.Sandbox
	}{
		{"sandboxed", pluginhost.Sandbox{}},
		{"sandbox off", pluginhost.Sandbox{Disable: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := probeHost(t, tc.sb)
			// An inherited descriptor keeps its number.
			for fd, leak := range map[int]string{fileFD: path, sockFD: sock} {
				if got := probeIn(t, h, "readlink:/proc/self/fd/"+strconv.Itoa(fd)); got == leak {
					t.Errorf("the plugin inherited the agent's %s as descriptor %d", leak, fd)
				}
			}
		})
	}
}

// TestHungCallRestartsPlugin: the unary calls (Score, the file plugins'
// only path; LoadModel; Health) had no deadline but the caller's, and the
// file pipeline and the updater call with contexts that never end. A plugin
// hung in one of them (a detector stuck on some input, a model that makes
// the plugin loop) held the file pipeline or the updater for as long as the
// agent ran, and was never restarted (StallTimeout covered ring plugins
// only). Each call must end within its bound (StallTimeout; LoadModel
// StartTimeout), and the hung plugin be restarted.
func TestHungCallRestartsPlugin(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pkts := make([]event.Packet, 8)
	for _, tc := range []struct {
		name string
		op   string // run in the plugin first ("": none)
		call func(ctx context.Context, h *pluginhost.Host) error
	}{
		{"score", "hang-score", func(ctx context.Context, h *pluginhost.Host) error {
			_, err := h.Score(ctx, pkts)
			return err
		}},
		{"health", "hang-health", func(ctx context.Context, h *pluginhost.Host) error {
			_, err := h.Health(ctx)
			return err
		}},
		{"load model", "", func(ctx context.Context, h *pluginhost.Host) error {
			_, err := h.LoadModel(ctx, "hang-load")
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := pluginhost.New(pluginhost.Config{Path: self, Env: []string{probeEnv + "=1"}, KeepPrivileges: true,
				Logger: testLogger(t), RingSlots: 1024, MaxBatch: 16, MinBackoff: 10 * time.Millisecond,
				StallTimeout: time.Second, StartTimeout: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := h.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer func() {
				cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer ccancel()
				_ = h.Close(cctx)
			}()
			if tc.op != "" {
				if got := probeIn(t, h, tc.op); got != "ok" {
					t.Fatalf("%s: %s", tc.op, got)
				}
				// The model the host reloads into a restarted plugin: not the hang.
				if got := probeIn(t, h, "read:/proc/self/status"); got != "ok" {
					t.Fatalf("read: %s", got)
				}
			}
			pid := h.PID()
			cctx, ccancel := context.WithTimeout(ctx, 20*time.Second) // the caller's context: longer than any bound
			defer ccancel()
			begin := time.Now()
			err = tc.call(cctx, h)
			took := time.Since(begin)
			t.Logf("hung call: %v after %s", err, took.Round(time.Millisecond))
			if err == nil || took > 10*time.Second {
				t.Fatalf("call to a hung plugin returned %v after %s (bound 1 s, LoadModel 3 s)", err, took)
			}
			waitFor(t, "the hung plugin restarted", 20*time.Second, func() bool {
				return h.Stats().Restarts == 1 && h.PID() != 0 && h.PID() != pid
			})
			if _, err := h.Score(ctx, pkts); err != nil {
				t.Errorf("the restarted plugin does not score: %v", err)
			}
			if _, err := h.Health(ctx); err != nil {
				t.Errorf("the restarted plugin does not answer Health: %v", err)
			}
		})
	}
}

// countHandler counts the records logged at each level.
type countHandler struct{ n, warn *atomic.Int64 }

func (c countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (c countHandler) Handle(_ context.Context, r slog.Record) error {
	c.n.Add(1)
	if r.Level >= slog.LevelWarn && strings.Contains(r.Message, "dropped") {
		c.warn.Add(1)
	}
	return nil
}
func (c countHandler) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c countHandler) WithGroup(string) slog.Handler      { return c }

// TestStderrFloodBounded: every line a plugin wrote to its standard error
// became a record in the agent's log, with no bound: a plugin (compromised,
// or a C library complaining about every record) writing some 100,000
// lines a second filled the journal and rotated the agent's own records
// out. The host forwards a bounded rate, counts the rest
// (Stats.LogLinesDropped) and says so in the log.
func TestStderrFloodBounded(t *testing.T) {
	const lines = 100_000
	var n, warn atomic.Int64
	h := probeHostLog(t, pluginhost.Sandbox{}, slog.New(countHandler{&n, &warn}))
	before := n.Load()
	if got := probeIn(t, h, "flood:"+strconv.Itoa(lines)); got != "ok" {
		t.Fatalf("flood: %s", got)
	}
	// The lines pass through the host's stderr reader: wait until every
	// one is either logged or counted as dropped.
	waitFor(t, "the flood forwarded", 30*time.Second, func() bool {
		return n.Load()-before+int64(h.Stats().LogLinesDropped) >= lines
	})
	logged := n.Load() - before
	st := h.Stats()
	t.Logf("%d lines: %d log records, %d dropped", lines, logged, st.LogLinesDropped)
	if logged > 5000 {
		t.Errorf("%d of %d flooded lines reached the agent's log", logged, lines)
	}
	if st.LogLinesDropped == 0 {
		t.Error("dropped lines not counted")
	}
	// The drop is said in the log once lines flow again.
	time.Sleep(100 * time.Millisecond)
	if got := probeIn(t, h, "flood:1"); got != "ok" {
		t.Fatalf("flood: %s", got)
	}
	waitFor(t, "the drop reported in the log", 10*time.Second, func() bool { return warn.Load() > 0 })
}

// hostileEnv makes the test binary a plugin (the probe) whose answers are
// rewritten on the wire, as a compromised plugin could send them
// (serveHostile).
const hostileEnv = "VIGIL_PLUGINHOST_HOSTILE"

// hostileAnomalies are a compromised plugin's anomalies for the records
// [s, e) of a batch (e-s >= 2): one with a source address of 100 KiB,
// the same record again, one past the batch, and an aggregate of 2^62
// records.
func hostileAnomalies(s, e uint64) []*pb.Anomaly {
	return []*pb.Anomaly{
		{Index: s, Score: 2, Threshold: 1, Context: map[string]string{sdk.ContextSrcIP: strings.Repeat("1", 100<<10), sdk.ContextDstIP: "10.0.0.1"}},
		{Index: s, Score: 3, Threshold: 1},
		{Index: e, Score: 2, Threshold: 1},
		{Index: s + 1, Score: 2, Threshold: 1, Aggregate: &pb.Aggregate{Count: 1 << 62, TcpSyn: 1 << 62}},
	}
}

type hostileStream struct{ grpc.ServerStream }

func (s hostileStream) SendMsg(m any) error {
	if r, ok := m.(*pb.RingResult); ok && r.GetEnd()-r.GetStart() >= 2 {
		r.Anomalies = hostileAnomalies(r.GetStart(), r.GetEnd())
		r.Stats = &pb.BatchStats{Count: 1 << 40, Anomalies: 1 << 40}
	}
	return s.ServerStream.SendMsg(m)
}

func serveHostile() bool {
	if os.Getenv(hostileEnv) != "1" {
		return false
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if r, ok := req.(*pb.LoadModelRequest); ok && r.GetBundlePath() == "long-error" {
			return nil, status.Error(codes.FailedPrecondition, strings.Repeat("x", hostileErrorLen))
		}
		if r, ok := req.(*pb.LoadModelRequest); ok && strings.HasPrefix(r.GetBundlePath(), "long-") {
			m := &pb.ModelInfo{Name: "nf", Digest: "sha256:00", FeatureSet: "netflow/v1"}
			long := strings.Repeat("n", sdk.MaxModelText+1)
			switch r.GetBundlePath() {
			case "long-name":
				m.Name = long
			case "long-digest":
				m.Digest = long
			case "long-feature-set":
				m.FeatureSet = long
			}
			return &pb.LoadModelResponse{Model: m}, nil
		}
		resp, err := handler(ctx, req)
		if r, ok := resp.(*pb.ScoreResponse); ok && err == nil {
			n := uint64(len(req.(*pb.ScoreRequest).GetRecords()) / event.PacketRecordSize)
			r.Anomalies = hostileAnomalies(0, n)
			r.Stats = &pb.BatchStats{Count: 1 << 40, Anomalies: 1 << 40}
		}
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, hostileStream{ss})
	}
	serveProbeWith(grpc.UnaryInterceptor(unary), grpc.StreamInterceptor(stream))
	return true
}

// checkHostile checks what the host delivered of a hostile answer for n
// records starting at start.
func checkHostile(t *testing.T, what string, as []sdk.Anomaly, st sdk.Stats, start, n uint64) {
	t.Helper()
	seen := map[uint64]bool{}
	for _, a := range as {
		if a.Index < start || a.Index >= start+n || seen[a.Index] {
			t.Errorf("%s: anomaly at %d delivered (batch [%d, %d), seen before: %v)", what, a.Index, start, start+n, seen[a.Index])
		}
		seen[a.Index] = true
	}
	for _, a := range as {
		if len(a.Context[sdk.ContextSrcIP]) > sdk.MaxContextShort {
			t.Errorf("%s: a source address of %d bytes delivered", what, len(a.Context[sdk.ContextSrcIP]))
		}
	}
	if r := sdk.CountRecords(as); r > n {
		t.Errorf("%s: anomalies stand for %d records of a batch of %d", what, r, n)
	}
	if st.Count != n || st.Anomalies > n {
		t.Errorf("%s: statistics count %d anomalies %d for a batch of %d", what, st.Count, st.Anomalies, n)
	}
}

// TestHostileResultsChecked: a plugin's answers, through the ring and
// through unary Score, may come from a compromised plugin. Anomalies
// outside the batch were dropped (ring only) without a count; the same
// record twice, aggregates of 2^62 records, statistics of 2^40 records for
// a batch of 16, and context values of any size (a source address of 100
// KiB, which the packet pipeline keeps as the key of an open finding)
// reached the pipelines and the host's counters. Each is dropped or
// clamped now, and counted (Stats.AnomaliesRefused).
func TestHostileResultsChecked(t *testing.T) {
	var rl resultLog
	h, ctx := startSelf(t, hostileEnv, pluginhost.Config{RingSlots: 1024, MaxBatch: 16, MaxDelay: time.Millisecond, OnResult: rl.add})

	t.Run("ring", func(t *testing.T) {
		const records = 64
		if n, err := h.Push(ctx, make([]event.Packet, records)); err != nil || n != records {
			t.Fatalf("Push = %d, %v", n, err)
		}
		waitFor(t, "the records scored", 20*time.Second, func() bool { return h.Stats().Scored == records })
		rl.mu.Lock()
		defer rl.mu.Unlock()
		for _, br := range rl.results {
			checkHostile(t, fmt.Sprintf("ring batch [%d, %d)", br.Start, br.End), br.Anomalies, br.Stats, br.Start, br.End-br.Start)
		}
		if st := h.Stats(); st.Anomalies > st.Scored || st.AnomaliesRefused == 0 {
			t.Errorf("host counted %d anomalous records of %d scored, %d anomalies refused", st.Anomalies, st.Scored, st.AnomaliesRefused)
		}
	})
	t.Run("unary", func(t *testing.T) {
		before := h.Stats().AnomaliesRefused
		res, err := h.Score(ctx, make([]event.Packet, 8))
		if err != nil {
			t.Fatal(err)
		}
		checkHostile(t, "unary score", res.Anomalies, res.Stats, 0, 8)
		if got := h.Stats().AnomaliesRefused - before; got != 4 {
			t.Errorf("%d anomalies refused in the unary answer, want 4", got)
		}
	})
}

// hostileErrorLen is the length of the hostile plugin's error text.
const hostileErrorLen = 6 << 20

// TestPluginErrorTextBounded: the text of a plugin's error (a gRPC status
// message, which the agent's connection accepts up to 16 MiB) went whole
// into the agent's errors: into its log and, for a model the plugin
// refused, into the model status report to the server. A report above the
// wire's 4 MiB frame limit could not be written: the control session ended,
// and the report, still waiting, ended every session after it. The SDK
// client keeps the first 4 KiB of a plugin's error text.
func TestPluginErrorTextBounded(t *testing.T) {
	h, ctx := startSelf(t, hostileEnv, pluginhost.Config{RingSlots: 1024, MaxBatch: 16})
	_, err := h.LoadModel(ctx, "long-error")
	if err == nil {
		t.Fatal("LoadModel succeeded")
	}
	if n := len(err.Error()); n > 8<<10 {
		t.Errorf("the plugin's error reached the agent with %d bytes", n)
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("the error lost its code: %.200s", err)
	}
}

// TestModelInfoBounded: the model a plugin says it loaded (LoadModel's
// answer) becomes the model reference the agent reports in every Hello and
// Status (the pipelines' setModel, setRef). The server refuses a Hello whose
// model name or digest exceeds the wire's 128 bytes: a plugin that named
// its model with 129 bytes kept the agent from connecting at all, and its
// findings piled up in the spool. The SDK client refuses such an answer.
func TestModelInfoBounded(t *testing.T) {
	h, ctx := startSelf(t, hostileEnv, pluginhost.Config{RingSlots: 1024, MaxBatch: 16})
	for _, op := range []string{"long-name", "long-digest", "long-feature-set"} {
		t.Run(op, func(t *testing.T) {
			m, err := h.LoadModel(ctx, op)
			if err == nil {
				t.Errorf("LoadModel accepted a model of %d/%d/%d bytes (name/digest/feature set)", len(m.Name), len(m.Digest), len(m.FeatureSet))
			}
		})
	}
	if m, err := h.LoadModel(ctx, "long-none"); err != nil || m.Name != "nf" {
		t.Errorf("LoadModel of a model within the bounds: %+v %v", m, err)
	}
}

// TestStoppedPluginStopped: go-plugin's Client.Kill asks the plugin to shut
// down over gRPC and waits for the answer for as long as the process
// lives. A plugin that never answers (stopped with SIGSTOP, here; or
// compromised, holding its connection open) held Kill for ever: the host
// never restarted it after it hung, and Close, the agent's shutdown, never
// returned. The host kills the process itself when Kill takes too long.
func TestStoppedPluginStopped(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		act  func(ctx context.Context, h *pluginhost.Host) error
		done func(h *pluginhost.Host, pid int) bool
	}{
		{"close", func(ctx context.Context, h *pluginhost.Host) error { return h.Close(ctx) },
			func(*pluginhost.Host, int) bool { return true }},
		{"restart", func(ctx context.Context, h *pluginhost.Host) error {
			_, err := h.Health(ctx) // no answer: the host stops the plugin and restarts it
			if err == nil {
				return errors.New("a stopped plugin answered Health")
			}
			return nil
		}, func(h *pluginhost.Host, pid int) bool {
			return h.Stats().Restarts == 1 && h.PID() != 0 && h.PID() != pid
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := pluginhost.New(pluginhost.Config{Path: self, Env: []string{probeEnv + "=1"}, KeepPrivileges: true,
				Logger: testLogger(t), RingSlots: 1024, MaxBatch: 16, MinBackoff: 10 * time.Millisecond,
				StallTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			pid := h.PID()
			defer func() {
				_ = unix.Kill(pid, unix.SIGKILL)
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer ccancel()
				_ = h.Close(cctx)
			}()
			if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tc.act(ctx, h) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the host still waits for the stopped plugin after 30 s")
			}
			waitFor(t, tc.name+" of the stopped plugin", 30*time.Second, func() bool { return tc.done(h, pid) })
			if tc.name == "close" {
				waitFor(t, "the stopped plugin killed", 10*time.Second, func() bool { return !processAlive(pid) })
			}
		})
	}
}

// processAlive reports whether process pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// stopInfoEnv makes the test binary a plugin (the probe) that stops itself
// (SIGSTOP) when asked for its Info, right after the handshake.
const stopInfoEnv = "VIGIL_PLUGINHOST_STOP_INFO"

func serveStopInfo() bool {
	if os.Getenv(stopInfoEnv) != "1" {
		return false
	}
	stop := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if strings.HasSuffix(info.FullMethod, "/Info") {
			_ = unix.Kill(os.Getpid(), unix.SIGSTOP)
		}
		return handler(ctx, req)
	}
	serveProbeWith(grpc.UnaryInterceptor(stop))
	return true
}

// TestLaunchOfStoppedPluginEnds: a launch that fails after the handshake
// (here Info, bounded by StartTimeout, gets no answer) kills the plugin
// with go-plugin's Kill, which waited for ever for a plugin that does not
// answer its shutdown request: Start never returned, nor did a restart.
func TestLaunchOfStoppedPluginEnds(t *testing.T) {
	startFails(t, stopInfoEnv, "never answered Info", 30*time.Second)
}

// startSelf starts a host of this test binary as the plugin, serving what
// env (set to 1) selects (TestMain), with cfg's other settings; it is
// closed when the test ends. ctx bounds the test's calls.
func startSelf(t *testing.T, env string, cfg pluginhost.Config) (*pluginhost.Host, context.Context) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Path, cfg.Env, cfg.KeepPrivileges, cfg.Logger = self, append(cfg.Env, env+"=1"), true, testLogger(t)
	h, err := pluginhost.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(func() {
		cancel()
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		_ = h.Close(cctx)
	})
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return h, ctx
}

// startFails starts a host of this test binary serving what env selects,
// with a StartTimeout of 2 s, and fails the test unless Start returns an
// error within wait: a launch that fails (what: how) must end.
func startFails(t *testing.T, env, what string, wait time.Duration) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h, err := pluginhost.New(pluginhost.Config{Path: self, Env: []string{env + "=1"}, KeepPrivileges: true,
		Logger: testLogger(t), StartTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Start(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("Start succeeded with a plugin that %s", what)
		}
		t.Logf("Start: %v", err)
	case <-time.After(wait):
		t.Fatalf("Start still waits for a plugin that %s after %s (StartTimeout 2 s)", what, wait)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	_ = h.Close(cctx)
}

// serveProbeWith serves the probe plugin (in the helper process) with
// extra gRPC server options: the interceptors that make it misbehave.
func serveProbeWith(extra ...grpc.ServerOption) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: sdk.Handshake,
		Plugins:         sdk.PluginMap(probe{}, nil),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return plugin.DefaultGRPCServer(append(opts, extra...))
		},
	})
}
