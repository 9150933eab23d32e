package e2e

// Shared helpers of the foundation end-to-end tests: real binaries
// (vigil-server, vigil-agent, vigilctl from VIGIL_BIN) on loopback, random
// free ports, temporary directories, bounded waits, and every process killed
// when the test ends.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/server/servertest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// bins are the real binaries under test.
type bins struct {
	server, agent, ctl, trafficgen string
	dir                            string
}

// needBins returns the binaries of VIGIL_BIN. It skips the test without
// VIGIL_E2E=1, and fails it when VIGIL_E2E=1 asks for the real binaries but
// VIGIL_BIN or one of them is missing: skipped, every real-binary test would
// pass unrun.
func needBins(t testing.TB) bins {
	t.Helper()
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("real-binary test: set VIGIL_E2E=1 and VIGIL_BIN (make test does)")
	}
	return findBins(t, t.Fatalf)
}

// lookBins is needBins without the VIGIL_E2E gate (benchmarks run only
// with -bench anyway): it skips when a binary is missing.
func lookBins(t testing.TB) bins {
	t.Helper()
	return findBins(t, t.Skipf)
}

// findBins returns the binaries of VIGIL_BIN, or ends the test with missing
// (t.Fatalf or t.Skipf) and the reason.
func findBins(t testing.TB, missing func(format string, args ...any)) bins {
	t.Helper()
	dir := os.Getenv("VIGIL_BIN")
	if dir == "" {
		missing("set VIGIL_BIN to the directory of the built binaries (make test / make bench do)")
	}
	b := bins{
		dir:        dir,
		server:     filepath.Join(dir, "vigil-server"),
		agent:      filepath.Join(dir, "vigil-agent"),
		ctl:        filepath.Join(dir, "vigilctl"),
		trafficgen: filepath.Join(dir, "vigil-trafficgen"),
	}
	for _, p := range []string{b.server, b.agent, b.ctl} {
		if _, err := os.Stat(p); err != nil {
			missing("no binary %s (run make build or set VIGIL_BIN)", p)
		}
	}
	return b
}

// waitFor polls cond every interval until it is true or timeout passes; then
// it fails the test with what(). Timeouts are generous: the tests check
// correctness, not speed, on a loaded machine.
func waitFor(t testing.TB, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := 20 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what())
		}
		time.Sleep(interval)
		interval = min(interval*2, 250*time.Millisecond)
	}
}

// freeTCP is freeTCPAddr for benchmarks too.
func freeTCP(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freeUDPAddr(t testing.TB) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// proc is a running binary whose output goes to a log file (appended across
// restarts). It is killed when the test ends.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(t testing.TB, name, logPath string, env []string, bin string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "=== %s %s %s\n", time.Now().Format(time.RFC3339Nano), filepath.Base(bin), strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not die on SIGKILL", p.name)
	}
}

// stop sends SIGTERM and waits up to timeout for a clean exit (status 0).
func (p *proc) stop(t testing.TB, timeout time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("%s exited with %v after SIGTERM\n%s", p.name, p.err, tail(p.log, 30))
		}
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not stop within %s of SIGTERM\n%s", p.name, timeout, tail(p.log, 30))
	}
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "--- " + path + ":\n" + strings.Join(lines, "\n")
}

// deployment is a vigil-server data directory and the server process that
// serves it on fixed loopback ports (kept across restarts, so that agents
// find it again).
type deployment struct {
	t          testing.TB
	b          bins
	dir        string // data directory
	log        string
	quicAddr   string
	apiAddr    string
	adminToken string
	caFile     string
	pin        string
	p          *proc
	logLevel   string // of vigil-server run; "" = debug
	http       *http.Client
	db         *sql.DB
}

// newDeployment runs `vigil-server init` in a fresh directory.
func newDeployment(t testing.TB, b bins, trustDomain string) *deployment {
	t.Helper()
	base := t.TempDir()
	d := &deployment{t: t, b: b, dir: filepath.Join(base, "server"), log: filepath.Join(base, "server.log"),
		quicAddr: freeUDPAddr(t), apiAddr: freeTCP(t)}
	out, err := exec.Command(b.server, "init", "--data", d.dir, "--trust-domain", trustDomain).CombinedOutput()
	if err != nil {
		t.Fatalf("vigil-server init: %v\n%s", err, out)
	}
	tok, err := os.ReadFile(filepath.Join(d.dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	d.adminToken = strings.TrimSpace(string(tok))
	d.caFile = filepath.Join(d.dir, "ca.pem")
	roots, err := pki.ReadCerts(d.caFile)
	if err != nil || len(roots) != 1 {
		t.Fatalf("read %s: %v (%d certs)", d.caFile, err, len(roots))
	}
	d.pin = pki.SPKIPin(roots[0])
	if !strings.Contains(string(out), d.pin) {
		t.Fatalf("vigil-server init did not print the CA pin %s:\n%s", d.pin, out)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	d.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}}}
	t.Cleanup(func() {
		if d.db != nil {
			d.db.Close()
		}
		d.http.CloseIdleConnections()
	})
	return d
}

