package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rsyslogdPath is Debian's rsyslog daemon (apt-get install rsyslog).
const rsyslogdPath = "/usr/sbin/rsyslogd"

// rsyslog is a real rsyslogd in the foreground with a config written by the
// test: imtcp (octet-counted or LF framing, RFC 5424 parser) and imudp on
// loopback, each writing every message's MSGID and STRUCTURED-DATA as one
// line to its own file. Ports are kept across restarts.
type rsyslog struct {
	t                testing.TB
	dir, conf, pid   string
	log              string
	tcpAddr, udpAddr string
	tcpOut, udpOut   string
	p                *proc
}

func newRsyslog(t testing.TB) *rsyslog {
	t.Helper()
	dir := t.TempDir()
	r := &rsyslog{t: t, dir: dir, conf: filepath.Join(dir, "rsyslog.conf"), pid: filepath.Join(dir, "rsyslogd.pid"),
		log: filepath.Join(dir, "rsyslogd.log"), tcpAddr: freeTCP(t), udpAddr: freeUDPAddr(t),
		tcpOut: filepath.Join(dir, "tcp.log"), udpOut: filepath.Join(dir, "udp.log")}
	_, tcpPort, _ := net.SplitHostPort(r.tcpAddr)
	_, udpPort, _ := net.SplitHostPort(r.udpAddr)
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
template(name="vigil" type="string" string="%%msgid%% %%structured-data%%\n")
ruleset(name="tcp") { action(type="omfile" file=%q template="vigil") }
ruleset(name="udp") { action(type="omfile" file=%q template="vigil") }
input(type="imtcp" address="127.0.0.1" port=%q ruleset="tcp")
input(type="imudp" address="127.0.0.1" port=%q ruleset="udp")
`, work, r.tcpOut, r.udpOut, tcpPort, udpPort)
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(rsyslogdPath, "-N1", "-f", r.conf).CombinedOutput(); err != nil {
		t.Fatalf("rsyslogd -N1 (config check): %v\n%s\n%s", err, out, conf)
	}
	return r
}

// start runs rsyslogd -n and waits until its TCP input accepts.
func (r *rsyslog) start() {
	r.t.Helper()
	r.p = startProc(r.t, "rsyslogd", r.log, nil, rsyslogdPath, "-n", "-f", r.conf, "-i", r.pid)
	waitFor(r.t, 30*time.Second, func() string { return "rsyslogd listening on " + r.tcpAddr + "\n" + tail(r.log, 20) }, func() bool {
		if r.p.exited() {
			r.t.Fatalf("rsyslogd exited: %v\n%s", r.p.err, tail(r.log, 30))
		}
		c, err := net.DialTimeout("tcp", r.tcpAddr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

func (r *rsyslog) signal(sig syscall.Signal) { _ = r.p.cmd.Process.Signal(sig) }

// stop sends SIGTERM (rsyslogd's orderly shutdown) and waits for the exit.
func (r *rsyslog) stop() {
	r.t.Helper()
	r.signal(syscall.SIGTERM)
	r.wait()
}

func (r *rsyslog) wait() {
	r.t.Helper()
	select {
	case <-r.p.done:
	case <-time.After(30 * time.Second):
		r.t.Fatalf("rsyslogd did not stop within 30 s of SIGTERM\n%s", tail(r.log, 30))
	}
}

var uidRe = regexp.MustCompile(`\buid="([^"]*)"`)

// received counts the uids (agent:seq) in an output file: how often each
// arrived, and the lines that carry none.
func received(t testing.TB, path string) (counts map[string]int, lines, bad int) {
	t.Helper()
	counts = map[string]int{}
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return counts, 0, 0
		}
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		lines++
		m := uidRe.FindStringSubmatch(line)
		if !strings.HasPrefix(line, "finding [vigil@32473 ") || m == nil {
			bad++
			continue
		}
		counts[m[1]]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return counts, lines, bad
}

