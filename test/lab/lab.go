// Package lab builds a small lab network in Linux network namespaces and
// records its traffic: the long benign baseline from one network that the
// shared captures lack (issue 4 item 6), with labelled attacks on demand.
//
// Topology: a bridge in its own namespace (vigil-lab-<pid>-br) and hosts
// (vigil-lab-<pid>-<n>), each with one veth on the bridge and an address in
// 10.99.0.0/16, which exists only inside these namespaces, and a fixed,
// locally administered MAC address made from it (02:00 and the IPv4
// address: labMAC), so that ARP findings can be checked against the truth. Host 1 (web,
// 10.99.0.10) runs HTTP and HTTPS (Go servers, TLS 1.3); host 2 (infra,
// 10.99.0.11) runs a DNS responder for the .lab zone, an NTP-like UDP
// service, python3 -m http.server and Debian's sshd when installed; clients
// (10.99.0.20...) run sessions of browsing, API calls, downloads, fetch
// loops (a fresh curl per file), uploads and lookups with think times, plus
// periodic jobs (NTP every 16 s, an update check every 30 s, an iputils ping
// every 45 s, a backup upload every 60 s). The attacker (10.99.0.66)
// runs the requested attacks with real tools when installed (nmap, hping3,
// hydra), Go clients (beacon, DNS tunnel), a real bash reverse shell from
// the web server host to the attacker (revshell) or iputils ping leaking a
// made-up secrets file in its echo payloads (icmpexfil), dsniff's
// arpspoof poisoning a client's ARP cache for the web server's address
// (arpspoof), or a telnet backdoor on the web server host (busybox
// telnetd serving bash without a login) that the attacker types commands
// into (telnetd), or curl on the web server host checking in with a
// busybox httpd on the attacker, hex-encoded data both ways (hexc2), one
// after another, each with its address and time span written to the truth file
// (models/dataset.Truth, read by `vigilctl model eval --labels`).
//
// Every frame crossing the bridge is captured to a pcap file (AF_PACKET in
// promiscuous mode on the bridge, pure Go). Every loop is bounded; the
// namespaces are removed when Run returns, on error or cancellation too; if
// the lab process dies without that (SIGKILL, the OOM killer), a reaper
// process started with the lab removes them and what runs inside
// (reaper.go). Cleanup removes those left by older labs, and Run does so
// for the namespaces of lab processes that are gone when it starts.
//
// Needs root (CAP_NET_ADMIN, CAP_NET_RAW) and iproute2's ip.
package lab

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/models/dataset"
)

// Config describes a lab run.
type Config struct {
	Duration    time.Duration // traffic time (default 60 s, at most 24 h)
	Out         string        // pcap file to write
	Truth       string        // truth file (JSON); default Out with .json
	Clients     int           // benign client hosts (default 4, at most 50)
	Attacks     []string      // subset of AttackNames, run in this order
	BeaconEvery time.Duration // beacon period (default 2 s)
	Snaplen     int           // bytes kept of each frame (0: all)
	Seed        uint64
	Log         *slog.Logger
}

type host struct {
	name string // role name
	ns   ns
	addr netip.Addr
	mac  net.HardwareAddr
	role string
}

// labMAC is a lab host's MAC address: locally administered, 02:00 and the
// host's IPv4 address.
func labMAC(addr netip.Addr) net.HardwareAddr {
	a := addr.As4()
	return net.HardwareAddr{0x02, 0x00, a[0], a[1], a[2], a[3]}
}

type lab struct {
	cfg      Config
	log      *slog.Logger
	bridge   ns
	hosts    []*host // web, infra, clients...
	attacker *host
	pool     *x509.CertPool
	pyHTTP   bool
	ssh      bool
	closers  []func() error
	procs    []*exec.Cmd
	tmpDirs  []string
	mu       sync.Mutex
	truth    dataset.Truth
}

func (l *lab) note(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	l.log.Warn(msg)
	l.mu.Lock()
	l.truth.Notes = append(l.truth.Notes, msg)
	l.mu.Unlock()
}

var lookPath = exec.LookPath

func execOutput(ctx context.Context, prog string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, prog, args...).CombinedOutput()
	return string(out), err
}