// start runs `vigil-server run` and waits until its API answers (the QUIC
// endpoint listens before the API does).
func (d *deployment) start() {
	d.t.Helper()
	level := d.logLevel
	if level == "" {
		level = "debug"
	}
	d.p = startProc(d.t, "vigil-server", d.log, nil, d.b.server, "run", "--data", d.dir,
		"--quic", d.quicAddr, "--api", d.apiAddr, "--log-level", level, "--log-format", "text")
	waitFor(d.t, 90*time.Second, func() string { return "vigil-server API up\n" + tail(d.log, 20) }, func() bool {
		if d.p.exited() {
			d.t.Fatalf("vigil-server exited: %v\n%s", d.p.err, tail(d.log, 30))
		}
		code, _, err := d.api(http.MethodGet, "agents", d.adminToken)
		return err == nil && code == http.StatusOK
	})
}

func (d *deployment) kill() { d.t.Helper(); d.p.kill(d.t) }
func (d *deployment) stop() { d.t.Helper(); d.p.stop(d.t, 60*time.Second) }

// api does one API request, for polling and benchmarks (vigilctl is used
// for the contract itself).
func (d *deployment) api(method, path, token string) (int, []byte, error) {
	return d.apiBody(method, path, token, nil)
}

// apiBody is api with a JSON request body (nil: none).
func (d *deployment) apiBody(method, path, token string, body any) (int, []byte, error) {
	var rd *bytes.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(data)
	}
	var req *http.Request
	var err error
	if rd != nil {
		req, err = http.NewRequest(method, "https://"+d.apiAddr+"/api/v1/"+path, rd)
	} else {
		req, err = http.NewRequest(method, "https://"+d.apiAddr+"/api/v1/"+path, nil)
	}
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), err
}

// ctl runs vigilctl against the deployment with token (the admin's if "").
func (d *deployment) ctl(token string, args ...string) (stdout, stderr string, err error) {
	if token == "" {
		token = d.adminToken
	}
	cmd := exec.Command(d.b.ctl, args...)
	cmd.Env = append(os.Environ(), "VIGIL_SERVER=https://"+d.apiAddr, "VIGIL_TOKEN="+token, "VIGIL_CA="+d.caFile)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = runWithTimeout(cmd, 60*time.Second)
	return o.String(), e.String(), err
}

// mustCtl is ctl that fails the test on an error.
func (d *deployment) mustCtl(token string, args ...string) string {
	d.t.Helper()
	out, errOut, err := d.ctl(token, args...)
	if err != nil {
		d.t.Fatalf("vigilctl %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func runWithTimeout(cmd *exec.Cmd, timeout time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s: no exit within %s", cmd.Path, timeout)
	}
}

// tokenJSON is `vigilctl token create --json`.
type tokenJSON struct {
	Token     string `json:"token"`
	CAPin     string `json:"ca_pin"`
	Command   string `json:"command"`
	Entity    string `json:"entity"`
	ExpiresAt string `json:"expires_at"`
}

// createToken runs `vigilctl token create --entity E --ttl TTL --json` as
// token's user (the admin when "").
func (d *deployment) createToken(asToken, entity string, ttl time.Duration) tokenJSON {
	d.t.Helper()
	out := d.mustCtl(asToken, "token", "create", "--entity", entity, "--ttl", ttl.String(), "--json")
	var tj tokenJSON
	if err := json.Unmarshal([]byte(out), &tj); err != nil {
		d.t.Fatalf("token create --json: %v\n%s", err, out)
	}
	if tj.Token == "" || tj.CAPin != d.pin || !strings.Contains(tj.Command, "vigil-agent enroll") {
		d.t.Fatalf("token create --json: %+v (pin want %s)", tj, d.pin)
	}
	return tj
}

// openDB opens the server's SQLite file read-only (WAL: concurrent with the
// running server).
func (d *deployment) openDB() *sql.DB {
	d.t.Helper()
	if d.db == nil {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(d.dir, "vigil.db")+"?mode=ro&_pragma=busy_timeout(20000)")
		if err != nil {
			d.t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		d.db = db
	}
	return d.db
}

// closeDB drops the read-only handle (before a server restart after a
// SIGKILL, so that the server recovers the WAL alone).
func (d *deployment) closeDB() {
	if d.db != nil {
		d.db.Close()
		d.db = nil
	}
}

// findingStats are the stored findings of one agent.
type findingStats struct {
	Count, Distinct int
	MinSeq, MaxSeq  int64
}

