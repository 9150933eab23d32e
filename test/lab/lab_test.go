package lab

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/models/dataset"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

func TestDNSAnswer(t *testing.T) {
	web := netip.MustParseAddr("10.99.0.10")
	cases := []struct {
		name    string
		ok      bool
		answers int
		rcode   byte
	}{
		{"web.lab", true, 1, 0},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.1.t.lab", true, 1, 0},
		{"mail.example.org", true, 0, 3},
	}
	for _, c := range cases {
		q, err := dnsQuery(7, c.name)
		if err != nil {
			t.Fatal(err)
		}
		r, ok := dnsAnswer(q, web)
		if ok != c.ok || r[3]&0x0f != c.rcode || int(r[7]) != c.answers || r[0] != 0 || r[1] != 7 {
			t.Errorf("%s: ok %v reply %x", c.name, ok, r)
		}
	}
	for _, bad := range [][]byte{nil, make([]byte, 11), {0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'a'}} {
		if _, ok := dnsAnswer(bad, web); ok {
			t.Errorf("answered %x", bad)
		}
	}
	if _, err := dnsQuery(1, string(make([]byte, 64))); err == nil {
		t.Error("64-byte label accepted")
	}
}

func FuzzDNSAnswer(f *testing.F) {
	q, _ := dnsQuery(1, "web.lab")
	f.Add(q)
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = dnsAnswer(b, netip.MustParseAddr("10.99.0.10")) })
}

func TestConfig(t *testing.T) {
	cases := []struct {
		cfg Config
		ok  bool
	}{
		{Config{Out: "x.pcap"}, true},
		{Config{}, false},
		{Config{Out: "x.pcap", Duration: time.Second}, false},
		{Config{Out: "x.pcap", Clients: 51}, false},
		{Config{Out: "x.pcap", Attacks: []string{"nmap", "teardrop"}}, false},
	}
	for _, c := range cases {
		err := c.cfg.validate()
		if (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.cfg, err)
		}
	}
	c := Config{Out: "/tmp/a.pcap"}
	_ = c.validate()
	if c.Truth != "/tmp/a.json" || c.Clients != 4 || c.Duration != time.Minute {
		t.Errorf("defaults %+v", c)
	}
	if ownerPID("vigil-lab-1234-br") != 1234 || ownerPID("vigil-lab-x") != 0 {
		t.Error("ownerPID")
	}
}

