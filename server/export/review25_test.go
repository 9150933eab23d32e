package export

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// TestParseConfigDocuments: ParseConfig decoded only the first YAML
// document of the server config file, so forwarders configured after a
// `---` were silently dropped (no SIEM export, and no error). And it
// re-encoded the forwarders node alone before decoding it strictly, so a
// forwarder that merged an anchor defined elsewhere in the file (a common
// way to share settings) was refused as "unknown anchor".
func TestParseConfigDocuments(t *testing.T) {
	second := "listen: ':8443'\n---\nforwarders:\n  - {name: a, type: syslog, network: udp, address: 'h:1'}\n"
	if cfg, err := ParseConfig([]byte(second)); err == nil {
		t.Errorf("forwarders in a second document: accepted and ignored (%d forwarders)", len(cfg.Forwarders))
	}
	// Empty documents around the one that matters are fine.
	for _, in := range []string{
		"---\nforwarders:\n  - {name: a, type: syslog, network: udp, address: 'h:1'}\n",
		"forwarders:\n  - {name: a, type: syslog, network: udp, address: 'h:1'}\n---\n",
		"forwarders:\n  - {name: a, type: syslog, network: udp, address: 'h:1'}\n...\n",
	} {
		if cfg, err := ParseConfig([]byte(in)); err != nil || len(cfg.Forwarders) != 1 {
			t.Errorf("%q: %d forwarders, %v", in, len(cfg.Forwarders), err)
		}
	}
	anchors := `
siem_defaults: &siem
  type: syslog
  network: tcp
  format: ocsf
forwarders:
  - <<: *siem
    name: siem-a
    address: a.example:601
  - <<: *siem
    name: siem-b
    address: b.example:601
`
	cfg, err := ParseConfig([]byte(anchors))
	if err != nil {
		t.Fatalf("anchor merged into forwarders: %v", err)
	}
	if len(cfg.Forwarders) != 2 || cfg.Forwarders[1].Network != "tcp" || cfg.Forwarders[1].Format != FormatOCSF {
		t.Errorf("anchor merged into forwarders: %+v", cfg.Forwarders)
	}
	// Strictness inside a forwarder is kept, merged keys included.
	typo := "d: &d {type: syslog, network: udp, adress: x}\nforwarders:\n  - {<<: *d, name: a, address: 'h:1'}\n"
	if _, err := ParseConfig([]byte(typo)); err == nil {
		t.Error("unknown key merged from an anchor: accepted")
	}
}

