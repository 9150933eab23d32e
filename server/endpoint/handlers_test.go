package endpoint

// Handler tests without QUIC: each stream handler reads from an in-memory
// reader and writes to a buffer, against a fake store. The integration tests
// (endpoint_test.go) use the real server and SQLite store.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/pki/pkitest"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

const goodToken = "vge_good.secret"

// fakeStore checks the invariants the endpoint promises the store.
type fakeStore struct {
	mu       sync.Mutex
	t        testing.TB
	findings map[string]map[uint64]string // agent -> seq -> entity
	agents   map[string]store.Agent
	touches  int
	certs    int
	used     bool
}

func newFakeStore(t testing.TB) *fakeStore {
	return &fakeStore{t: t, findings: map[string]map[uint64]string{}, agents: map[string]store.Agent{}}
}

func (f *fakeStore) ConsumeEnrollToken(_ context.Context, tok string, _ time.Time) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if tok != goodToken || f.used {
		return "", store.ErrTokenInvalid
	}
	f.used = true
	return "ent1", nil
}

func (f *fakeStore) RegisterAgent(_ context.Context, a store.Agent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !pki.ValidName(a.ID) || !pki.ValidName(a.Entity) || a.CertSerial == "" {
		f.t.Errorf("RegisterAgent with bad agent %+v", a)
	}
	f.agents[a.ID] = a
	return nil
}

func (f *fakeStore) RecordCert(context.Context, string, string, time.Time) error {
	f.mu.Lock()
	f.certs++
	f.mu.Unlock()
	return nil
}

func (f *fakeStore) RevokedAgents(context.Context) (map[string]bool, error) {
	return map[string]bool{}, nil
}

func (f *fakeStore) TouchAgent(context.Context, string, time.Time, store.AgentState) error {
	f.mu.Lock()
	f.touches++
	f.mu.Unlock()
	return nil
}

func (f *fakeStore) InsertFindings(_ context.Context, agentID, entity string, fs []*wirev1.Finding) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(fs) == 0 || len(fs) > MaxBatchFindings {
		f.t.Errorf("InsertFindings with %d findings", len(fs))
	}
	m := f.findings[agentID]
	if m == nil {
		m = map[uint64]string{}
		f.findings[agentID] = m
	}
	n := 0
	for i, x := range fs {
		if i > 0 && x.Seq <= fs[i-1].Seq {
			f.t.Errorf("InsertFindings: seqs not increasing: %d after %d", x.Seq, fs[i-1].Seq)
		}
		if _, ok := m[x.Seq]; !ok {
			m[x.Seq] = entity
			n++
		}
	}
	return n, nil
}

func (f *fakeStore) count(agentID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.findings[agentID])
}

var (
	depOnce sync.Once
	dep     *pkitest.Deployment
)

// testDeployment is shared by the handler tests (pki.Init is slow for fuzzing).
func testDeployment(t testing.TB) *pkitest.Deployment {
	depOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vigil-endpoint-test-*")
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(dir, "pki")
		if err := pki.Init(d, "vigil.test", []string{"localhost"}, nil); err != nil {
			t.Fatal(err)
		}
		ca, err := pki.LoadCA(d)
		if err != nil {
			t.Fatal(err)
		}
		dep = &pkitest.Deployment{Dir: d, CA: ca}
	})
	return dep
}

func newTestEndpoint(t testing.TB) (*Endpoint, *fakeStore) {
	t.Helper()
	d := testDeployment(t)
	st := newFakeStore(t)
	bundles := t.TempDir()
	e, err := New(context.Background(), Config{CA: d.CA, Store: st, BundleDir: bundles})
	if err != nil {
		t.Fatal(err)
	}
	return e, st
}

func authedPeer(e *Endpoint, agentID, entity string) *peer {
	return &peer{authed: true, id: pki.Identity{TrustDomain: e.td, Entity: entity, AgentID: agentID}, log: e.log}
}

func anonPeer(e *Endpoint) *peer { return &peer{log: e.log} }

// rw is an in-memory stream: reads from in, writes to out.
type rw struct {
	io.Reader
	out *bytes.Buffer
}

func (s rw) Write(p []byte) (int, error) { return s.out.Write(p) }

