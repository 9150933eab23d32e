// Package e2e holds Vigil's end-to-end tests: the agent's parts against the
// real server, in process (servertest) or as real binaries (VIGIL_E2E=1).
package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/enroll"
	"github.com/vigil-edge/vigil/agent/spool"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/uplink"
	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/server/servertest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func testLog() *slog.Logger {
	if os.Getenv("VIGIL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// TestAgentUplinkAgainstRealServer enrolls with the agent's own enrollment
// code, then ships findings through the agent's spool and uplink into the
// real server (in process), restarting the uplink in the middle: the server
// ends with every finding exactly once.
func TestAgentUplinkAgainstRealServer(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	log := testLog()
	dir := state.Dir(filepath.Join(t.TempDir(), "agent"))
	ctx := context.Background()
	id, err := enroll.Enroll(ctx, enroll.Options{
		Server: srv.Addr, Token: srv.EnrollToken(t, "acme"), Pin: srv.Pin, StateDir: dir, Timeout: 10 * time.Second,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	// The token is one-time.
	tok := srv.EnrollToken(t, "acme")
	if _, err := enroll.Enroll(ctx, enroll.Options{Server: srv.Addr, Token: tok, Pin: srv.Pin, StateDir: state.Dir(t.TempDir())}, log); err != nil {
		t.Fatal(err)
	}
	_, err = enroll.Enroll(ctx, enroll.Options{Server: srv.Addr, Token: tok, Pin: srv.Pin, StateDir: state.Dir(t.TempDir())}, log)
	if se, ok := uplink.AsServerError(err); !ok || se.Code != wirev1.CodeTokenInvalid {
		t.Fatalf("reused token: %v", err)
	}

	sp, err := spool.Open(dir.Path(state.SpoolFile), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	const total = 5000
	appendN := func(n int) {
		fs := make([]*wirev1.Finding, n)
		for i := range fs {
			fs[i] = &wirev1.Finding{Detector: "e2e", Severity: wirev1.Severity_SEVERITY_MEDIUM, Count: 1,
				TimeUnixNano: time.Now().UnixNano(), Summary: fmt.Sprintf("e2e %d", i),
				Context: &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", DstPort: 80, Proto: "tcp"}}
		}
		if err := sp.Append(ctx, fs); err != nil {
			t.Fatal(err)
		}
	}
	start := func() (*uplink.Client, func()) {
		c, err := uplink.New(uplink.Config{Spool: sp, Credentials: dir, Log: log, BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(cctx) }()
		return c, func() { cancel(); <-done }
	}
	appendN(total / 2)
	c, stop := start()
	deadline := time.Now().Add(60 * time.Second)
	for c.Stats().Acks == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no ack from the real server")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop() // mid-stream: some batches may be in flight
	appendN(total / 2)
	_, stop = start()
	defer stop()
	for srv.CountFindings(t, id.AgentID) < total || sp.Stats().Depth > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server has %d findings, spool depth %d", srv.CountFindings(t, id.AgentID), sp.Stats().Depth)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := srv.CountFindings(t, id.AgentID); n != total {
		t.Fatalf("server has %d findings, want exactly %d", n, total)
	}
}

// TestAgentRenewalAgainstRealServer gives the agent a certificate past 2/3
// of its lifetime: it renews over CONTROL with the real server, stores the
// new pair and reconnects with it.
func TestAgentRenewalAgainstRealServer(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	log := testLog()
	dir := state.Dir(filepath.Join(t.TempDir(), "agent"))
	ctx := context.Background()
	id, err := enroll.Enroll(ctx, enroll.Options{Server: srv.Addr, Token: srv.EnrollToken(t, "acme"), Pin: srv.Pin, StateDir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	// Re-issue a short-lived certificate for the same identity.
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := pki.NewCSR(key, id.AgentID)
	chain, err := srv.CA.SignAgentCSR(csr, id.Entity, id.AgentID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.ReplaceCredentials(key, chain); err != nil {
		t.Fatal(err)
	}
	before, _ := dir.LoadCredentials()
	if time.Now().Before(before.RenewAt()) {
		t.Skipf("certificate not yet due for renewal (renew at %v)", before.RenewAt())
	}
	sp, err := spool.Open(dir.Path(state.SpoolFile), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	c, err := uplink.New(uplink.Config{Spool: sp, Credentials: dir, Log: log, BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(cctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(60 * time.Second)
	for c.Stats().Renewals == 0 || c.Stats().Connects < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no renewal: %+v", c.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	after, err := dir.LoadCredentials()
	if err != nil {
		t.Fatal(err)
	}
	if !after.NotAfter().After(before.NotAfter().Add(time.Hour)) {
		t.Fatalf("renewed certificate expires %v (old %v)", after.NotAfter(), before.NotAfter())
	}
	if err := sp.Append(ctx, []*wirev1.Finding{{Detector: "e2e", Severity: wirev1.Severity_SEVERITY_HIGH}}); err != nil {
		t.Fatal(err)
	}
	for srv.CountFindings(t, id.AgentID) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no finding after renewal")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkAgentToServer measures durable end-to-end throughput from one
// agent: spool (fsync per batch) -> uplink -> real server (SQLite commit
// before ack) -> ack -> spool delete.
func BenchmarkAgentToServer(b *testing.B) {
	srv := servertest.Start(b, servertest.Options{})
	log := slog.New(slog.DiscardHandler)
	dir := state.Dir(filepath.Join(b.TempDir(), "agent"))
	ctx := context.Background()
	id, err := enroll.Enroll(ctx, enroll.Options{Server: srv.Addr, Token: srv.EnrollToken(b, "acme"), Pin: srv.Pin, StateDir: dir}, log)
	if err != nil {
		b.Fatal(err)
	}
	sp, err := spool.Open(dir.Path(state.SpoolFile), spool.Options{MaxBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	const per = 1000
	batches := (b.N + per - 1) / per
	for i := 0; i < batches; i++ {
		fs := make([]*wirev1.Finding, per)
		for j := range fs {
			fs[j] = &wirev1.Finding{Detector: "bench", Severity: wirev1.Severity_SEVERITY_MEDIUM, Count: 1, Score: 0.9, Threshold: 0.5,
				TimeUnixNano: time.Now().UnixNano(), Summary: "benchmark finding",
				Context: &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", SrcPort: 40000, DstPort: 80, Proto: "tcp"}}
		}
		if err := sp.Append(ctx, fs); err != nil {
			b.Fatal(err)
		}
	}
	c, err := uplink.New(uplink.Config{Spool: sp, Credentials: dir, Log: log, BatchMax: benchBatch, Inflight: benchInflight})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(cctx) }()
	for sp.Stats().Depth > 0 {
		time.Sleep(2 * time.Millisecond)
	}
	b.StopTimer()
	cancel()
	<-done
	if n := srv.CountFindings(b, id.AgentID); n != batches*per {
		b.Fatalf("server has %d findings, want %d", n, batches*per)
	}
	b.ReportMetric(float64(batches*per)/b.Elapsed().Seconds(), "findings/s")
}

// Batch shape of BenchmarkAgentToServer (the agent's defaults are 500 and 4).
var benchBatch, benchInflight = 500, 4
