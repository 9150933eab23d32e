package export

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func testLog() *slog.Logger {
	if os.Getenv("VIGIL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func openDB(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "v.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// fill stores n findings of agent a-1 (acme) starting at seq first.
func fill(t *testing.T, db *store.DB, entity string, first, n int) {
	t.Helper()
	var fs []*wirev1.Finding
	for i := range n {
		seq := uint64(first + i)
		fs = append(fs, &wirev1.Finding{Seq: seq, Detector: "netflow", TimeUnixNano: time.Now().UnixNano(),
			FirstSeenUnixNano: time.Now().Add(-time.Minute).UnixNano(), Count: 4,
			Severity: wirev1.Severity(1 + seq%4), Score: 2.5, Threshold: 1.25,
			Model:       &wirev1.ModelRef{Name: "netflow-ae", Version: 3, Digest: "sha256:abcd"},
			Context:     &wirev1.FindingContext{SrcIp: "10.0.0.7", DstIp: "10.0.0.9", SrcPort: 40000, DstPort: 22, Proto: "tcp", SrcMac: "02:00:00:00:00:01"},
			TopFeatures: []*wirev1.FeatureContribution{{Name: "syn_ratio", Contribution: 0.7}},
			Summary:     fmt.Sprintf(`scan "%d" ] \ ü`, seq)})
	}
	if _, err := db.InsertFindings(context.Background(), "a-1", entity, fs); err != nil {
		t.Fatal(err)
	}
}

// ---- OCSF ----

// TestOCSFDetectionFinding validates the OCSF output against the class
// 2004 (Detection Finding, OCSF 1.3) rules written here: the required
// attributes, their types and enumerations, and the derived ones.
func TestOCSFDetectionFinding(t *testing.T) {
	db := openDB(t)
	fill(t, db, "acme", 1, 4)
	fs, _ := db.ListFindings(context.Background(), store.FindingFilter{Ascending: true})
	fs = append(fs, store.Finding{ID: 99, AgentID: "a-2", Entity: "beta", Seq: 1, Detector: "fileactivity", Time: time.Now(),
		Severity: "unspecified", Context: store.FindingContext{Path: "/etc/shadow"}, Status: store.StatusFalsePositive})
	// A finding with a lead-in: evidence data, start_time unchanged.
	fs[0].LeadIn = &store.LeadIn{Since: fs[0].FirstSeen.Add(-7 * time.Second), Packets: 14, Bytes: 840}
	sevIDs := map[float64]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true, 6: true, 99: true}
	statusIDs := map[float64]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true, 99: true}
	for _, f := range fs {
		b, err := Marshal(f, FormatOCSF)
		if err != nil {
			t.Fatal(err)
		}
		var o map[string]any
		if err := json.Unmarshal(b, &o); err != nil {
			t.Fatal(err)
		}
		num := func(path ...string) float64 {
			t.Helper()
			var v any = o
			for _, p := range path {
				m, ok := v.(map[string]any)
				if !ok {
					t.Fatalf("finding %d: %v: not an object", f.ID, path)
				}
				v = m[p]
			}
			n, ok := v.(float64)
			if !ok {
				t.Fatalf("finding %d: %v = %v, want a number", f.ID, path, v)
			}
			return n
		}
		str := func(path ...string) string {
			t.Helper()
			var v any = o
			for _, p := range path {
				m, ok := v.(map[string]any)
				if !ok {
					t.Fatalf("finding %d: %v: not an object", f.ID, path)
				}
				v = m[p]
			}
			s, ok := v.(string)
			if !ok || s == "" {
				t.Fatalf("finding %d: %v = %v, want a non-empty string", f.ID, path, v)
			}
			return s
		}
		// Required by the class and its base event.
		if num("class_uid") != 2004 || num("category_uid") != 2 || num("activity_id") != 1 {
			t.Errorf("class/category/activity: %s", b)
		}
		if num("type_uid") != num("class_uid")*100+num("activity_id") {
			t.Errorf("type_uid %v", o["type_uid"])
		}
		if !sevIDs[num("severity_id")] {
			t.Errorf("severity_id %v", o["severity_id"])
		}
		if tm := num("time"); tm < 1e12 || tm > 1e13 { // epoch milliseconds
			t.Errorf("time %v is not epoch ms", tm)
		}
		str("metadata", "version")
		str("metadata", "product", "name")
		str("metadata", "product", "vendor_name")
		if str("metadata", "product", "name") != "Vigil" {
			t.Errorf("product name")
		}
		if str("finding_info", "uid") != f.AgentID+":"+strconv.FormatUint(f.Seq, 10) {
			t.Errorf("finding_info.uid %v", str("finding_info", "uid"))
		}
		str("finding_info", "title")
		// Recommended ones we fill.
		if !statusIDs[num("status_id")] {
			t.Errorf("status_id %v", o["status_id"])
		}
		str("class_name")
		str("category_name")
		str("activity_name")
		str("severity")
		if types, ok := o["finding_info"].(map[string]any)["types"].([]any); !ok || len(types) == 0 {
			t.Errorf("finding_info.types %v", types)
		}
		fi := o["finding_info"].(map[string]any)
		if fst, ok := fi["first_seen_time"].(float64); ok {
			if lst, _ := fi["last_seen_time"].(float64); lst < fst {
				t.Errorf("last_seen_time %v before first_seen_time %v", lst, fst)
			}
		}
		evs, ok := o["evidences"].([]any)
		if !ok || len(evs) != 1 {
			t.Fatalf("evidences %v", o["evidences"])
		}
		ev := evs[0].(map[string]any)
		if f.Context.SrcIP != "" {
			src := ev["src_endpoint"].(map[string]any)
			dst := ev["dst_endpoint"].(map[string]any)
			if net.ParseIP(src["ip"].(string)) == nil || net.ParseIP(dst["ip"].(string)) == nil || dst["port"] != float64(22) {
				t.Errorf("endpoints %v %v", src, dst)
			}
			if ev["connection_info"].(map[string]any)["protocol_num"] != float64(6) {
				t.Errorf("connection_info %v", ev["connection_info"])
			}
			a := fi["analytic"].(map[string]any)
			if a["name"] != "netflow-ae" || a["type_id"] != float64(4) || a["uid"] != "sha256:abcd" {
				t.Errorf("analytic %v", a)
			}
		} else {
			if ev["file"].(map[string]any)["path"] != "/etc/shadow" || ev["file"].(map[string]any)["name"] != "shadow" {
				t.Errorf("file evidence %v", ev["file"])
			}
			if num("status_id") != 3 {
				t.Errorf("false positive status_id %v", o["status_id"])
			}
		}
		for _, ob := range o["observables"].([]any) {
			m := ob.(map[string]any)
			if m["type_id"] != float64(2) && m["type_id"] != float64(7) || m["value"] == "" || m["name"] == "" {
				t.Errorf("observable %v", m)
			}
		}
		if str("metadata", "tenant_uid") != f.Entity {
			t.Errorf("tenant_uid")
		}
		data := ev["data"].(map[string]any)
		if l := f.LeadIn; l != nil {
			li, ok := data["lead_in"].(map[string]any)
			if !ok || li["packets"] != float64(14) || li["bytes"] != float64(840) || li["since_time"] != float64(l.Since.UnixMilli()) ||
				num("start_time") != float64(f.FirstSeen.UnixMilli()) {
				t.Errorf("lead-in %v, start_time %v", data["lead_in"], o["start_time"])
			}
		} else if _, ok := data["lead_in"]; ok {
			t.Errorf("finding %d without a lead-in: %v", f.ID, data["lead_in"])
		}
	}
	// Severity mapping.
	for in, want := range map[string]int{"low": 2, "medium": 3, "high": 4, "critical": 5, "": 0, "x": 0} {
		if got, _ := ocsfSeverity(in); got != want {
			t.Errorf("severity %q -> %d, want %d", in, got, want)
		}
	}
}