func frames(t testing.TB, ms ...proto.Message) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, m := range ms {
		if err := wirev1.Write(&b, m, 0); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func header(k wirev1.StreamKind) *wirev1.StreamHeader {
	return &wirev1.StreamHeader{Kind: k, ProtocolVersion: wirev1.ProtocolVersion}
}

func batch(seqs ...uint64) *wirev1.FindingsBatch {
	b := &wirev1.FindingsBatch{FirstSeq: seqs[0]}
	for _, s := range seqs {
		b.Findings = append(b.Findings, &wirev1.Finding{Seq: s, Detector: "netflow", Severity: wirev1.Severity_SEVERITY_HIGH,
			Score: 1.5, Threshold: 1, Summary: "scan", TopFeatures: []*wirev1.FeatureContribution{{Name: "dst_ports", Contribution: 0.9}}})
	}
	return b
}

func readAll[T proto.Message](t testing.TB, b []byte, mk func() T) []T {
	t.Helper()
	r := wirev1.NewReader(bytes.NewReader(b), 0)
	var out []T
	for {
		m := mk()
		if err := r.Read(m); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("read response: %v", err)
		}
		out = append(out, m)
	}
}

func codeOf(err error) wirev1.ErrorCode {
	var pe *wirev1.ProtocolError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return 0
}

func TestFindingsHandler(t *testing.T) {
	e, st := newTestEndpoint(t)
	p := authedPeer(e, "a-000000000001", "ent1")
	in := frames(t, header(wirev1.StreamKind_STREAM_KIND_FINDINGS), batch(1, 2, 3), batch(3, 5), batch(1, 2, 3))
	var out bytes.Buffer
	if err := e.serveStream(context.Background(), p, rw{bytes.NewReader(in), &out}); err != nil {
		t.Fatal(err)
	}
	acks := readAll(t, out.Bytes(), func() *wirev1.Ack { return &wirev1.Ack{} })
	var got []uint64
	for _, a := range acks {
		got = append(got, a.ThroughSeq)
	}
	if want := []uint64{3, 5, 3}; !slicesEqual(got, want) {
		t.Fatalf("acks %v, want %v", got, want)
	}
	if n := st.count("a-000000000001"); n != 4 {
		t.Fatalf("stored %d findings, want 4", n)
	}
}

func slicesEqual(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFindingsValidation(t *testing.T) {
	e, _ := newTestEndpoint(t)
	big := batch(1)
	big.Findings[0].Summary = string(bytes.Repeat([]byte("x"), maxSummary+1))
	nan := batch(1)
	nan.Findings[0].Score = mathNaN()
	noDet := batch(1)
	noDet.Findings[0].Detector = ""
	badSev := batch(1)
	badSev.Findings[0].Severity = 9
	tooMany := &wirev1.FindingsBatch{FirstSeq: 1}
	for i := range MaxBatchFindings + 1 {
		tooMany.Findings = append(tooMany.Findings, &wirev1.Finding{Seq: uint64(i + 1), Detector: "d"})
	}
	below := batch(5, 6)
	below.FirstSeq = 6
	leadAfter := batch(1)
	leadAfter.Findings[0].FirstSeenUnixNano = 2e18
	leadAfter.Findings[0].LeadInUnixNano, leadAfter.Findings[0].LeadInPackets = 2e18+1, 3
	leadEarly := batch(1)
	leadEarly.Findings[0].FirstSeenUnixNano = 2e18
	leadEarly.Findings[0].LeadInUnixNano, leadEarly.Findings[0].LeadInPackets = 2e18-wirev1.MaxLeadIn-1, 3
	leadEmpty := batch(1)
	leadEmpty.Findings[0].FirstSeenUnixNano = 2e18
	leadEmpty.Findings[0].LeadInUnixNano = 2e18 - 1e9
	for _, tc := range []struct {
		name string
		b    *wirev1.FindingsBatch
		code wirev1.ErrorCode
	}{
		{"empty", &wirev1.FindingsBatch{FirstSeq: 1}, wirev1.CodeProtocol},
		{"decreasing", batch(3, 2), wirev1.CodeSequenceBroken},
		{"repeated", batch(3, 3), wirev1.CodeSequenceBroken},
		{"below first_seq", below, wirev1.CodeSequenceBroken},
		{"seq above int64", batch(1 << 63), wirev1.CodeSequenceBroken},
		{"summary too long", big, wirev1.CodeProtocol},
		{"NaN score", nan, wirev1.CodeProtocol},
		{"no detector", noDet, wirev1.CodeProtocol},
		{"unknown severity", badSev, wirev1.CodeProtocol},
		{"too many findings", tooMany, wirev1.CodeProtocol},
		{"lead-in after first_seen", leadAfter, wirev1.CodeProtocol},
		{"lead-in too early", leadEarly, wirev1.CodeProtocol},
		{"lead-in without packets", leadEmpty, wirev1.CodeProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := frames(t, header(wirev1.StreamKind_STREAM_KIND_FINDINGS), tc.b)
			var out bytes.Buffer
			err := e.serveStream(context.Background(), authedPeer(e, "a-1", "ent1"), rw{bytes.NewReader(in), &out})
			if got := codeOf(err); got != tc.code {
				t.Fatalf("error %v (code %s), want code %s", err, got, tc.code)
			}
		})
	}
}