func (d *deployment) stats(agentID string) findingStats {
	d.t.Helper()
	var s findingStats
	var mn, mx sql.NullInt64
	err := d.openDB().QueryRow(`SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM findings WHERE agent_id = ?`, agentID).
		Scan(&s.Count, &s.Distinct, &mn, &mx)
	if err != nil {
		d.t.Fatalf("count findings of %s: %v", agentID, err)
	}
	s.MinSeq, s.MaxSeq = mn.Int64, mx.Int64
	return s
}

func (d *deployment) count(agentID string) int { return d.stats(agentID).Count }

// storedFinding is a stored finding in insertion (id) order.
type storedFinding struct {
	ID       int64
	AgentID  string
	Entity   string
	Seq      int64
	Time     int64
	Detector string
}

func (d *deployment) findings(agentID string) []storedFinding {
	d.t.Helper()
	rows, err := d.openDB().Query(`SELECT id, agent_id, entity, seq, time, detector FROM findings WHERE agent_id = ? ORDER BY id`, agentID)
	if err != nil {
		d.t.Fatal(err)
	}
	defer rows.Close()
	var fs []storedFinding
	for rows.Next() {
		var f storedFinding
		if err := rows.Scan(&f.ID, &f.AgentID, &f.Entity, &f.Seq, &f.Time, &f.Detector); err != nil {
			d.t.Fatal(err)
		}
		fs = append(fs, f)
	}
	if err := rows.Err(); err != nil {
		d.t.Fatal(err)
	}
	return fs
}

// agentProc is an enrolled agent's state directory and its vigil-agent
// process.
type agentProc struct {
	t       testing.TB
	d       *deployment
	dir     string
	log     string
	metrics string
	id      state.Identity
	p       *proc
}

// enroll enrolls a new agent of entity with a fresh admin token and the
// real `vigil-agent enroll`.
func (d *deployment) enroll(entity string) *agentProc {
	d.t.Helper()
	tj := d.createToken("", entity, time.Hour)
	a, out, err := d.tryEnroll(tj.Token, tj.CAPin)
	if err != nil {
		d.t.Fatalf("vigil-agent enroll (entity %s): %v\n%s", entity, err, out)
	}
	return a
}