// ---- syslog message format ----

func TestSyslogMessageRoundTrip(t *testing.T) {
	f := store.Finding{ID: 7, AgentID: "a-1", Entity: "acme", Seq: 3, Detector: "netflow", Severity: "high", Score: 2.5,
		Status: "new", Time: time.Date(2026, 5, 4, 3, 2, 1, 123456789, time.UTC), Summary: `quote " bracket ] backslash \ ü`}
	m, err := SyslogMessage(f, FormatJSON, facilities["local0"], "cert-host", "vigil", "vigil@32473", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(m), "<131>1 2026-05-04T03:02:01.123456Z cert-host vigil - finding [vigil@32473 ") {
		t.Errorf("header: %s", m)
	}
	h, err := ParseSyslogMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	if h.Pri != 16*8+3 || h.MsgID != "finding" || h.SDID != "vigil@32473" || h.Params["id"] != "7" || h.Params["uid"] != "a-1:3" ||
		h.Params["entity"] != "acme" || h.Params["severity"] != "high" {
		t.Errorf("parsed %+v", h)
	}
	var back store.Finding
	if err := json.Unmarshal(h.Msg, &back); err != nil || back.Summary != f.Summary {
		t.Errorf("MSG %s: %v", h.Msg, err)
	}
	// SD escaping of hostile values.
	f.Entity = `a"b]c\d`
	m, _ = SyslogMessage(f, FormatOCSF, 1, "h", "vigil", "vigil@32473", 64<<10)
	h, err = ParseSyslogMessage(m)
	if err != nil || h.Params["entity"] != `a"b]c\d` {
		t.Errorf("escaped entity: %q %v (%s)", h.Params["entity"], err, m)
	}
	// Cut to max length, on a rune boundary.
	f.Summary = strings.Repeat("ü", 2000)
	m, _ = SyslogMessage(f, FormatJSON, 1, "h", "vigil", "vigil@32473", 1000)
	if len(m) > 1000 || !strings.HasPrefix(string(m), "<") {
		t.Errorf("cut message %d bytes", len(m))
	}
}