// TestLabNmap runs a 20-second lab with an nmap SYN scan (VIGIL_E2E=1,
// root, nmap installed): the pcap holds benign traffic from several hosts,
// the scan's SYNs lie inside the truth span, and no namespace is left.
func TestLabNmap(t *testing.T) {
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("VIGIL_E2E=1 not set: the lab builds network namespaces for 20 s")
	}
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces)")
	}
	if _, err := exec.LookPath("nmap"); err != nil {
		t.Skip("nmap not installed")
	}
	dir := t.TempDir()
	cfg := Config{Duration: 20 * time.Second, Out: filepath.Join(dir, "lab.pcap"), Attacks: []string{"nmap"}, Clients: 3, Seed: 5,
		Snaplen: 200}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	truth, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	left, err := Namespaces(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range left {
		if ownerPID(n) == os.Getpid() {
			t.Errorf("namespace %s left behind", n)
		}
	}
	if len(truth.Attacks) != 1 || truth.Attacks[0].Skipped != "" {
		t.Fatalf("attacks: %+v", truth.Attacks)
	}
	scan := truth.Attacks[0]
	for _, h := range truth.Hosts {
		if a, err := netip.ParseAddr(h.Addr); err != nil || h.MAC != labMAC(a).String() {
			t.Errorf("truth host %+v: MAC %q, want %s", h, h.MAC, labMAC(a))
		}
	}
	src, err := capture.OpenFile(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	attacker := netip.MustParseAddr(scan.Attacker)
	benignSrc := map[netip.Addr]int{}
	var syns, synsInSpan, pings int
	buf := make([]event.Packet, 512)
	for i := 0; i < 10_000; i++ {
		n, err := src.Next(ctx, buf)
		for _, p := range buf[:n] {
			a := p.SrcAddr().Unmap()
			if a == attacker {
				if net.HardwareAddr(p.SrcMAC[:]).String() != labMAC(attacker).String() {
					t.Fatalf("attacker's frame from MAC %x, want %s", p.SrcMAC, labMAC(attacker))
				}
				if p.Proto == 6 && p.TCPFlags&0x12 == 0x02 {
					syns++
					ts := time.Unix(0, p.TimestampNs)
					if !ts.Before(scan.Start.Add(-50*time.Millisecond)) && !ts.After(scan.End.Add(50*time.Millisecond)) {
						synsInSpan++
					}
				}
				continue
			}
			if a.Is4() && netip.MustParsePrefix("10.99.0.0/16").Contains(a) {
				benignSrc[a]++
				if p.Proto == event.ProtoICMP && p.SrcPort == 8 { // echo request (type in SrcPort)
					pings++
				}
			}
		}
		if err != nil {
			break
		}
	}
	// nmap's default scan probes 1,000 ports, but on a loaded 2-core
	// machine it may give up on retransmissions and the capture may drop
	// (a CI run with the e2e suite beside it captured 126 of them in the
	// scan's 0.28 s): a hundred SYNs prove the attack ran; every one of
	// them must lie inside the span the truth file gives.
	if syns < 100 || synsInSpan != syns {
		t.Errorf("%d scan SYNs, %d inside the truth span %s..%s", syns, synsInSpan, scan.Start, scan.End)
	}
	busy := 0
	for _, n := range benignSrc {
		if n >= 10 {
			busy++
		}
	}
	if busy < 4 { // web, infra and at least two of the three clients
		t.Errorf("benign sources: %v", benignSrc)
	}
	// Every client's first liveness ping falls in its first 20 s.
	if _, err := exec.LookPath("ping"); err == nil && pings == 0 {
		t.Error("no echo request from a benign client: the clients' periodic ping did not run")
	}
	// Frames are cut to the snap length; the original lengths are kept.
	f, err := os.Open(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.Snaplen() != 200 {
		t.Errorf("pcap snap length %d, want 200", r.Snaplen())
	}
	cut := 0
	for i := 0; i < 1_000_000; i++ {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		if len(data) > 200 || ci.CaptureLength != len(data) || ci.Length < ci.CaptureLength {
			t.Fatalf("record %d: %d bytes, capture length %d, length %d", i, len(data), ci.CaptureLength, ci.Length)
		}
		if ci.Length > ci.CaptureLength {
			cut++
		}
	}
	if cut == 0 {
		t.Error("no frame was cut to the snap length (the clients download files of 1 MB)")
	}
	// The truth file reads back as labels for model eval.
	ls, err := dataset.ReadLabels(filepath.Join(dir, "lab.json")) // the default truth file
	if err != nil || len(ls.For(cfg.Out)) != 1 {
		t.Errorf("labels %v %v", ls, err)
	}
}

// TestCurlArgsNoProxy: curl with the lab's arguments fetches from the
// address it is given although the environment and ~/.curlrc name a proxy
// (curl honours http_proxy for numeric addresses, so the lab's fetches
// went to any proxy of the machine running it). Loopback only; no root.
func TestCurlArgsNoProxy(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	var proxied, served atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { proxied.Add(1) }))
	defer proxy.Close()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }))
	defer target.Close()
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ".curlrc"), []byte("proxy = \""+proxy.URL+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, env := range [][]string{
		{"http_proxy=" + proxy.URL, "HTTPS_PROXY=" + proxy.URL, "ALL_PROXY=" + proxy.URL, "HOME=" + t.TempDir()},
		{"HOME=" + home}, // the proxy in ~/.curlrc
	} {
		cmd := exec.Command(curl, curlArgs("-s", "-f", "-m", "10", "-o", "/dev/null", target.URL+"/files/10")...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%v: curl: %v %s", env, err, out)
		}
	}
	if served.Load() != 2 || proxied.Load() != 0 {
		t.Errorf("%d requests served by the target, %d by the proxy; want 2, 0", served.Load(), proxied.Load())
	}
}
