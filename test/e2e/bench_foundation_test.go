package e2e

// Foundation benchmarks against the real vigil-server binary (VIGIL_BIN):
// durable ingest from 1 and 100 agents, and 1,000 connected idle agents
// (server RSS, time to connect). The agents run in this process with the
// agent's own code (agent/enroll, agent/spool, agent/uplink), each with its
// own certificate from a real enrollment. Run with `make bench`, or e.g.
//
//	VIGIL_BIN=$PWD/bin go test -run '^$' -bench Foundation -benchtime 100000x ./test/e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/enroll"
	"github.com/vigil-edge/vigil/agent/spool"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/uplink"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// BenchmarkFoundationIngest: b.N findings, spread over the agents, wait in
// the agents' durable spools; the timer runs from the moment the connected
// agents may send until every spool is empty, i.e. every finding was
// committed (fsynced) by the server before its ack arrived and was deleted.
func BenchmarkFoundationIngest(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) { benchIngest(b, n) })
	}
}

func benchIngest(b *testing.B, agents int) {
	bn := lookBins(b)
	b.StopTimer()
	d := newDeployment(b, bn, "bench.vigil")
	d.logLevel = "info"
	d.start()
	dirs := enrollMany(b, d, agents)
	per := (b.N + agents - 1) / agents
	total := per * agents
	log := slog.New(slog.DiscardHandler)
	type ag struct {
		sp   *spool.Spool
		gate *gatedSpool
		c    *uplink.Client
	}
	ags := make([]*ag, agents)
	var fill sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, dir := range dirs {
		sp, err := spool.Open(state.Dir(dir).Path(state.SpoolFile), spool.Options{MaxBytes: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sp.Close() })
		g := &gatedSpool{Spool: sp, open: make(chan struct{}), notify: make(chan struct{}, 1)}
		var us uplink.Spool = g
		if os.Getenv("VIGIL_BENCH_DECODE") == "1" { // the uplink decodes and re-encodes each finding, as before PeekRawFrom
			us = decodingSpool{g}
		}
		c, err := uplink.New(uplink.Config{Spool: us, Credentials: state.Dir(dir), Log: log,
			BatchMax: envInt("VIGIL_BENCH_BATCH"), Inflight: envInt("VIGIL_BENCH_INFLIGHT")})
		if err != nil {
			b.Fatal(err)
		}
		ags[i] = &ag{sp: sp, gate: g, c: c}
		fill.Add(1)
		go func() {
			defer fill.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			for left := per; left > 0; {
				n := min(left, 1000)
				if err := sp.Append(context.Background(), benchFindings(n)); err != nil {
					b.Error(err)
					return
				}
				left -= n
			}
		}()
	}
	fill.Wait()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for _, a := range ags {
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.c.Run(ctx) }()
	}
	waitFor(b, 5*time.Minute, func() string { return "agents connected" }, func() bool {
		for _, a := range ags {
			if !a.c.Stats().Connected {
				return false
			}
		}
		return true
	})
	cpu0 := procCPUTime(d.p.cmd.Process.Pid)
	self0 := procCPUTime(os.Getpid())
	b.StartTimer()
	start := time.Now()
	for _, a := range ags {
		a.gate.release()
	}
	deadline := time.Now().Add(30 * time.Minute)
	for _, a := range ags {
		for a.sp.Stats().Depth > 0 {
			if time.Now().After(deadline) {
				b.Fatalf("spool not drained: %+v", a.sp.Stats())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	serverCPU := procCPUTime(d.p.cmd.Process.Pid) - cpu0
	agentsCPU := procCPUTime(os.Getpid()) - self0
	rss, hwm := procRSS(d.p.cmd.Process.Pid)
	cancel()
	wg.Wait()
	got := 0
	for _, dir := range dirs {
		id, _ := state.Dir(dir).ReadIdentity()
		got += d.count(id.AgentID)
	}
	if got != total {
		b.Fatalf("server holds %d findings, want %d", got, total)
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "findings/s")
	b.ReportMetric(serverCPU.Seconds()/elapsed.Seconds(), "server-cpus")
	// CPU per finding is less noisy than the wall rate on a shared machine.
	b.ReportMetric(float64(serverCPU.Microseconds())/float64(total), "server-cpu-us/finding")
	b.ReportMetric(float64(agentsCPU.Microseconds())/float64(total), "agents-cpu-us/finding")
	b.ReportMetric(float64(hwm)/(1<<20), "server-peak-MB")
	b.ReportMetric(float64(rss)/(1<<20), "server-RSS-MB")
	d.stop()
}

// BenchmarkFoundationIdleAgents connects 1,000 agents (distinct certificates
// from real enrollments, the agent's uplink with an empty spool) at once and
// reports the time until all are connected (HelloAck) and the server's RSS
// with them connected and idle. b.N is ignored (use -benchtime 1x).
func BenchmarkFoundationIdleAgents(b *testing.B) {
	bn := lookBins(b)
	agents := 1000
	if s := os.Getenv("VIGIL_BENCH_IDLE_AGENTS"); s != "" {
		agents, _ = strconv.Atoi(s)
	}
	b.StopTimer()
	d := newDeployment(b, bn, "bench.vigil")
	d.logLevel = "info"
	d.start()
	dirs := enrollMany(b, d, agents)
	rss0, _ := procRSS(d.p.cmd.Process.Pid)
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("VIGIL_BENCH_LOG") != "" { // the agents' warnings (why a connect was retried)
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	cs := make([]*uplink.Client, agents)
	for i, dir := range dirs {
		c, err := uplink.New(uplink.Config{Spool: emptySpool{}, Credentials: state.Dir(dir), Log: log})
		if err != nil {
			b.Fatal(err)
		}
		cs[i] = c
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	start := time.Now()
	for _, c := range cs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Run(ctx) }()
	}
	var connected int
	waitFor(b, 10*time.Minute, func() string { return fmt.Sprintf("%d/%d agents connected", connected, agents) }, func() bool {
		connected = 0
		for _, c := range cs {
			if c.Stats().Connected {
				connected++
			}
		}
		return connected == agents
	})
	connectTime := time.Since(start)
	var reconnects uint64
	for _, c := range cs {
		reconnects += c.Stats().Reconnects
	}
	// Idle: let the connections settle (keep-alives, first heartbeats).
	time.Sleep(15 * time.Second)
	rss, hwm := procRSS(d.p.cmd.Process.Pid)
	for _, c := range cs {
		if !c.Stats().Connected {
			b.Fatalf("an agent lost its connection while idle: %+v", c.Stats())
		}
	}
	b.ReportMetric(connectTime.Seconds(), "connect-all-s")
	b.ReportMetric(float64(rss)/(1<<20), "server-RSS-MB")
	b.ReportMetric(float64(hwm)/(1<<20), "server-peak-MB")
	b.ReportMetric(float64(rss0)/(1<<20), "server-RSS-before-MB")
	b.ReportMetric(float64(reconnects), "retries")
	cancel()
	wg.Wait()
	d.stop()
}

// enrollMany enrolls n agents of entity "bench" with the agent's enrollment
// code (tokens from the API), a few at a time, and returns their state
// directories.
func enrollMany(b testing.TB, d *deployment, n int) []string {
	b.Helper()
	base := b.TempDir()
	dirs := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	log := slog.New(slog.DiscardHandler)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				code, body, err := d.apiBody(http.MethodPost, "tokens", d.adminToken, map[string]string{"entity": "bench", "ttl": "1h"})
				if err != nil || code != http.StatusCreated {
					errs <- fmt.Errorf("create token: %d %v %s", code, err, body)
					return
				}
				var tok struct {
					Token string `json:"token"`
				}
				_ = json.Unmarshal(body, &tok)
				dir := filepath.Join(base, fmt.Sprintf("a%04d", i))
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				_, err = enroll.Enroll(ctx, enroll.Options{Server: d.quicAddr, Token: tok.Token, Pin: d.pin, StateDir: state.Dir(dir),
					Hostname: fmt.Sprintf("bench-%04d", i), Timeout: time.Minute}, log)
				cancel()
				if err != nil {
					errs <- fmt.Errorf("enroll %d: %w", i, err)
					return
				}
				dirs[i] = dir
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return dirs
}

func benchFindings(n int) []*wirev1.Finding {
	now := time.Now().UnixNano()
	fs := make([]*wirev1.Finding, n)
	for i := range fs {
		fs[i] = &wirev1.Finding{Detector: "bench", Severity: wirev1.Severity_SEVERITY_MEDIUM, Count: 1, Score: 0.9, Threshold: 0.5,
			TimeUnixNano: now, FirstSeenUnixNano: now, LastSeenUnixNano: now, Summary: "benchmark finding",
			Model:       &wirev1.ModelRef{Name: "bench", Version: 1, Detector: "bench"},
			Context:     &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", SrcPort: 40000, DstPort: 80, Proto: "tcp"},
			TopFeatures: []*wirev1.FeatureContribution{{Name: "syn_ratio", Contribution: 0.6}, {Name: "flows_per_s", Contribution: 0.3}}}
	}
	return fs
}

// gatedSpool hides the spool's findings from the uplink until release, so
// that connecting is not timed.
type gatedSpool struct {
	*spool.Spool
	open   chan struct{}
	notify chan struct{}
	once   sync.Once
}

func (g *gatedSpool) release() {
	g.once.Do(func() {
		close(g.open)
		select {
		case g.notify <- struct{}{}:
		default:
		}
	})
}

func (g *gatedSpool) PeekFrom(from uint64, max, maxBytes int) ([]*wirev1.Finding, error) {
	select {
	case <-g.open:
		return g.Spool.PeekFrom(from, max, maxBytes)
	default:
		return nil, nil
	}
}

func (g *gatedSpool) PeekRawFrom(from uint64, max, maxBytes int) ([]uint64, [][]byte, error) {
	select {
	case <-g.open:
		return g.Spool.PeekRawFrom(from, max, maxBytes)
	default:
		return nil, nil, nil
	}
}

func (g *gatedSpool) Notify() <-chan struct{} { return g.notify }

// decodingSpool hides the spool's PeekRawFrom from the uplink.
type decodingSpool struct{ g *gatedSpool }

func (d decodingSpool) PeekFrom(from uint64, max, maxBytes int) ([]*wirev1.Finding, error) {
	return d.g.PeekFrom(from, max, maxBytes)
}
func (d decodingSpool) Ack(through uint64) error  { return d.g.Ack(through) }
func (d decodingSpool) Stats() *wirev1.SpoolStats { return d.g.Stats() }
func (d decodingSpool) Notify() <-chan struct{}   { return d.g.Notify() }

// emptySpool is an idle agent's spool.
type emptySpool struct{}

func (emptySpool) PeekFrom(uint64, int, int) ([]*wirev1.Finding, error) { return nil, nil }
func (emptySpool) Ack(uint64) error                                     { return nil }
func (emptySpool) Stats() *wirev1.SpoolStats                            { return &wirev1.SpoolStats{NextSeq: 1} }
func (emptySpool) Notify() <-chan struct{}                              { return nil }

// envInt reads an optional integer knob of the benchmarks (0: unset, the
// uplink's default), e.g. VIGIL_BENCH_BATCH and VIGIL_BENCH_INFLIGHT.
func envInt(name string) int {
	n, _ := strconv.Atoi(os.Getenv(name))
	return n
}

// procRSS returns a process's VmRSS and VmHWM (peak) in bytes.
func procRSS(pid int) (rss, hwm int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	return rss, hwm
}

// procCPUTime is a process's user+system CPU time.
func procCPUTime(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+2:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