func TestStreamHeaderErrors(t *testing.T) {
	e, _ := newTestEndpoint(t)
	for _, tc := range []struct {
		name   string
		in     []byte
		authed bool
		code   wirev1.ErrorCode
	}{
		{"garbage", []byte{5, 0xff, 0xff, 0xff, 0xff, 0xff}, true, wirev1.CodeProtocol},
		{"truncated", []byte{10, 8}, true, wirev1.CodeProtocol},
		{"oversized header", append([]byte{0x80, 0x80, 0x80, 0x08}, make([]byte, 64)...), true, wirev1.CodeFrameTooLarge},
		{"unknown kind", frames(t, &wirev1.StreamHeader{Kind: 42, ProtocolVersion: 1}), true, wirev1.CodeUnknownKind},
		{"unspecified kind", frames(t, &wirev1.StreamHeader{ProtocolVersion: 1}), true, wirev1.CodeUnknownKind},
		{"bad version", frames(t, &wirev1.StreamHeader{Kind: 3, ProtocolVersion: 2}), true, wirev1.CodeBadVersion},
		{"control without cert", frames(t, header(wirev1.StreamKind_STREAM_KIND_CONTROL)), false, wirev1.CodeUnauthorized},
		{"findings without cert", frames(t, header(wirev1.StreamKind_STREAM_KIND_FINDINGS)), false, wirev1.CodeUnauthorized},
		{"fetch without cert", frames(t, header(wirev1.StreamKind_STREAM_KIND_FETCH)), false, wirev1.CodeUnauthorized},
		{"enroll with cert", frames(t, header(wirev1.StreamKind_STREAM_KIND_ENROLL)), true, wirev1.CodeProtocol},
		{"oversized findings frame", append(frames(t, header(wirev1.StreamKind_STREAM_KIND_FINDINGS)), 0x80, 0x80, 0x80, 0x10), true, wirev1.CodeFrameTooLarge},
		{"oversized control frame", append(frames(t, header(wirev1.StreamKind_STREAM_KIND_CONTROL)), 0x80, 0x80, 0x08), true, wirev1.CodeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := anonPeer(e)
			if tc.authed {
				p = authedPeer(e, "a-1", "ent1")
			}
			var out bytes.Buffer
			err := e.serveStream(context.Background(), p, rw{bytes.NewReader(tc.in), &out})
			if got := codeOf(err); got != tc.code {
				t.Fatalf("error %v (code %s), want %s", err, got, tc.code)
			}
		})
	}
}

