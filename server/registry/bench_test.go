package registry_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/server/registry"
	"github.com/vigil-edge/vigil/server/servertest"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// countingConn counts the UDP bytes the simulated agents receive (what the server sends them)
// and send. All agents share one socket (one quic.Transport, one connection per agent).
type countingConn struct {
	net.PacketConn
	rx, tx atomic.Int64
}

// SetReadBuffer and SetWriteBuffer let quic-go size the socket buffers (1,000 connections on
// one socket).
func (c *countingConn) SetReadBuffer(n int) error {
	return c.PacketConn.(*net.UDPConn).SetReadBuffer(n)
}
func (c *countingConn) SetWriteBuffer(n int) error {
	return c.PacketConn.(*net.UDPConn).SetWriteBuffer(n)
}

func (c *countingConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(p)
	c.rx.Add(int64(n))
	return n, a, err
}

func (c *countingConn) WriteTo(p []byte, a net.Addr) (int, error) {
	n, err := c.PacketConn.WriteTo(p, a)
	c.tx.Add(int64(n))
	return n, err
}

// simAgent is a lightweight agent: a CONTROL stream, and for each ModelOffer a FETCH of the
// bundle on the same connection, a SHA-256 check, and the updater's status sequence (offered,
// fetched, verified, active). No plugin, no disk.
type simAgent struct {
	id   string
	cert tls.Certificate
}

func (a *simAgent) run(ctx context.Context, tr *quic.Transport, addr net.Addr, s *servertest.Server, ready chan<- error) error {
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	conn, err := tr.Dial(dctx, addr, s.TLSConfig(&a.cert), &quic.Config{HandshakeIdleTimeout: 60 * time.Second,
		MaxIdleTimeout: 5 * time.Minute, KeepAlivePeriod: 30 * time.Second})
	cancel()
	if err != nil {
		ready <- err
		return err
	}
	defer conn.CloseWithError(0, "")
	ctl, err := servertest.OpenStream(ctx, conn, wirev1.StreamKind_STREAM_KIND_CONTROL)
	if err == nil {
		err = wirev1.Write(ctl, &wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: &wirev1.Hello{
			AgentVersion: "bench", ProtocolVersion: wirev1.ProtocolVersion}}}, 0)
	}
	r := wirev1.NewReader(ctl, wirev1.MaxFrameSize)
	var ack wirev1.ServerControl
	if err == nil {
		err = r.Read(&ack)
	}
	if err == nil && ack.GetHelloAck() == nil {
		err = fmt.Errorf("first control message %T, want HelloAck", ack.Msg)
	}
	ready <- err
	if err != nil {
		return err
	}
	for {
		var m wirev1.ServerControl
		if err := r.Read(&m); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("agent %s: read control: %w", a.id, err)
		}
		o := m.GetModelOffer()
		if o == nil {
			continue
		}
		status := func(state, reason string) error {
			return wirev1.Write(ctl, &wirev1.AgentControl{Msg: &wirev1.AgentControl_ModelStatus{ModelStatus: &wirev1.ModelStatus{
				RolloutId: o.RolloutId, Model: o.Model, State: state, Reason: reason, TimeUnixNano: time.Now().UnixNano()}}}, 0)
		}
		if err := status("offered", ""); err != nil {
			return err
		}
		if err := fetch(ctx, conn, o); err != nil {
			_ = status("rejected", "download failed: "+err.Error())
			return fmt.Errorf("agent %s: %w", a.id, err)
		}
		for _, st := range []string{"fetched", "verified", "active"} {
			if err := status(st, ""); err != nil {
				return err
			}
		}
	}
}

func fetch(ctx context.Context, conn *quic.Conn, o *wirev1.ModelOffer) error {
	st, err := servertest.OpenStream(ctx, conn, wirev1.StreamKind_STREAM_KIND_FETCH)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := wirev1.Write(st, &wirev1.FetchRequest{Digest: o.Model.Digest}, 0); err != nil {
		return err
	}
	r := wirev1.NewReader(st, wirev1.MaxFrameSize)
	h := sha256.New()
	var got uint64
	for {
		var c wirev1.FetchChunk
		if err := r.Read(&c); err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		if c.Error != nil {
			return fmt.Errorf("fetch: server error %d %s", c.Error.Code, c.Error.Message)
		}
		if c.Offset != got || c.Total != o.Size {
			return fmt.Errorf("fetch: chunk offset %d total %d, want %d of %d", c.Offset, c.Total, got, o.Size)
		}
		h.Write(c.Data)
		got += uint64(len(c.Data))
		if c.Eof {
			break
		}
	}
	if d := "sha256:" + hex.EncodeToString(h.Sum(nil)); d != o.Model.Digest {
		return fmt.Errorf("fetch: digest %s, offered %s", d, o.Model.Digest)
	}
	return nil
}

func benchAgents(b *testing.B) int {
	n := 1000
	if v := os.Getenv("VIGIL_BENCH_AGENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("VIGIL_BENCH_AGENTS=%q", v)
		}
	}
	return n
}

