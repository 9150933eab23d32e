package endpoint_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/server/servertest"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// benchIngest sends b.N findings in total from agents concurrent agents,
// each on its own QUIC connection and FINDINGS stream, in batches of batch
// findings with up to window batches awaiting their Ack (which the server
// sends only after the commit). window 1 is stop-and-wait; the agent's
// uplink keeps 4 batches of 1000 in flight. It reports durable findings per
// second.
func benchIngest(b *testing.B, agents, batch, window int) {
	s := servertest.Start(b, servertest.Options{})
	as := make([]*servertest.Agent, agents)
	for i := range as {
		as[i] = s.Enroll(b, "bench")
	}
	type client struct {
		st *quic.Stream
		r  *wirev1.Reader
	}
	cs := make([]client, agents)
	for i, a := range as {
		c, err := s.Dial(context.Background(), &a.Cert)
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseWithError(0, "")
		st, err := servertest.OpenStream(context.Background(), c, wirev1.StreamKind_STREAM_KIND_FINDINGS)
		if err != nil {
			b.Fatal(err)
		}
		cs[i] = client{st, wirev1.NewReader(st, 0)}
	}
	per := (b.N + agents - 1) / agents
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, 2*agents)
	for i := range cs {
		wg.Add(1)
		go func(c client) {
			defer wg.Done()
			sent := make(chan uint64, window) // last seq of each batch awaiting its ack
			acksDone := make(chan error, 1)
			go func() {
				for last := range sent {
					var a wirev1.Ack
					if err := c.r.Read(&a); err != nil {
						acksDone <- err
						return
					}
					if a.ThroughSeq != last {
						acksDone <- fmt.Errorf("ack %d, want %d", a.ThroughSeq, last)
						return
					}
				}
				acksDone <- nil
			}()
			for next := uint64(1); next <= uint64(per); {
				last := min(next+uint64(batch)-1, uint64(per))
				if err := wirev1.Write(c.st, findings(next, last), 0); err != nil {
					errc <- err
					break
				}
				select {
				case sent <- last: // blocks while window batches await their ack
				case err := <-acksDone:
					errc <- fmt.Errorf("acks ended early: %v", err)
					return
				}
				next = last + 1
			}
			close(sent)
			if err := <-acksDone; err != nil {
				errc <- err
			}
		}(cs[i])
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	close(errc)
	for err := range errc {
		b.Fatal(err)
	}
	total := per * agents
	b.ReportMetric(float64(total)/el.Seconds(), "findings/s")
	n := 0
	for _, a := range as {
		n += s.CountFindings(b, a.ID)
	}
	if n != total {
		b.Fatalf("%d findings stored, want %d", n, total)
	}
}

// BenchmarkIngest1: one agent, stop-and-wait (one batch of 500 in flight).
// Run with e.g. -benchtime 100000x.
func BenchmarkIngest1(b *testing.B) { benchIngest(b, 1, 500, 1) }

// BenchmarkIngest100: 100 concurrent agents, stop-and-wait.
func BenchmarkIngest100(b *testing.B) { benchIngest(b, 100, 500, 1) }

// BenchmarkIngestWindow1 and BenchmarkIngestWindow100: the agent uplink's
// defaults (batches of 1000, 4 awaiting their ack).
func BenchmarkIngestWindow1(b *testing.B)   { benchIngest(b, 1, 1000, 4) }
func BenchmarkIngestWindow100(b *testing.B) { benchIngest(b, 100, 1000, 4) }

