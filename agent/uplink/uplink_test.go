package uplink_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/enroll"
	"github.com/vigil-edge/vigil/agent/spool"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/uplink"
	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	srv   *uplinktest.Server
	dir   state.Dir
	spool *spool.Spool
	logs  *syncBuf
	log   *slog.Logger
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := uplinktest.New(t, func(s *uplinktest.Server) { s.Token, s.StatusIntervalMs = "vge_t.secret", 100 })
	f := &fixture{srv: srv, dir: state.Dir(t.TempDir()), logs: &syncBuf{}}
	f.log = slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, err := enroll.Enroll(context.Background(), enroll.Options{
		Server: srv.Addr, Token: srv.Token, Pin: srv.Pin(), StateDir: f.dir, Timeout: 10 * time.Second,
	}, f.log); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(f.dir.Path(state.SpoolFile), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	f.spool = sp
	return f
}

func (f *fixture) config() uplink.Config {
	return uplink.Config{
		Spool: f.spool, Credentials: f.dir, Log: f.log,
		BatchMax: 100, Inflight: 3, BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		Rand: rand.New(rand.NewPCG(1, 1)),
	}
}

// start runs the client until the test ends.
func (f *fixture) start(t *testing.T, cfg uplink.Config) *uplink.Client {
	t.Helper()
	c, err := uplink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return c
}

func (f *fixture) append(t *testing.T, n int, sev wirev1.Severity) {
	t.Helper()
	fs := make([]*wirev1.Finding, n)
	for i := range fs {
		fs[i] = &wirev1.Finding{Detector: "test", Severity: sev, Count: 1, Summary: fmt.Sprintf("f%d", i),
			Context: &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", Proto: "tcp"}}
	}
	if err := f.spool.Append(context.Background(), fs); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkInOrder(t *testing.T, seqs []uint64, n int) {
	t.Helper()
	if len(seqs) != n {
		t.Fatalf("server has %d findings, want %d", len(seqs), n)
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("arrival %d is seq %d", i, s)
		}
	}
}

func TestDeliverInOrderWithStatus(t *testing.T) {
	f := newFixture(t)
	f.append(t, 250, wirev1.Severity_SEVERITY_LOW)
	cfg := f.config()
	cfg.ShadowRollouts = func() []string { return []string{"r-4b5b85cd605a"} }
	c := f.start(t, cfg)
	for i := 0; i < 10; i++ {
		f.append(t, 75, wirev1.Severity_SEVERITY_HIGH)
	}
	const total = 250 + 750
	eventually(t, "all findings acked", func() bool { return f.spool.Stats().Depth == 0 && len(f.srv.Findings()) == total })
	checkInOrder(t, f.srv.Findings(), total)
	if got := f.srv.Finding(1).Summary; got != "f0" {
		t.Fatalf("finding 1 summary %q", got)
	}
	eventually(t, "a status with the drained spool", func() bool {
		for _, s := range f.srv.Statuses() {
			if s.Spool.GetAckedSeq() == total && s.CertNotAfterUnix > 0 {
				return true
			}
		}
		return false
	})
	h := f.srv.Hellos()[0]
	if h.ProtocolVersion != wirev1.ProtocolVersion || h.Host.GetOs() == "" || h.CertNotAfterUnix == 0 ||
		len(h.ShadowRollouts) != 1 || h.ShadowRollouts[0] != "r-4b5b85cd605a" {
		t.Fatalf("hello %v", h)
	}
	st := c.Stats()
	if !st.Connected || st.FindingsSent < total || st.Acks == 0 || st.CertNotAfter.IsZero() {
		t.Fatalf("stats %+v", st)
	}
}

// TestReconnectExactlyOnce has the server drop the connection before acking
// every few batches: every finding still arrives once, in order.
func TestReconnectExactlyOnce(t *testing.T) {
	f := newFixture(t)
	var batches atomic.Int64
	f.srv.Configure(func(s *uplinktest.Server) {
		s.OnBatch = func(b *wirev1.FindingsBatch) (*wirev1.Ack, wirev1.ErrorCode) {
			if n := batches.Add(1); n%4 == 0 && n < 40 {
				return nil, wirev1.CodeInternal
			}
			return nil, 0
		}
	})
	f.append(t, 1500, wirev1.Severity_SEVERITY_MEDIUM)
	c := f.start(t, f.config())
	eventually(t, "all findings acked", func() bool { return f.spool.Stats().Depth == 0 })
	// The server's dedup by seq and the first-arrival order.
	seqs := f.srv.Findings()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("out of order at %d: %d after %d", i, seqs[i], seqs[i-1])
		}
	}
	// Batches dropped by a close were never "committed" by the fake; they
	// were re-sent after the reconnect.
	checkInOrder(t, seqs, 1500)
	if c.Stats().Reconnects == 0 {
		t.Fatal("no reconnects counted")
	}
	if !strings.Contains(f.logs.String(), "code=internal") {
		t.Fatalf("server close code not logged:\n%s", f.logs.String())
	}
}