// ---- receivers ----

// syslogReceiver is an in-test RFC 5425/6587 (TCP, TLS) or RFC 5426 (UDP)
// receiver on loopback that records every message it fully reads.
type syslogReceiver struct {
	t       *testing.T
	network string
	tls     *tls.Config
	addr    string

	mu    sync.Mutex
	got   map[int64]int // finding id -> times received
	bad   []string
	ln    net.Listener
	pc    net.PacketConn
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newReceiver(t *testing.T, network string, tc *tls.Config) *syslogReceiver {
	r := &syslogReceiver{t: t, network: network, tls: tc, addr: "127.0.0.1:0", got: map[int64]int{}}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *syslogReceiver) record(m []byte) {
	h, err := ParseSyslogMessage(m)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.bad = append(r.bad, fmt.Sprintf("%v: %.100q", err, m))
		return
	}
	id, err := strconv.ParseInt(h.Params["id"], 10, 64)
	var f store.Finding
	if err != nil || json.Unmarshal(h.Msg, &f) != nil || f.ID != id {
		r.bad = append(r.bad, fmt.Sprintf("bad finding in %.100q", m))
		return
	}
	r.got[id]++
}

func (r *syslogReceiver) start() {
	r.conns = map[net.Conn]bool{}
	if r.network == "udp" {
		pc, err := net.ListenPacket("udp", r.addr)
		if err != nil {
			r.t.Fatal(err)
		}
		_ = pc.(*net.UDPConn).SetReadBuffer(4 << 20)
		r.pc, r.addr = pc, pc.LocalAddr().String()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			buf := make([]byte, 65536)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				r.record(append([]byte(nil), buf[:n]...))
			}
		}()
		return
	}
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly after a kill
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	r.ln, r.addr = ln, ln.Addr().String()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns[c] = true
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c)
			}()
		}
	}()
}

