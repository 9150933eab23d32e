package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/test/trafficgen"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// findingsSink collects findings in memory.
type findingsSink struct {
	mu sync.Mutex
	fs []*wirev1.Finding
}

func (s *findingsSink) Append(_ context.Context, fs []*wirev1.Finding) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fs = append(s.fs, fs...)
	return nil
}

func (s *findingsSink) snapshot() []*wirev1.Finding {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*wirev1.Finding(nil), s.fs...)
}

var _ pipeline.Sink = (*findingsSink)(nil)

// TestNetflowPluginKilled: the agent's packet pipeline (agent/detect, as
// `vigil-agent run --pcap` runs it) replays a long capture; the plugin is
// killed with SIGKILL mid-stream. The pipeline keeps running, the plugin is
// restarted with its models, scoring resumes, and the packets lost
// meanwhile are counted (events_lost), never silently dropped.
func TestNetflowPluginKilled(t *testing.T) {
	in := netflowInstall(t)
	dir := t.TempDir()
	// About 300k packets: long enough that the kill lands mid-stream.
	pcap, info := writeTrafficgen(t, dir, "long.pcap", trafficgen.Config{Seed: 5, Sessions: 30000, Duration: 10 * time.Minute, Scan: true, ScanAt: 9 * time.Minute})
	sink := &findingsSink{}
	p, done, cancel := replayPipeline(t, in, pcap, sink)
	defer cancel()

	wait := func(what string, cond func(map[string]uint64) bool) map[string]uint64 {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			c := p.Counters()
			if cond(c) {
				return c
			}
			select {
			case err := <-done:
				t.Fatalf("pipeline ended while waiting for %s: %v (counters %v)", what, err, c)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: counters %v", what, c)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("first scored packets", func(c map[string]uint64) bool { return c["scored"] > 0 && p.PluginPID() > 0 })
	pid := p.PluginPID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill plugin %d: %v", pid, err)
	}
	before := p.Counters()
	after := wait("restart and resumed scoring", func(c map[string]uint64) bool {
		return c["plugin_restarts"] >= 1 && c["scored"] > before["scored"] && p.PluginPID() != pid
	})
	t.Logf("after the kill: %v", after)
	final := wait("the whole capture", func(c map[string]uint64) bool {
		return c["captured"] == uint64(info.Packets) && c["scored"]+c["events_lost"] == uint64(info.Packets)
	})
	if final["events_lost"] == 0 {
		t.Errorf("a plugin was killed mid-stream but no loss was counted: %v", final)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("pipeline: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("pipeline did not stop")
	}
	t.Logf("final counters: %v; %d findings", p.Counters(), len(sink.snapshot()))
}

// replayPipeline starts the agent's packet pipeline (agent/detect, as
// `vigil-agent run --pcap` runs it) replaying pcap into sink, following the
// file after its end, for at most 3 minutes; done gets Run's result, cancel
// stops it.
func replayPipeline(t *testing.T, in *nfInstall, pcap string, sink pipeline.Sink) (*detect.Pipeline, <-chan error, context.CancelFunc) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := detect.Config{
		Plugin: in.Plugin, Bundles: in.Bundles, ORTLib: in.ORT, StageBundles: true,
		Pcaps: []string{pcap}, Follow: true, Logger: log,
	}
	// As `scan` does: while the plugin restarts, wait for it rather than
	// drop (live capture drops after pluginhost.DefaultDownWait instead).
	cfg.Host.DownWait = time.Minute
	p, err := detect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, sink) }()
	return p, done, cancel
}

// testLogWriter sends log lines to t.Log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// failingSink refuses every append, as a spool on a full disk does, until
// healed; then it collects.
type failingSink struct {
	findingsSink
	mu      sync.Mutex
	failing bool
	refused int
}

func (s *failingSink) Append(ctx context.Context, fs []*wirev1.Finding) error {
	s.mu.Lock()
	if s.failing {
		s.refused++
		s.mu.Unlock()
		return fmt.Errorf("append to spool: write: %w", syscall.ENOSPC)
	}
	s.mu.Unlock()
	return s.findingsSink.Append(ctx, fs)
}

func (s *failingSink) heal() {
	s.mu.Lock()
	s.failing = false
	s.mu.Unlock()
}

// TestNetflowSpoolFailureKeepsFindings: a spool that cannot be written (a
// full disk) stopped the packet pipeline at its first failed append, and the
// agent with it: the findings in memory were lost, and detection stopped
// until someone restarted the agent (where systemd restarted it, the loop
// went on). Now the pipeline keeps detecting, keeps the findings (bounded,
// counted) and appends them once the spool takes them again.
func TestNetflowSpoolFailureKeepsFindings(t *testing.T) {
	in := netflowInstall(t)
	dir := t.TempDir()
	pcap, info := writeTrafficgen(t, dir, "scan.pcap", trafficgen.Config{Seed: 7, Sessions: 3000, Duration: 2 * time.Minute, Scan: true, ScanAt: 30 * time.Second})
	sink := &failingSink{failing: true}
	p, done, cancel := replayPipeline(t, in, pcap, sink)
	defer cancel()

	deadline := time.Now().Add(2 * time.Minute)
	for c := p.Counters(); c["captured"] < uint64(info.Packets) || c["netflow_findings"] == 0 || c["netflow_append_errors"] < 3; c = p.Counters() {
		select {
		case err := <-done:
			t.Fatalf("the pipeline ended while the spool failed: %v (counters %v)", err, c)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for the capture, a finding and failed appends: counters %v", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(sink.snapshot()); n != 0 {
		t.Fatalf("%d findings reached a failing sink", n)
	}
	sink.heal()
	for len(sink.snapshot()) == 0 {
		select {
		case err := <-done:
			t.Fatalf("the pipeline ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kept findings never reached the healed sink: counters %v", p.Counters())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("pipeline: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("pipeline did not stop")
	}
	c := p.Counters()
	if c["netflow_findings_lost"] != 0 {
		t.Errorf("findings lost: %v", c)
	}
	if got, want := uint64(len(sink.snapshot())), c["netflow_findings"]; got != want {
		t.Errorf("%d findings appended, the pipeline made %d", got, want)
	}
	t.Logf("%d findings kept through %d refused appends; counters %v", len(sink.snapshot()), sink.refused, c)
}