func (c *Config) validate() error {
	if c.Duration == 0 {
		c.Duration = time.Minute
	}
	if c.Duration < 5*time.Second || c.Duration > 24*time.Hour {
		return fmt.Errorf("lab: duration %s: want 5 s to 24 h", c.Duration)
	}
	if c.Out == "" {
		return errors.New("lab: no output pcap")
	}
	if c.Truth == "" {
		c.Truth = trimExt(c.Out) + ".json"
	}
	if c.Clients == 0 {
		c.Clients = 4
	}
	if c.Clients < 1 || c.Clients > 50 {
		return fmt.Errorf("lab: %d clients: want 1 to 50", c.Clients)
	}
	if c.BeaconEvery == 0 {
		c.BeaconEvery = 2 * time.Second
	}
	if c.BeaconEvery < 0 {
		// The beacon's jitter (rand Int64N) panics on it, in a goroutine:
		// the lab would die without removing its namespaces.
		return fmt.Errorf("lab: beacon period %s: want more than 0", c.BeaconEvery)
	}
	for _, a := range c.Attacks {
		if !slices.Contains(AttackNames, a) {
			return fmt.Errorf("lab: unknown attack %q (known: %v)", a, AttackNames)
		}
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

func trimExt(p string) string { return p[:len(p)-len(filepath.Ext(p))] }

// Run builds the lab, runs it for cfg.Duration, writes the pcap and the
// truth file, and removes everything it created (also when ctx is cancelled
// or a step fails; its reaper process does when this process is killed). It
// returns the truth written.
func Run(ctx context.Context, cfg Config) (_ *dataset.Truth, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if _, err := lookPath("ip"); err != nil {
		return nil, errors.New("lab: iproute2's ip not found")
	}
	// The reaper removes the namespaces if this process dies without
	// tearing down (SIGKILL): started before the first one exists.
	rp, err := startReaper(os.Stderr)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	l := &lab{cfg: cfg, log: cfg.Log}
	l.truth.Capture = filepath.Base(cfg.Out)
	// Teardown runs with its own context: ctx may be cancelled already.
	defer func() {
		tctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if terr := l.teardown(tctx); terr != nil {
			err = errors.Join(err, terr)
		}
		if serr := rp.stop(); serr != nil {
			l.log.Warn("lab reaper", "err", serr)
		}
	}()
	// Belt and braces: namespaces of lab processes that are gone.
	removed, cerr := Cleanup(ctx, false)
	for _, n := range removed {
		l.log.Info("removed stale lab namespace", "name", n)
	}
	if cerr != nil {
		l.log.Warn("remove stale lab namespaces", "err", cerr)
	}
	if err := l.build(ctx); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := l.startServers(runCtx); err != nil {
		return nil, err
	}
	capt, err := startCapture(l.bridge, "br0", cfg.Out, cfg.Snaplen)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	l.truth.Start = start.UTC()
	trafficCtx, stopTraffic := context.WithDeadline(runCtx, start.Add(cfg.Duration))
	defer stopTraffic()
	var wg sync.WaitGroup
	for i, h := range l.hosts[2:] {
		wg.Add(1)
		go func() { defer wg.Done(); l.client(trafficCtx, h, cfg.Seed*1000+uint64(i)) }()
	}
	if len(cfg.Attacks) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.runAttacks(trafficCtx, start, cfg.Duration*3/10, cfg.Duration*17/20)
		}()
	}
	wg.Wait()
	time.Sleep(300 * time.Millisecond) // the last replies
	l.truth.End = time.Now().UTC()
	n, cerr := capt.stop()
	if cerr != nil {
		return nil, fmt.Errorf("lab capture: %w", cerr)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("lab: %w", ctx.Err())
	}
	l.log.Info("lab capture written", "file", cfg.Out, "packets", n)
	l.truth.Extra = map[string]any{"packets": n, "seed": cfg.Seed, "duration_seconds": cfg.Duration.Seconds()}
	data, err := json.MarshalIndent(&l.truth, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("lab truth: %w", err)
	}
	if err := os.WriteFile(cfg.Truth, append(data, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("lab truth: %w", err)
	}
	return &l.truth, nil
}

// build creates the namespaces, the bridge and the hosts.
func (l *lab) build(ctx context.Context) error {
	prefix := fmt.Sprintf("%s%d-", Prefix, os.Getpid())
	l.bridge = ns{prefix + "br"}
	if err := ipCmd(ctx, "netns", "add", l.bridge.name); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := ipCmd(ctx, "-n", l.bridge.name, "link", "add", "br0", "type", "bridge", "stp_state", "0"); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := ipCmd(ctx, "-n", l.bridge.name, "link", "set", "br0", "up"); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	add := func(n int, name, role string, addr netip.Addr) (*host, error) {
		h := &host{name: name, ns: ns{fmt.Sprintf("%s%d", prefix, n)}, addr: addr, mac: labMAC(addr), role: role}
		port := fmt.Sprintf("p%d", n)
		for _, args := range [][]string{
			{"netns", "add", h.ns.name},
			{"-n", l.bridge.name, "link", "add", port, "type", "veth", "peer", "name", "eth0", "address", h.mac.String(),
				"netns", h.ns.name},
			{"-n", l.bridge.name, "link", "set", port, "master", "br0", "up"},
			{"-n", h.ns.name, "addr", "add", addr.String() + "/16", "dev", "eth0"},
			{"-n", h.ns.name, "link", "set", "eth0", "up"},
			{"-n", h.ns.name, "link", "set", "lo", "up"},
		} {
			if err := ipCmd(ctx, args...); err != nil {
				if args[0] == "netns" {
					return nil, fmt.Errorf("lab: %w", err)
				}
				l.hosts = append(l.hosts, h) // created: removed by teardown
				return nil, fmt.Errorf("lab: %w", err)
			}
		}
		l.truth.Hosts = append(l.truth.Hosts, dataset.TruthHost{Name: name, Addr: addr.String(), MAC: h.mac.String(), Role: role})
		return h, nil
	}
	specs := hostSpecs(l.cfg.Clients)
	for i, s := range specs {
		h, err := add(i+1, s.name, s.role, s.addr)
		if err != nil {
			return err
		}
		l.hosts = append(l.hosts, h)
	}
	if len(l.cfg.Attacks) > 0 {
		h, err := add(len(specs)+1, "attacker", "attacker", attackerAddr)
		if err != nil {
			return err
		}
		l.attacker = h
	}
	return nil
}

// attackerAddr is the attacker host's address (the truth file's attacker).
var attackerAddr = netip.MustParseAddr("10.99.0.66")

type hostSpec struct {
	name, role string
	addr       netip.Addr
}

// hostSpecs lists the lab's benign hosts: web, infra, then the clients from
// 10.99.0.20 on. A client never takes the attacker's address (client 47 of
// 50 would), or its traffic would be labelled as the attack's and the two
// hosts would answer ARP for one address.
func hostSpecs(clients int) []hostSpec {
	specs := []hostSpec{{"web", "server: HTTP, HTTPS, downloads, uploads", netip.MustParseAddr("10.99.0.10")},
		{"infra", "server: DNS, NTP-like UDP, python3 http.server, sshd (when installed)", netip.MustParseAddr("10.99.0.11")}}
	addr := netip.MustParseAddr("10.99.0.20")
	for i := range clients {
		if addr == attackerAddr {
			addr = addr.Next()
		}
		specs = append(specs, hostSpec{fmt.Sprintf("client%d", i+1), "client", addr})
		addr = addr.Next()
	}
	return specs
}

// teardown stops servers and processes and removes every namespace.
func (l *lab) teardown(ctx context.Context) error {
	for _, c := range l.closers {
		_ = c()
	}
	for _, p := range l.procs {
		if p.Process != nil {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}
	var errs []error
	all := []ns{}
	for _, h := range l.hosts {
		all = append(all, h.ns)
	}
	if l.attacker != nil {
		all = append(all, l.attacker.ns)
	}
	if l.bridge.name != "" {
		all = append(all, l.bridge)
	}
	for _, n := range all {
		if _, err := os.Stat(filepath.Join("/run/netns", n.name)); err != nil {
			continue
		}
		if err := n.remove(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range l.tmpDirs {
		_ = os.RemoveAll(d)
	}
	return errors.Join(errs...)
}