func TestSlowDownAndModelOffer(t *testing.T) {
	f := newFixture(t)
	var maxSeen atomic.Int64
	f.srv.Configure(func(s *uplinktest.Server) {
		s.OnBatch = func(b *wirev1.FindingsBatch) (*wirev1.Ack, wirev1.ErrorCode) {
			if n := int64(len(b.Findings)); n > maxSeen.Load() {
				maxSeen.Store(n)
			}
			return nil, 0
		}
		s.AfterHello = func(send func(*wirev1.ServerControl) error) {
			_ = send(&wirev1.ServerControl{Msg: &wirev1.ServerControl_SlowDown{SlowDown: &wirev1.SlowDown{MaxBatch: 7, MinBatchIntervalMs: 1}}})
			_ = send(&wirev1.ServerControl{Msg: &wirev1.ServerControl_ModelOffer{ModelOffer: &wirev1.ModelOffer{
				RolloutId: "r1", Model: &wirev1.ModelRef{Name: "netflow", Version: 3}}}})
		}
	})
	offers := make(chan *wirev1.ModelOffer, 1)
	cfg := f.config()
	cfg.OnModelOffer = func(o *wirev1.ModelOffer) { offers <- o }
	f.start(t, cfg)
	select {
	case o := <-offers:
		if o.RolloutId != "r1" || o.Model.GetVersion() != 3 {
			t.Fatalf("offer %v", o)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no model offer delivered")
	}
	// The SlowDown came before the offer on the same stream: it applies now.
	f.append(t, 100, wirev1.Severity_SEVERITY_LOW)
	eventually(t, "all findings acked", func() bool { return f.spool.Stats().Depth == 0 })
	if m := maxSeen.Load(); m > 7 {
		t.Fatalf("batch of %d findings after SlowDown{max_batch: 7}", m)
	}
}

// TestRenewal starts with a certificate past 2/3 of its life: the agent
// renews over CONTROL, replaces its files and reconnects with the new one.
func TestRenewal(t *testing.T) {
	f := newFixture(t)
	creds, err := f.dir.LoadCredentials()
	if err != nil {
		t.Fatal(err)
	}
	id := creds.Identity
	now := time.Now()
	old := f.srv.PKI.AgentCertValidity(t, id.Entity, id.AgentID, "", now.Add(-50*time.Minute), now.Add(10*time.Minute))
	if err := f.dir.ReplaceCredentials(old.PrivateKey.(*ecdsaKey), old.Certificate); err != nil {
		t.Fatal(err)
	}
	c := f.start(t, f.config())
	eventually(t, "a renewal", func() bool { return c.Stats().Renewals == 1 })
	eventually(t, "a reconnect with the new certificate", func() bool { return f.srv.Conns() >= 3 && c.Stats().Connected })
	renewed, err := f.dir.LoadCredentials()
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.NotAfter().After(old.Leaf.NotAfter.Add(30*time.Minute)) || renewed.Cert.Leaf.Equal(old.Leaf) {
		t.Fatalf("certificate not replaced: not after %v", renewed.NotAfter())
	}
	if f.srv.Renewals() != 1 {
		t.Fatalf("server issued %d renewals", f.srv.Renewals())
	}
	// Findings still flow after the renewal.
	f.append(t, 10, wirev1.Severity_SEVERITY_CRITICAL)
	eventually(t, "findings after renewal", func() bool { return f.spool.Stats().Depth == 0 })
}

func TestRenewalRefusedKeepsOldCertificate(t *testing.T) {
	f := newFixture(t)
	f.srv.Configure(func(s *uplinktest.Server) {
		s.RefuseRenew = true
	})
	creds, _ := f.dir.LoadCredentials()
	id := creds.Identity
	now := time.Now()
	old := f.srv.PKI.AgentCertValidity(t, id.Entity, id.AgentID, "", now.Add(-50*time.Minute), now.Add(10*time.Minute))
	if err := f.dir.ReplaceCredentials(old.PrivateKey.(*ecdsaKey), old.Certificate); err != nil {
		t.Fatal(err)
	}
	cfg := f.config()
	cfg.RenewRetry = time.Hour
	c := f.start(t, cfg)
	eventually(t, "a refused renewal", func() bool { return c.Stats().RenewFailures >= 1 })
	after, err := f.dir.LoadCredentials()
	if err != nil {
		t.Fatal(err)
	}
	if !after.Cert.Leaf.Equal(old.Leaf) {
		t.Fatal("certificate replaced although the renewal was refused")
	}
	f.append(t, 5, wirev1.Severity_SEVERITY_LOW)
	eventually(t, "findings still flow", func() bool { return f.spool.Stats().Depth == 0 })
}

func TestNotEnrolled(t *testing.T) {
	sp, err := spool.Open(filepath.Join(t.TempDir(), "s.db"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	c, err := uplink.New(uplink.Config{Spool: sp, Credentials: state.Dir(t.TempDir()), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); err == nil {
		t.Fatal("Run without identity returned nil")
	}
}

type ecdsaKey = ecdsa.PrivateKey