func TestEnrollHandler(t *testing.T) {
	e, st := newTestEndpoint(t)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "host")
	if err != nil {
		t.Fatal(err)
	}
	run := func(req *wirev1.EnrollRequest) *wirev1.EnrollResponse {
		t.Helper()
		in := frames(t, header(wirev1.StreamKind_STREAM_KIND_ENROLL), req)
		var out bytes.Buffer
		if err := e.serveStream(context.Background(), anonPeer(e), rw{bytes.NewReader(in), &out}); err != nil {
			t.Fatal(err)
		}
		rs := readAll(t, out.Bytes(), func() *wirev1.EnrollResponse { return &wirev1.EnrollResponse{} })
		if len(rs) != 1 {
			t.Fatalf("%d responses", len(rs))
		}
		return rs[0]
	}
	if r := run(&wirev1.EnrollRequest{Token: goodToken, CsrDer: []byte("garbage")}); r.GetError().GetCode() != uint32(wirev1.CodeBadCSR) {
		t.Fatalf("garbage CSR: %v", r)
	}
	if r := run(&wirev1.EnrollRequest{Token: "nope", CsrDer: csr}); r.GetError().GetCode() != uint32(wirev1.CodeTokenInvalid) {
		t.Fatalf("bad token: %v", r)
	}
	// The garbage CSR did not burn the token.
	r := run(&wirev1.EnrollRequest{Token: goodToken, CsrDer: csr, Hostname: "host"})
	if r.Error != nil {
		t.Fatalf("enroll: %v", r.Error)
	}
	leaf, err := x509.ParseCertificate(r.CertChainDer[0])
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.IdentityFromCert(leaf, "vigil.test")
	if err != nil || id.AgentID != r.AgentId || id.Entity != "ent1" {
		t.Fatalf("identity %+v %v, response %s/%s", id, err, r.AgentId, r.Entity)
	}
	if _, ok := st.agents[r.AgentId]; !ok {
		t.Fatal("agent not registered")
	}
	if r := run(&wirev1.EnrollRequest{Token: goodToken, CsrDer: csr}); r.GetError().GetCode() != uint32(wirev1.CodeTokenInvalid) {
		t.Fatalf("reused token: %v", r)
	}
}

func TestFetchHandler(t *testing.T) {
	e, _ := newTestEndpoint(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), (wirev1.MaxFetchChunk*2+1000)/16)
	digest := "sha256:" + sha256hex(data)
	path, _ := BundlePath(e.cfg.BundleDir, digest)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		req    *wirev1.FetchRequest
		code   wirev1.ErrorCode
		chunks int
	}{
		{"whole", &wirev1.FetchRequest{Digest: digest}, 0, 3},
		{"resume", &wirev1.FetchRequest{Digest: digest, Offset: wirev1.MaxFetchChunk + 7}, 0, 2},
		{"at end", &wirev1.FetchRequest{Digest: digest, Offset: uint64(len(data))}, 0, 1},
		{"beyond end", &wirev1.FetchRequest{Digest: digest, Offset: uint64(len(data)) + 1}, wirev1.CodeProtocol, 1},
		{"unknown", &wirev1.FetchRequest{Digest: "sha256:" + sha256hex([]byte("x"))}, wirev1.CodeNotFound, 1},
		{"malformed", &wirev1.FetchRequest{Digest: "sha256:../../etc/passwd"}, wirev1.CodeProtocol, 1},
		{"upper-case hex", &wirev1.FetchRequest{Digest: "sha256:" + string(bytes.ToUpper([]byte(sha256hex(data))))}, wirev1.CodeProtocol, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := frames(t, header(wirev1.StreamKind_STREAM_KIND_FETCH), tc.req)
			var out bytes.Buffer
			if err := e.serveStream(context.Background(), authedPeer(e, "a-1", "e"), rw{bytes.NewReader(in), &out}); err != nil {
				t.Fatal(err)
			}
			cs := readAll(t, out.Bytes(), func() *wirev1.FetchChunk { return &wirev1.FetchChunk{} })
			if len(cs) != tc.chunks {
				t.Fatalf("%d chunks, want %d", len(cs), tc.chunks)
			}
			if tc.code != 0 {
				if got := wirev1.ErrorCode(cs[0].GetError().GetCode()); got != tc.code {
					t.Fatalf("code %s, want %s", got, tc.code)
				}
				return
			}
			var got []byte
			off := tc.req.Offset
			for i, c := range cs {
				if c.Offset != off || c.Total != uint64(len(data)) || len(c.Data) > wirev1.MaxFetchChunk || c.Eof != (i == len(cs)-1) {
					t.Fatalf("chunk %d: offset %d total %d len %d eof %v", i, c.Offset, c.Total, len(c.Data), c.Eof)
				}
				got = append(got, c.Data...)
				off += uint64(len(c.Data))
			}
			if !bytes.Equal(got, data[tc.req.Offset:]) {
				t.Fatal("fetched bytes differ")
			}
		})
	}
}