// TestIdleAgents1000 connects 1,000 agents (mTLS handshake + CONTROL
// Hello/HelloAck) to a real vigil-server process and reports the time to
// connect them all and the server's RSS. VIGIL_E2E=1 only (it builds the
// binary unless VIGIL_BIN has it). VIGIL_IDLE_AGENTS overrides the count.
func TestIdleAgents1000(t *testing.T) {
	if os.Getenv("VIGIL_E2E") == "" {
		t.Skip("VIGIL_E2E not set: skipping the 1,000 idle agents measurement")
	}
	n := 1000
	if v := os.Getenv("VIGIL_IDLE_AGENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	bin := serverBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	if out, err := exec.Command(bin, "init", "--data", dir, "--dns", "localhost", "--log-format", "json").CombinedOutput(); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	// Agents: certificates signed by the deployment CA, registered in the
	// store before the server starts (enrollment is measured elsewhere).
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), filepath.Join(dir, "vigil.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	certs := make([]tls.Certificate, n)
	for i := range certs {
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := pki.NewCSR(key, "idle")
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("a-%012x", i)
		chain, err := ca.SignAgentCSR(csr, "idle", id, 0)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(chain[0])
		if err := db.RegisterAgent(context.Background(), store.Agent{ID: id, Entity: "idle", CertSerial: leaf.SerialNumber.Text(16), CertNotAfter: leaf.NotAfter}); err != nil {
			t.Fatal(err)
		}
		certs[i] = tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
	}
	db.Close()

	cmd := exec.Command(bin, "run", "--data", dir, "--quic", "127.0.0.1:0", "--api", "127.0.0.1:0", "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var l struct {
				Msg  string `json:"msg"`
				QUIC string `json:"quic"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "vigil-server running" {
				addr <- l.QUIC
			}
		}
	}()
	var quicAddr string
	select {
	case quicAddr = <-addr:
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start")
	}
	rssBefore := rssKB(t, cmd.Process.Pid)

	roots := ca.Pool()
	conns := make([]*quic.Conn, n)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var refused atomic.Int64
	errc := make(chan error, n)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			qc := &quic.Config{HandshakeIdleTimeout: 20 * time.Second, MaxIdleTimeout: 60 * time.Second, KeepAlivePeriod: 20 * time.Second}
			// quic-go refuses a handshake that completes while 32 others
			// wait to be accepted (CONNECTION_REFUSED); agents retry after a
			// pause, and so does this one (at most 5 attempts).
			for attempt := 1; ; attempt++ {
				c, err := quic.DialAddr(ctx, quicAddr, pki.AgentTLSConfig(&certs[i], roots, "localhost"), qc)
				if err == nil {
					_, _, _, err = controlStream(t, c)
					if err == nil {
						conns[i] = c
						return
					}
					c.CloseWithError(0, "")
				}
				var te *quic.TransportError
				if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused || attempt == 5 {
					errc <- err
					return
				}
				refused.Add(1)
				time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	connectTime := time.Since(start)
	close(errc)
	for err := range errc {
		t.Fatalf("connect: %v", err)
	}
	time.Sleep(2 * time.Second) // let the server settle
	rss := rssKB(t, cmd.Process.Pid)
	hwm := hwmKB(t, cmd.Process.Pid)
	t.Logf("%d idle agents connected in %v (%.0f/s, %d handshakes refused and retried); server RSS %d MB (before: %d MB, peak %d MB)",
		n, connectTime.Round(time.Millisecond), float64(n)/connectTime.Seconds(), refused.Load(), rss/1024, rssBefore/1024, hwm/1024)
	if rss > 250*1024 {
		t.Errorf("server RSS %d MB with %d idle agents, goal < 250 MB", rss/1024, n)
	}
	for _, c := range conns {
		if c != nil {
			c.CloseWithError(0, "")
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop on SIGTERM")
	}
}

// serverBinary is $VIGIL_BIN/vigil-server, or a fresh build of it.
func serverBinary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("VIGIL_BIN"); d != "" {
		p := filepath.Join(d, "vigil-server")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "vigil-server")
	cmd := exec.Command("go", "build", "-o", p, "github.com/vigil-edge/vigil/server/cmd/vigil-server")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build vigil-server: %v\n%s", err, out)
	}
	return p
}

func procStatusKB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(v)
			kb, _ := strconv.Atoi(f[0])
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func rssKB(t *testing.T, pid int) int { return procStatusKB(t, pid, "VmRSS") }
func hwmKB(t *testing.T, pid int) int { return procStatusKB(t, pid, "VmHWM") }