// TestWebhookHeadersValidated: header names and values were checked for
// space, ':' and CR/LF only, and values read from the environment not at
// all. Go's HTTP client refuses any other invalid name or value at every
// request ("net/http: invalid header field name"), so such a forwarder
// started fine and then never delivered a finding, retrying forever.
// They are configuration errors now.
func TestWebhookHeadersValidated(t *testing.T) {
	for name, in := range map[string]string{
		"separator in name":  "forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', headers: {'X(A)': v}}\n",
		"tab in name":        "forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', headers: {\"X\\tA\": v}}\n",
		"non-ASCII name":     "forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', headers: {'X-é': v}}\n",
		"control in value":   "forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', headers: {X-A: \"v\\x01w\"}}\n",
		"NUL in value":       "forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', headers: {X-A: \"v\\0w\"}}\n",
		"empty env variable": "forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', headers: {X-A: 'env:'}}\n",
	} {
		if _, err := ParseConfig([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseConfig([]byte("forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', headers: {Authorization: 'Bearer a.b~c/=', X-Tenant: 'env:TENANT'}}\n")); err != nil {
		t.Errorf("good headers: %v", err)
	}
	t.Setenv("VIGIL_TEST_HOOK_AUTH", "Bearer x\nX-Injected: 1")
	fc := ForwarderConfig{Name: "a", Type: "webhook", URL: "https://x.example", Headers: map[string]string{"Authorization": "env:VIGIL_TEST_HOOK_AUTH"}}
	if s, err := newWebhookSender(fc); err == nil {
		s.Close()
		t.Error("a header value from the environment with a newline: accepted")
	}
}

// TestWebhookRetrySameBatch: X-Vigil-Batch is documented as the same on a
// retry, so that receivers can deduplicate. But a failed batch was read
// again from the store before the retry, and a batch that was not full had
// grown by then: the retry of 1-3 went out as 1-4. A receiver that had
// processed 1-3 (its answer lost) took 1-4 for a new batch, and stored 1-3
// twice. A failed batch is now retried exactly as it was.
func TestWebhookRetrySameBatch(t *testing.T) {
	db := openDB(t)
	fill(t, db, "acme", 1, 3)
	var (
		mu      sync.Mutex
		batches []string
		bodies  []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		batches = append(batches, r.Header.Get("X-Vigil-Batch"))
		bodies = append(bodies, string(b))
		n := len(batches)
		mu.Unlock()
		if n == 1 {
			// The first attempt fails; a new finding arrives meanwhile.
			fill(t, db, "acme", 4, 1)
			http.Error(w, "try again", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	cfg := Config{Forwarders: []ForwarderConfig{{Name: "hook", Type: "webhook", URL: srv.URL + "/hook", Batch: 10,
		Interval: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}}}
	r, err := Start(context.Background(), db, cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats()["hook"].Cursor < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	r.Stop()
	mu.Lock()
	defer mu.Unlock()
	if len(batches) < 2 {
		t.Fatalf("batches %v", batches)
	}
	if batches[1] != batches[0] || bodies[1] != bodies[0] {
		t.Errorf("retry of batch %s went out as %s (%d bytes, first %d)", batches[0], batches[1], len(bodies[1]), len(bodies[0]))
	}
	if want := []string{"1-3", "1-3", "4-4"}; !slices.Equal(batches, want) {
		t.Errorf("batches %v, want %v", batches, want)
	}
}

// TestSyslogTLSRejectedClientCertNotDelivered: in TLS 1.3 the client's
// handshake ends before the server has checked the client certificate. A
// receiver that refuses it (expired, wrong issuer) answers with an alert and
// closes; the forwarder read that answer as raw bytes, took the end of
// stream after them for "the receiver read the whole batch", and moved the
// cursor: 11 of 20 batches were counted as delivered when the receiver
// closed at once, all 20 when it read the rest of the stream first (as a
// lingering close does). Those findings never reached the SIEM. The answer
// is now read through TLS, so the alert is an error and the batch is sent
// again.
func TestSyslogTLSRejectedClientCertNotDelivered(t *testing.T) {
	srvTLS, caFile := testTLS(t)
	srvCert, err := x509.ParseCertificate(srvTLS.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(srvCert) // not the client certificate's issuer
	srvTLS.ClientAuth, srvTLS.ClientCAs = tls.RequireAndVerifyClientCert, pool
	certFile, keyFile := selfSignedClientCert(t)
	for _, drain := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					if err := tls.Server(c, srvTLS).Handshake(); err != nil && drain {
						_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
						_, _ = io.Copy(io.Discard, c)
					}
				}()
			}
		}()
		cfg := Config{Forwarders: []ForwarderConfig{{Name: "siem", Type: "syslog", Network: "tls", Address: ln.Addr().String(),
			CAFile: caFile, CertFile: certFile, KeyFile: keyFile}}}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		s, err := newSyslogSender(cfg.Forwarders[0])
		if err != nil {
			t.Fatal(err)
		}
		delivered := 0
		for i := range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if s.Send(ctx, []store.Finding{{ID: int64(i + 1), AgentID: "a-1", Seq: uint64(i + 1), Severity: "high"}}) == nil {
				delivered++
			}
			cancel()
		}
		s.Close()
		ln.Close()
		if delivered > 0 {
			t.Errorf("receiver refusing the client certificate (drain %v): %d of 20 batches reported delivered", drain, delivered)
		}
	}
}

// selfSignedClientCert writes a client certificate and its key.
func selfSignedClientCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "vigil-server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