func TestControlHandler(t *testing.T) {
	e, st := newTestEndpoint(t)
	p := authedPeer(e, "a-000000000009", "ent1")
	in := frames(t, header(wirev1.StreamKind_STREAM_KIND_CONTROL),
		&wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: &wirev1.Hello{AgentVersion: "1.0", ProtocolVersion: 1, Host: &wirev1.HostFacts{Hostname: "h"}}}},
		&wirev1.AgentControl{Msg: &wirev1.AgentControl_Status{Status: &wirev1.Status{Counters: map[string]uint64{"captured": 5}, Spool: &wirev1.SpoolStats{Depth: 3}}}},
	)
	var out bytes.Buffer
	if err := e.serveStream(context.Background(), p, rw{bytes.NewReader(in), &out}); err != nil {
		t.Fatal(err)
	}
	ms := readAll(t, out.Bytes(), func() *wirev1.ServerControl { return &wirev1.ServerControl{} })
	if len(ms) != 1 || ms[0].GetHelloAck().GetAgentId() != "a-000000000009" || ms[0].GetHelloAck().GetEntity() != "ent1" ||
		ms[0].GetHelloAck().GetStatusIntervalMs() == 0 {
		t.Fatalf("responses %v", ms)
	}
	if st.touches < 1 {
		t.Fatal("agent not touched")
	}
	// Must start with Hello.
	in = frames(t, header(wirev1.StreamKind_STREAM_KIND_CONTROL), &wirev1.AgentControl{Msg: &wirev1.AgentControl_Status{Status: &wirev1.Status{}}})
	err := e.serveStream(context.Background(), authedPeer(e, "a-2", "e"), rw{bytes.NewReader(in), &out})
	if codeOf(err) != wirev1.CodeRefused {
		t.Fatalf("status before hello: %v", err)
	}
}

// TestControlHelloShadowRollouts: Hello's list of the shadow rollouts the agent runs reaches the
// OnHello hook as sent; a list too long, or with an empty or oversized id, ends the stream with a
// protocol error before any hook runs.
func TestControlHelloShadowRollouts(t *testing.T) {
	long := strings.Repeat("r", maxRolloutID+1)
	many := make([]string, maxShadowRollouts+1)
	for i := range many {
		many[i] = fmt.Sprintf("r-%d", i)
	}
	for _, tc := range []struct {
		name string
		ids  []string
		code wirev1.ErrorCode
	}{
		{"none", nil, 0},
		{"one", []string{"r-4b5b85cd605a"}, 0},
		{"at the limit", many[:maxShadowRollouts], 0},
		{"too many", many, wirev1.CodeRefused},
		{"empty id", []string{"r-1", ""}, wirev1.CodeRefused},
		{"id too long", []string{long}, wirev1.CodeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEndpoint(t)
			got := make(chan []string, 1)
			e.cfg.OnHello = func(_ context.Context, agentID, entity string, ids []string) {
				if agentID == "a-7" && entity == "ent1" {
					got <- ids
				}
			}
			in := frames(t, header(wirev1.StreamKind_STREAM_KIND_CONTROL),
				&wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: &wirev1.Hello{AgentVersion: "1.0", ProtocolVersion: 1, ShadowRollouts: tc.ids}}})
			var out bytes.Buffer
			err := e.serveStream(context.Background(), authedPeer(e, "a-7", "ent1"), rw{bytes.NewReader(in), &out})
			if tc.code != 0 {
				if codeOf(err) != tc.code {
					t.Fatalf("err %v, want code %s", err, tc.code)
				}
				select {
				case ids := <-got:
					t.Fatalf("hook ran for a refused Hello: %v", ids)
				case <-time.After(50 * time.Millisecond):
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			select {
			case ids := <-got:
				if !slices.Equal(ids, tc.ids) {
					t.Fatalf("hook got %v, want %v", ids, tc.ids)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("OnHello not called")
			}
		})
	}
}