// startWithConfig is deployment.start with `--config FILE`.
func (d *deployment) startWithConfig(cfg string) {
	d.t.Helper()
	d.p = startProc(d.t, "vigil-server", d.log, nil, d.b.server, "run", "--data", d.dir, "--config", cfg,
		"--quic", d.quicAddr, "--api", d.apiAddr, "--log-level", "debug", "--log-format", "text")
	waitFor(d.t, 90*time.Second, func() string { return "vigil-server API up\n" + tail(d.log, 20) }, func() bool {
		if d.p.exited() {
			d.t.Fatalf("vigil-server exited: %v\n%s", d.p.err, tail(d.log, 30))
		}
		code, _, err := d.api("GET", "agents", d.adminToken)
		return err == nil && code == 200
	})
}

// TestSyslogRsyslog: a real vigil-server forwards the findings of one agent
// (the agent's spool and uplink in vigil-e2e-sender) over syslog TCP
// (RFC 6587 octet counting) to a real rsyslogd, and over UDP to the same
// daemon, while rsyslogd is restarted (SIGTERM, start), the server is
// restarted in order (SIGTERM) and then killed with SIGKILL and restarted,
// all mid-stream. Every finding must reach rsyslog's file over TCP exactly
// once across the rsyslogd restart and the orderly server restart. Only the
// crash may repeat findings (delivery is at least once: a batch the
// receiver read but whose confirmation the crash cut is sent again), at
// most the one batch in flight, and every message carries the finding's
// stable uid (agent_id:seq) in its structured data, so that a SIEM
// deduplicates on it: the distinct uids must be exactly the N findings.
// UDP has no acknowledgement; its count is only logged. Every restart is
// made to land with a batch in flight (rsyslogd frozen with SIGSTOP while
// the forwarder waits for its confirmation).
func TestSyslogRsyslog(t *testing.T) {
	b := needBins(t)
	if _, err := os.Stat(rsyslogdPath); err != nil {
		t.Skipf("no %s (apt-get install rsyslog)", rsyslogdPath)
	}
	total := 2000
	if s := os.Getenv("VIGIL_E2E_RSYSLOG_N"); s != "" {
		total, _ = strconv.Atoi(s)
	}
	began := time.Now()
	rs := newRsyslog(t)
	rs.start()

	d := newDeployment(t, b, "e2e.vigil")
	cfg := filepath.Join(t.TempDir(), "vigil-server.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`forwarders:
  - name: siem-tcp
    type: syslog
    network: tcp
    address: %s
    batch: 50
    interval: 200ms
    max_backoff: 2s
    timeout: 5s
  - name: siem-udp
    type: syslog
    network: udp
    address: %s
    batch: 50
    interval: 200ms
    max_backoff: 2s
`, rs.tcpAddr, rs.udpAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	d.startWithConfig(cfg)
	a := d.enroll("acme")
	id := a.id.AgentID

	sender := helperBinary(t, "vigil-e2e-sender")
	progress := filepath.Join(t.TempDir(), "progress.json")
	senderLog := filepath.Join(filepath.Dir(progress), "sender.log")
	// About 40 s of production, so that both restarts land mid-stream.
	s := startProc(t, "vigil-e2e-sender", senderLog, nil, sender, "--state", a.dir, "--total", strconv.Itoa(total),
		"--rate", strconv.Itoa(max(total/40, 1)), "--batch", "20", "--progress", progress)
	phase := func(what string) {
		c, _, _ := received(t, rs.tcpOut)
		t.Logf("%6.1fs %s (server has %d, rsyslog tcp has %d distinct)", time.Since(began).Seconds(), what, d.count(id), len(c))
	}
	reachSyslog := func(n int) {
		waitFor(t, 3*time.Minute, func() string {
			c, _, _ := received(t, rs.tcpOut)
			return fmt.Sprintf("%d distinct findings at rsyslog (have %d)\n%s\n%s", n, len(c), tail(d.log, 15), tail(rs.log, 10))
		}, func() bool {
			c, _, _ := received(t, rs.tcpOut)
			return len(c) >= n
		})
	}

	// rsyslogd restart with a batch in flight: SIGSTOP it so that the
	// forwarder's next batch sits unread in the socket, then SIGTERM (and
	// SIGCONT), wait, start it again on the same ports.
	reachSyslog(total / 4)
	rs.signal(syscall.SIGSTOP)
	time.Sleep(1500 * time.Millisecond)
	phase("rsyslogd frozen (SIGSTOP), a batch in flight")
	rs.signal(syscall.SIGTERM)
	rs.signal(syscall.SIGCONT)
	rs.wait()
	phase("rsyslogd stopped (SIGTERM)")
	time.Sleep(2 * time.Second) // findings keep arriving at the server; the forwarder retries
	rs.start()
	phase("rsyslogd restarted")

	// Orderly vigil-server restart (SIGTERM) with a batch in flight: the
	// forwarder finishes the batch (rsyslogd is thawed within the drain
	// time), stores its cursor, and the restarted server sends nothing twice.
	reachSyslog(total * 3 / 8)
	rs.signal(syscall.SIGSTOP)
	time.Sleep(1500 * time.Millisecond)
	d.closeDB()
	_ = d.p.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(time.Second)
	rs.signal(syscall.SIGCONT)
	d.stop()
	phase("vigil-server stopped (SIGTERM) while a batch was in flight")
	d.startWithConfig(cfg)
	phase("vigil-server restarted")
	reachSyslog(total / 2)
	// Up to here every restart was orderly: each finding arrived exactly once.
	before, _, _ := received(t, rs.tcpOut)
	for uid, n := range before {
		if n != 1 {
			t.Errorf("before the crash: finding %s arrived %d times at rsyslog, want once", uid, n)
		}
	}

	// vigil-server crash with a batch in flight: freeze rsyslogd, let the
	// forwarder send a batch it cannot get confirmed, SIGKILL the server,
	// thaw rsyslogd (it then reads the batch), restart the server (which
	// sends the batch again from its durable cursor: duplicates).
	reachSyslog(total * 5 / 8)
	rs.signal(syscall.SIGSTOP)
	time.Sleep(1500 * time.Millisecond)
	d.closeDB()
	d.kill()
	rs.signal(syscall.SIGCONT)
	phase("vigil-server SIGKILLed while rsyslogd was frozen")
	time.Sleep(time.Second)
	d.startWithConfig(cfg)
	phase("vigil-server restarted")

	select {
	case <-s.done:
		if s.err != nil {
			t.Fatalf("sender: %v\n%s", s.err, tail(senderLog, 20))
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("sender not done: %+v, server has %d\n%s", senderProgress(t, progress), d.count(id), tail(senderLog, 20))
	}
	phase("sender done (every finding stored)")
	if st := d.stats(id); st.Distinct != total {
		t.Fatalf("server holds %+v, want %d distinct", st, total)
	}
	reachSyslog(total)
	phase("every finding at rsyslog")
	// Let in-flight retries settle, then stop both (SIGTERM flushes rsyslog).
	time.Sleep(2 * time.Second)
	d.stop()
	rs.stop()

	counts, lines, bad := received(t, rs.tcpOut)
	if bad > 0 {
		t.Errorf("%d of %d lines at rsyslog lack MSGID finding / the vigil@32473 uid\n%s", bad, lines, tail(rs.tcpOut, 5))
	}
	dups := 0
	for seq := 1; seq <= total; seq++ {
		uid := id + ":" + strconv.Itoa(seq)
		c := counts[uid]
		if c == 0 {
			t.Errorf("finding %s never reached rsyslog", uid)
		}
		dups += max(c-1, 0)
	}
	// The crash may repeat at most the one batch that was in flight (50).
	if dups > 50 {
		t.Errorf("%d duplicates at rsyslog; a crash may repeat at most the batch in flight (50)", dups)
	}
	if len(counts) != total {
		t.Errorf("rsyslog saw %d distinct uids, want exactly %d (the agent's seqs 1..%d)", len(counts), total, total)
	}
	udp, udpLines, _ := received(t, rs.udpOut)
	failures := strings.Count(readFile(t, d.log), "delivery failed")
	t.Logf("rsyslog over TCP: %d messages, %d distinct findings of %d, %d duplicates (a SIEM deduplicates on uid); "+
		"UDP (no acknowledgement): %d messages, %d distinct; %d failed deliveries retried; %s",
		lines, len(counts), total, dups, udpLines, len(udp), failures, time.Since(began).Round(time.Second))
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