// tryEnroll runs `vigil-agent enroll` into a new state directory.
func (d *deployment) tryEnroll(token, pin string) (*agentProc, string, error) {
	d.t.Helper()
	base := d.t.TempDir()
	a := &agentProc{t: d.t, d: d, dir: filepath.Join(base, "agent"), log: filepath.Join(base, "agent.log"), metrics: freeTCP(d.t)}
	cmd := exec.Command(d.b.agent, "enroll", "--server", d.quicAddr, "--token", token, "--ca-pin", pin, "--state", a.dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := runWithTimeout(cmd, 90*time.Second); err != nil {
		return nil, out.String(), err
	}
	id, err := state.Dir(a.dir).ReadIdentity()
	if err != nil {
		return nil, out.String(), fmt.Errorf("enrolled but: %w", err)
	}
	a.id = *id
	return a, out.String(), nil
}

// run starts `vigil-agent run` with extra arguments.
func (a *agentProc) run(extra ...string) {
	a.t.Helper()
	args := append([]string{"run", "--state", a.dir, "--metrics", a.metrics, "--log-level", "debug", "--log-format", "text"}, extra...)
	a.p = startProc(a.t, "vigil-agent", a.log, nil, a.d.b.agent, args...)
}

// liveStatus is the part of `vigil-agent status --json` these tests read.
type liveStatus struct {
	AgentID   string `json:"agent_id"`
	Running   bool   `json:"running"`
	Connected bool   `json:"connected"`
	Spool     *struct {
		Depth   uint64 `json:"depth"`
		Dropped uint64 `json:"dropped"`
		NextSeq uint64 `json:"next_seq"`
	} `json:"spool"`
}

func (a *agentProc) status() liveStatus {
	a.t.Helper()
	cmd := exec.Command(a.d.b.agent, "status", "--json", "--state", a.dir, "--metrics", a.metrics)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// status exits non-zero when it reports problems; its JSON still counts.
	_ = runWithTimeout(cmd, 60*time.Second)
	var st liveStatus
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		a.t.Fatalf("vigil-agent status --json: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	return st
}

// waitConnected waits until the running agent reports a live session.
func (a *agentProc) waitConnected() {
	a.t.Helper()
	waitFor(a.t, 90*time.Second, func() string { return "agent " + a.id.AgentID + " connected\n" + tail(a.log, 20) }, func() bool {
		if a.p != nil && a.p.exited() {
			a.t.Fatalf("vigil-agent exited: %v\n%s", a.p.err, tail(a.log, 30))
		}
		st := a.status()
		return st.Running && st.Connected
	})
}

// credentials loads the agent's key and certificate chain (for raw QUIC
// clients in tests).
func (a *agentProc) credentials() *state.Credentials {
	a.t.Helper()
	c, err := state.Dir(a.dir).LoadCredentials()
	if err != nil {
		a.t.Fatal(err)
	}
	return c
}

// dialRaw opens a QUIC connection to the deployment with cert (nil: none),
// trusting the deployment root, as an agent does.
func (d *deployment) dialRaw(ctx context.Context, cert *tls.Certificate) (*quic.Conn, error) {
	roots, err := pki.ReadCerts(d.caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	return quic.DialAddr(ctx, d.quicAddr, pki.AgentTLSConfig(cert, pool, "localhost"), servertest.ClientQUICConfig())
}

// closeCause waits (bounded) for the connection to close and returns why.
func closeCause(t testing.TB, c *quic.Conn, timeout time.Duration) error {
	t.Helper()
	select {
	case <-c.Context().Done():
		return context.Cause(c.Context())
	case <-time.After(timeout):
		t.Fatalf("connection still open after %s", timeout)
		return nil
	}
}

// refusedAtHandshake reports whether err is the TLS refusal of the client
// certificate (a QUIC CRYPTO_ERROR from the server) and returns the alert.
func refusedAtHandshake(err error) (alert uint8, ok bool) {
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote && te.ErrorCode.IsCryptoError() {
		return uint8(te.ErrorCode & 0xff), true
	}
	return 0, false
}

// appCode returns the application error code the peer closed with.
func appCode(err error) (wirev1.ErrorCode, bool) {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote {
		return wirev1.ErrorCode(ae.ErrorCode), true
	}
	return 0, false
}

// hello dials with cert and runs a CONTROL Hello: it returns the open
// connection and the HelloAck when the server accepts the agent, else the
// refusal (the connection is then closed).
func (d *deployment) hello(cert *tls.Certificate) (*quic.Conn, *wirev1.HelloAck, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := d.dialRaw(ctx, cert)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*quic.Conn, *wirev1.HelloAck, error) {
		// A stream error may hide the connection's close reason.
		select {
		case <-c.Context().Done():
			err = context.Cause(c.Context())
		case <-time.After(time.Second):
		}
		_ = c.CloseWithError(0, "")
		return nil, nil, err
	}
	st, err := servertest.OpenStream(ctx, c, wirev1.StreamKind_STREAM_KIND_CONTROL)
	if err != nil {
		return fail(err)
	}
	if err := wirev1.Write(st, &wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: &wirev1.Hello{
		AgentVersion: "e2e-probe", ProtocolVersion: wirev1.ProtocolVersion}}}, 0); err != nil {
		return fail(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
	var sc wirev1.ServerControl
	if err := wirev1.NewReader(st, wirev1.MaxFrameSize).Read(&sc); err != nil {
		return fail(err)
	}
	_ = st.SetReadDeadline(time.Time{})
	if ack := sc.GetHelloAck(); ack != nil {
		return c, ack, nil
	}
	return fail(fmt.Errorf("unexpected first CONTROL message %v", &sc))
}

// probeAuthed is hello without keeping the connection.
func (d *deployment) probeAuthed(cert *tls.Certificate) (*wirev1.HelloAck, error) {
	c, ack, err := d.hello(cert)
	if err != nil {
		return nil, err
	}
	_ = c.CloseWithError(0, "")
	return ack, nil
}

// sendBatch sends one FindingsBatch on a new FINDINGS stream of c and waits
// for its Ack.
func sendBatch(ctx context.Context, c *quic.Conn, b *wirev1.FindingsBatch) (*wirev1.Ack, error) {
	st, err := servertest.OpenStream(ctx, c, wirev1.StreamKind_STREAM_KIND_FINDINGS)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := wirev1.Write(st, b, wirev1.MaxFrameSize); err != nil {
		return nil, err
	}
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	var ack wirev1.Ack
	if err := wirev1.NewReader(st, wirev1.MaxFrameSize).Read(&ack); err != nil {
		return nil, err
	}
	return &ack, nil
}

// grepLog reports whether the log file contains s.
func grepLog(path, s string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return true
		}
	}
	return false
}

// helperBinary returns the path of the test helper command
// test/e2e/cmd/<name>: $VIGIL_BIN/<name> when present, else built with
// `go build` (cached by the go build cache) into a temporary directory.
func helperBinary(t testing.TB, name string) string {
	t.Helper()
	if dir := os.Getenv("VIGIL_BIN"); dir != "" {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the %s helper: %v", name, err)
	}
	out := filepath.Join(t.TempDir(), name)
	cmd := exec.Command(gobin, "build", "-o", out, "./cmd/"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/%s: %v\n%s", name, err, msg)
	}
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// tlsCert makes a TLS certificate of key and a DER chain (leaf first).
func tlsCert(t testing.TB, key *ecdsa.PrivateKey, chain [][]byte) tls.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}
