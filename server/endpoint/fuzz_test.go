package endpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/pki"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func mathNaN() float64 { return math.NaN() }

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkHandlerResult fails when a handler returns something other than nil
// or a connection-closing protocol error with a known code on outside bytes
// (store errors cannot happen with the fake store).
func checkHandlerResult(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var pe *wirev1.ProtocolError
	if !errors.As(err, &pe) {
		t.Fatalf("handler returned a non-protocol error on outside input: %v", err)
	}
	if pe.Code.String() == "unknown" || pe.Code == wirev1.CodeNoError {
		t.Fatalf("handler returned code %d", pe.Code)
	}
}

// fuzzStream runs the whole stream dispatch (header + handler) on data.
func fuzzStream(t *testing.T, e *Endpoint, p *peer, data []byte) []byte {
	var out bytes.Buffer
	err := e.serveStream(context.Background(), p, rw{bytes.NewReader(data), &out})
	checkHandlerResult(t, err)
	return out.Bytes()
}

func seedFrames(f *testing.F, ms ...proto.Message) {
	f.Add(frames(f, ms...))
}

// FuzzStreamDispatch feeds arbitrary bytes to a stream of an authenticated
// connection: header parsing and every handler behind it.
func FuzzStreamDispatch(f *testing.F) {
	seedFrames(f, header(wirev1.StreamKind_STREAM_KIND_FINDINGS), batch(1, 2, 3))
	seedFrames(f, header(wirev1.StreamKind_STREAM_KIND_FETCH), &wirev1.FetchRequest{Digest: "sha256:" + sha256hex(nil)})
	seedFrames(f, header(42))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	e, _ := newTestEndpoint(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzStream(t, e, authedPeer(e, "a-1", "ent1"), data)
	})
}

// FuzzFindingsHandler feeds arbitrary bytes after a FINDINGS header. The
// fake store fails the test if a batch with non-increasing seqs reaches it;
// every Ack must name the last seq of a committed batch.
func FuzzFindingsHandler(f *testing.F) {
	f.Add(frames(f, batch(1, 2, 3)))
	f.Add(frames(f, batch(1, 2, 3), batch(2, 4)))
	f.Add(frames(f, batch(5, 3)))
	f.Add(frames(f, &wirev1.FindingsBatch{}))
	e, st := newTestEndpoint(f)
	hdr := frames(f, header(wirev1.StreamKind_STREAM_KIND_FINDINGS))
	f.Fuzz(func(t *testing.T, data []byte) {
		out := fuzzStream(t, e, authedPeer(e, "a-fuzz", "ent1"), append(bytes.Clone(hdr), data...))
		r := wirev1.NewReader(bytes.NewReader(out), 0)
		for {
			var a wirev1.Ack
			if err := r.Read(&a); err != nil {
				break
			}
			st.mu.Lock()
			_, ok := st.findings["a-fuzz"][a.ThroughSeq]
			st.mu.Unlock()
			if !ok {
				t.Fatalf("ack through %d, never stored", a.ThroughSeq)
			}
		}
	})
}

// FuzzControlHandler feeds arbitrary bytes after a CONTROL header.
func FuzzControlHandler(f *testing.F) {
	hello := &wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: &wirev1.Hello{AgentVersion: "1", ProtocolVersion: 1}}}
	status := &wirev1.AgentControl{Msg: &wirev1.AgentControl_Status{Status: &wirev1.Status{Counters: map[string]uint64{"a": 1}}}}
	renew := &wirev1.AgentControl{Msg: &wirev1.AgentControl_Renew{Renew: &wirev1.RenewRequest{CsrDer: []byte("x")}}}
	f.Add(frames(f, hello, status, renew))
	f.Add(frames(f, hello, hello))
	f.Add(frames(f, status))
	e, _ := newTestEndpoint(f)
	hdr := frames(f, header(wirev1.StreamKind_STREAM_KIND_CONTROL))
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzStream(t, e, authedPeer(e, "a-fuzz", "ent1"), append(bytes.Clone(hdr), data...))
	})
}

// FuzzEnrollHandler feeds arbitrary bytes after an ENROLL header on a
// connection without a certificate. Whatever the input, the response is at
// most one EnrollResponse, and a chain is only ever issued for the good
// token with a valid CSR.
func FuzzEnrollHandler(f *testing.F) {
	key, err := pki.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "h")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(frames(f, &wirev1.EnrollRequest{Token: goodToken, CsrDer: csr, Hostname: "h"}))
	f.Add(frames(f, &wirev1.EnrollRequest{Token: "x", CsrDer: csr}))
	f.Add(frames(f, &wirev1.EnrollRequest{Token: goodToken, CsrDer: []byte{0x30, 0x82}}))
	e, st := newTestEndpoint(f)
	hdr := frames(f, header(wirev1.StreamKind_STREAM_KIND_ENROLL))
	f.Fuzz(func(t *testing.T, data []byte) {
		st.mu.Lock()
		st.used = false
		st.mu.Unlock()
		out := fuzzStream(t, e, anonPeer(e), append(bytes.Clone(hdr), data...))
		rs := wirev1.NewReader(bytes.NewReader(out), 0)
		var r wirev1.EnrollResponse
		if err := rs.Read(&r); err != nil {
			return
		}
		if len(r.CertChainDer) > 0 && r.Error != nil {
			t.Fatal("chain and error in one response")
		}
		if err := rs.Read(&r); err == nil {
			t.Fatal("more than one EnrollResponse")
		}
	})
}

// FuzzFetchHandler feeds arbitrary bytes after a FETCH header; one bundle
// exists.
func FuzzFetchHandler(f *testing.F) {
	data := []byte("bundle bytes")
	digest := "sha256:" + sha256hex(data)
	f.Add(frames(f, &wirev1.FetchRequest{Digest: digest}))
	f.Add(frames(f, &wirev1.FetchRequest{Digest: digest, Offset: 5}, &wirev1.FetchRequest{Digest: digest, Offset: 99}))
	f.Add(frames(f, &wirev1.FetchRequest{Digest: "sha256:../x"}))
	e, _ := newTestEndpoint(f)
	path, _ := BundlePath(e.cfg.BundleDir, digest)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		f.Fatal(err)
	}
	hdr := frames(f, header(wirev1.StreamKind_STREAM_KIND_FETCH))
	f.Fuzz(func(t *testing.T, in []byte) {
		out := fuzzStream(t, e, authedPeer(e, "a-fuzz", "ent1"), append(bytes.Clone(hdr), in...))
		r := wirev1.NewReader(bytes.NewReader(out), 0)
		for {
			var c wirev1.FetchChunk
			if err := r.Read(&c); err != nil {
				break
			}
			if len(c.Data) > wirev1.MaxFetchChunk {
				t.Fatalf("chunk of %d bytes", len(c.Data))
			}
			if c.Error == nil && !bytes.Equal(c.Data, data[c.Offset:c.Offset+uint64(len(c.Data))]) {
				t.Fatal("chunk bytes differ from the bundle")
			}
		}
	})
}