func (r *syslogReceiver) serve(c net.Conn) {
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
		c.Close() // after the sender's end of stream: confirms the batch
	}()
	var rd io.Reader = c
	if r.tls != nil {
		tc := tls.Server(c, r.tls)
		if err := tc.Handshake(); err != nil {
			return
		}
		rd = tc
	}
	br := bufio.NewReader(rd)
	for {
		n, err := readFrameLen(br)
		if err != nil {
			return // io.EOF: the sender finished
		}
		m := make([]byte, n)
		if _, err := io.ReadFull(br, m); err != nil {
			return
		}
		r.record(m)
	}
}

// kill stops the receiver abruptly: connections are reset, not closed
// cleanly, so unread data is lost as in a crash.
func (r *syslogReceiver) kill() {
	r.mu.Lock()
	if r.ln != nil {
		r.ln.Close()
	}
	if r.pc != nil {
		r.pc.Close()
	}
	for c := range r.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *syslogReceiver) count() (distinct, total int, bad []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.got {
		total += n
	}
	return len(r.got), total, append([]string(nil), r.bad...)
}

func (r *syslogReceiver) waitFor(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d, _, bad := r.count()
		if len(bad) > 0 {
			t.Fatalf("malformed messages: %v", bad)
		}
		if d >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("receiver has %d distinct findings, want %d", d, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testTLS makes a self-signed server certificate for 127.0.0.1 and writes
// it to a CA file.
func testTLS(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "siem"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"siem.test"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "siem-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, caFile
}

// ---- forwarders ----

func TestSyslogForwarderSurvivesReceiverAndServerRestarts(t *testing.T) {
	for _, network := range []string{"tcp", "tls"} {
		t.Run(network, func(t *testing.T) {
			db := openDB(t)
			const total = 3000
			fill(t, db, "acme", 1, total)
			var tc *tls.Config
			var caFile string
			if network == "tls" {
				tc, caFile = testTLS(t)
			}
			rcv := newReceiver(t, network, tc)
			cfg := Config{Forwarders: []ForwarderConfig{{Name: "siem", Type: "syslog", Network: network, Address: rcv.addr,
				CAFile: caFile, Batch: 50, Interval: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Timeout: 5 * time.Second}}}
			ctx := context.Background()
			r, err := Start(ctx, db, cfg, testLog())
			if err != nil {
				t.Fatal(err)
			}
			// Receiver crash mid-stream, then back on the same port.
			rcv.waitFor(t, 500, 30*time.Second)
			rcv.kill()
			time.Sleep(150 * time.Millisecond)
			rcv.start()
			// Server restart mid-stream: stop the forwarders, start anew
			// from the durable cursor.
			rcv.waitFor(t, 1500, 30*time.Second)
			r.Stop()
			cur, _ := db.ForwarderCursor(ctx, "siem")
			if cur == 0 || cur >= total {
				t.Fatalf("cursor after stop = %d", cur)
			}
			r, err = Start(ctx, db, cfg, testLog())
			if err != nil {
				t.Fatal(err)
			}
			defer r.Stop()
			// New findings keep flowing too.
			fill(t, db, "acme", total+1, 100)
			rcv.waitFor(t, total+100, 60*time.Second)
			d, n, _ := rcv.count()
			rcv.mu.Lock()
			for id := int64(1); id <= total+100; id++ {
				if rcv.got[id] == 0 {
					t.Errorf("finding %d never arrived", id)
				}
			}
			rcv.mu.Unlock()
			t.Logf("%s: %d distinct findings, %d messages (%d duplicates from at-least-once)", network, d, n, n-d)
			deadline := time.Now().Add(10 * time.Second)
			for {
				if c, _ := db.ForwarderCursor(ctx, "siem"); c == total+100 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("cursor did not reach the last finding")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if st := r.Stats()["siem"]; st.Cursor != total+100 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestSyslogUDP(t *testing.T) {
	db := openDB(t)
	fill(t, db, "acme", 1, 100)
	fill2 := func() {
		var fs []*wirev1.Finding
		for i := range 20 {
			fs = append(fs, &wirev1.Finding{Seq: uint64(i + 1), Detector: "fileactivity", Severity: wirev1.Severity_SEVERITY_LOW, TimeUnixNano: time.Now().UnixNano()})
		}
		if _, err := db.InsertFindings(context.Background(), "b-1", "beta", fs); err != nil {
			t.Fatal(err)
		}
	}
	fill2()
	rcv := newReceiver(t, "udp", nil)
	cfg := Config{Forwarders: []ForwarderConfig{{Name: "udp", Type: "syslog", Network: "udp", Address: rcv.addr,
		Entity: "acme", Batch: 10, Interval: 20 * time.Millisecond}}}
	r, err := Start(context.Background(), db, cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	rcv.waitFor(t, 100, 20*time.Second)
	time.Sleep(100 * time.Millisecond)
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for id := range rcv.got {
		if id > 100 {
			t.Errorf("beta finding %d forwarded by an acme-only forwarder", id)
		}
	}
}

func TestWebhookRetriesAndSignature(t *testing.T) {
	db := openDB(t)
	fill(t, db, "acme", 1, 250)
	secret := "0123456789abcdef-secret"
	secretFile := filepath.Join(t.TempDir(), "hook.secret")
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	t.Setenv("HOOK_AUTH", "Bearer hook-token")
	var (
		mu    sync.Mutex
		calls int
		got   = map[int64]int{}
		errs  []string
	)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= 3 { // the SIEM is down at first
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		ts := r.Header.Get("X-Vigil-Timestamp")
		if !hmac.Equal([]byte(r.Header.Get("X-Vigil-Signature")), []byte(Sign([]byte(secret), ts, body))) {
			errs = append(errs, "bad signature")
		}
		if r.Header.Get("Authorization") != "Bearer hook-token" || r.Header.Get("Content-Type") != "application/x-ndjson" {
			errs = append(errs, "headers "+fmt.Sprint(r.Header))
		}
		for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
			var o OCSFFinding
			if err := json.Unmarshal([]byte(l), &o); err != nil || o.ClassUID != 2004 {
				errs = append(errs, "bad line "+l)
				continue
			}
			id := o.Unmapped["vigil"].(map[string]any)["id"].(float64)
			got[int64(id)]++
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	cfg := Config{Forwarders: []ForwarderConfig{{Name: "hook", Type: "webhook", URL: srv.URL + "/hook?k=v", Format: FormatOCSF,
		CAFile: caFile, SecretFile: secretFile, Headers: map[string]string{"Authorization": "env:HOOK_AUTH"},
		Batch: 100, Interval: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}}}
	r, err := Start(context.Background(), db, cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 250 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook got %d findings, want 250", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("receiver errors: %v", errs)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("finding %d delivered %d times (no failure after the first 2xx)", id, n)
		}
	}
	if st := r.Stats()["hook"]; st.Failures < 3 {
		t.Errorf("stats %+v: want the 3 failures counted", st)
	}
}

func TestStartNow(t *testing.T) {
	db := openDB(t)
	fill(t, db, "acme", 1, 10)
	rcv := newReceiver(t, "tcp", nil)
	cfg := Config{Forwarders: []ForwarderConfig{{Name: "late", Type: "syslog", Network: "tcp", Address: rcv.addr, Start: "now",
		Interval: 20 * time.Millisecond}}}
	r, err := Start(context.Background(), db, cfg, testLog())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, _ := db.ForwarderCursor(context.Background(), "late"); c == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("start: now did not set the cursor")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fill(t, db, "acme", 11, 5)
	rcv.waitFor(t, 5, 10*time.Second)
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for id := range rcv.got {
		if id <= 10 {
			t.Errorf("old finding %d forwarded with start: now", id)
		}
	}
}

// ---- config ----

func TestParseConfig(t *testing.T) {
	good := `
listen: ":8443"   # another part's key: ignored here
forwarders:
  - name: siem
    type: syslog
    network: tls
    address: siem.example:6514
    format: ocsf
    min_severity: medium
    interval: 2s
  - name: hook
    type: webhook
    url: https://soar.example/hook
    headers: {Authorization: "env:X"}
`
	cfg, err := ParseConfig([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Forwarders) != 2 || cfg.Forwarders[0].Interval != 2*time.Second || cfg.Forwarders[0].Facility != "local0" ||
		cfg.Forwarders[0].Batch != 200 || cfg.Forwarders[1].Format != FormatJSON {
		t.Errorf("parsed %+v", cfg)
	}
	if cfg, err := ParseConfig([]byte("listen: x\n")); err != nil || len(cfg.Forwarders) != 0 {
		t.Errorf("no forwarders: %+v %v", cfg, err)
	}
	bad := map[string]string{
		"unknown key":   "forwarders:\n  - {name: a, type: syslog, network: udp, address: 'h:1', adress: x}\n",
		"bad type":      "forwarders:\n  - {name: a, type: kafka}\n",
		"dup name":      "forwarders:\n  - {name: a, type: syslog, network: udp, address: 'h:1'}\n  - {name: a, type: syslog, network: udp, address: 'h:1'}\n",
		"bad name":      "forwarders:\n  - {name: 'A B', type: syslog, network: udp, address: 'h:1'}\n",
		"bad network":   "forwarders:\n  - {name: a, type: syslog, network: sctp, address: 'h:1'}\n",
		"no port":       "forwarders:\n  - {name: a, type: syslog, network: tcp, address: 'h'}\n",
		"ca on udp":     "forwarders:\n  - {name: a, type: syslog, network: udp, address: 'h:1', ca_file: x}\n",
		"bad facility":  "forwarders:\n  - {name: a, type: syslog, network: udp, address: 'h:1', facility: local9}\n",
		"http remote":   "forwarders:\n  - {name: a, type: webhook, url: 'http://soar.example/x'}\n",
		"creds in url":  "forwarders:\n  - {name: a, type: webhook, url: 'https://u:p@soar.example/x'}\n",
		"header inject": "forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', headers: {'X-A': \"v\\r\\nX-B: w\"}}\n",
		"bad severity":  "forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', min_severity: huge}\n",
		"bad duration":  "forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', interval: soon}\n",
		"batch":         "forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', batch: 5000}\n",
		"not a list":    "forwarders: {name: a}\n",
		"syntax":        "forwarders: [\n",
		"bad sd id":     "forwarders:\n  - {name: a, type: syslog, network: udp, address: 'h:1', sd_id: 'a b'}\n",
	}
	for name, in := range bad {
		if _, err := ParseConfig([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A loopback http webhook is allowed (a local relay).
	if _, err := ParseConfig([]byte("forwarders:\n  - {name: a, type: webhook, url: 'http://127.0.0.1:9/x'}\n")); err != nil {
		t.Errorf("loopback http: %v", err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "server.yaml")
	os.WriteFile(p, []byte(good), 0o600)
	if cfg, err := LoadConfig(p); err != nil || len(cfg.Forwarders) != 2 {
		t.Errorf("LoadConfig: %v", err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "none.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("forwarders:\n  - {name: a, type: syslog, network: udp, address: 'h:1'}\n"))
	f.Add([]byte("forwarders:\n  - {name: a, type: webhook, url: 'https://x.example', headers: {A: b}}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseConfig(b)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil { // validated output validates again
			t.Fatalf("re-validate: %v", err)
		}
	})
}

func FuzzSyslogFrames(f *testing.F) {
	f.Add([]byte("5 hello3 abc"))
	f.Add([]byte("00 x"))
	f.Add([]byte("999999999 x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, _ := ParseSyslogFrames(bufio.NewReader(strings.NewReader(string(b))), 1<<16)
		for _, m := range msgs {
			_, _ = ParseSyslogMessage(m)
		}
	})
}