// BenchmarkRolloutToActive measures, against a real in-process server (QUIC endpoint, SQLite
// store, HTTPS API), the time from `rollout create` (POST /api/v1/rollouts, as vigilctl does)
// to every one of VIGIL_BENCH_AGENTS (default 1,000) connected simulated agents having reported
// the model active, and the UDP bytes the server sent per agent in that time. Each iteration
// publishes a new version first (not timed).
//
//	go test -run '^$' -bench RolloutToActive -benchtime 3x ./server/registry/
func BenchmarkRolloutToActive(b *testing.B) {
	n := benchAgents(b)
	s := servertest.Start(b, servertest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	signer := signtest.NewSigner(b, sign.AlgEd25519)
	if err := signtest.Policy(b, 1, signer).WriteFile(filepath.Join(s.Dir, registry.TrustFile)); err != nil {
		b.Fatal(err)
	}
	modelSize := 7 << 10 // about the shipped nethost-1.vgb
	if v := os.Getenv("VIGIL_BENCH_MODEL_BYTES"); v != "" {
		modelSize, _ = strconv.Atoi(v)
	}

	// Agents: certificates from the deployment CA, registered as enrollment does (the
	// enrollment handshake itself is measured by the foundation benchmarks).
	agents := make([]*simAgent, n)
	for i := range agents {
		id := fmt.Sprintf("a-%012x", i)
		key, err := pki.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		csr, err := pki.NewCSR(key, "bench")
		if err != nil {
			b.Fatal(err)
		}
		chain, err := s.CA.SignAgentCSR(csr, "bench", id, 24*time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		cert := tls.Certificate{Certificate: chain, PrivateKey: key}
		agents[i] = &simAgent{id: id, cert: cert}
	}
	if err := registerAll(ctx, s.Store, agents); err != nil {
		b.Fatal(err)
	}

	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	cc := &countingConn{PacketConn: udp}
	tr := &quic.Transport{Conn: cc}
	defer tr.Close()
	addr, err := net.ResolveUDPAddr("udp", s.Addr)
	if err != nil {
		b.Fatal(err)
	}
	ready := make(chan error, n)
	errc := make(chan error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16) // handshakes in flight
	connStart := time.Now()
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			r := make(chan error, 1)
			go func() { errc <- a.run(ctx, tr, addr, s, r) }()
			err := <-r
			<-sem
			ready <- err
		}()
	}
	for range n {
		if err := <-ready; err != nil {
			b.Fatalf("agent connect: %v", err)
		}
	}
	b.Logf("%d agents connected in %v (%d bytes server->agents)", n, time.Since(connStart).Round(time.Millisecond), cc.rx.Load())

	api := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: s.Roots, ServerName: servertest.ServerName, MinVersion: tls.VersionTLS13}}}
	post := func(path, ctype string, body []byte, out any) {
		req, _ := http.NewRequest(http.MethodPost, s.APIURL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		req.Header.Set("Content-Type", ctype)
		resp, err := api.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			b.Fatalf("POST %s: %s %s", path, resp.Status, data)
		}
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				b.Fatal(err)
			}
		}
	}

	var totalWall time.Duration
	var rxTotal, txTotal int64
	var bundleSize int64
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		model := make([]byte, modelSize)
		_, _ = rand.Read(model)
		m := signtest.Manifest("bench", uint64(i+1), time.Now())
		path := signtest.WriteBundle(b, b.TempDir(), model, m, signer)
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		bundleSize = int64(len(data))
		var pub registry.PublishResult
		post("/api/v1/models?no_smoke=1", "application/octet-stream", data, &pub)
		digest := pub.Model.Digest
		if digest == "" {
			digest, _ = bundle.Digest(path)
		}
		rx0, tx0 := cc.rx.Load(), cc.tx.Load()
		b.StartTimer()

		start := time.Now()
		var ro registry.RolloutResponse
		post("/api/v1/rollouts", "application/json", []byte(fmt.Sprintf(`{"model":"bench@%d","entity":"bench"}`, i+1)), &ro)
		for {
			active, err := countActive(ctx, s.Store, digest)
			if err != nil {
				b.Fatal(err)
			}
			if active == n {
				break
			}
			select {
			case err := <-errc:
				b.Fatalf("agent stopped: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("after 5 min only %d of %d agents active", active, n)
			}
		}
		wall := time.Since(start)
		b.StopTimer()
		totalWall += wall
		rxTotal += cc.rx.Load() - rx0
		txTotal += cc.tx.Load() - tx0
		b.Logf("rollout %d (%s): %d agents active after %v (reached at once: %d)", i+1, ro.ID, n, wall.Round(time.Millisecond), len(ro.Reached))
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(totalWall.Seconds()/float64(b.N), "s-to-all-active")
	b.ReportMetric(float64(rxTotal)/float64(b.N)/float64(n), "server-B-sent/agent")
	b.ReportMetric(float64(txTotal)/float64(b.N)/float64(n), "agent-B-sent/agent")
	b.ReportMetric(float64(bundleSize), "bundle-B")
	b.ReportMetric(float64(n), "agents")
	cancel()
	wg.Wait()
}

func registerAll(ctx context.Context, db *store.DB, agents []*simAgent) error {
	for _, a := range agents {
		leaf, err := x509.ParseCertificate(a.cert.Certificate[0])
		if err != nil {
			return err
		}
		if err := db.RegisterAgent(ctx, store.Agent{ID: a.id, Entity: "bench", Hostname: "bench",
			CertSerial: leaf.SerialNumber.Text(16), CertNotAfter: leaf.NotAfter}); err != nil {
			return err
		}
	}
	return nil
}

func countActive(ctx context.Context, db *store.DB, digest string) (int, error) {
	st, err := db.ModelStatuses(ctx, "", digest)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range st {
		if s.State == "active" {
			n++
		}
	}
	return n, nil
}
