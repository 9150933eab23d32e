package dataset

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

const manifest = `path,bytes,packets,class,attack_or_content,attacker,victim,label_rule
benign/x/a.pcap,1,1,benign,whois,,,whole file
attacks/s/scan.pcap,1,1,attack,ICMP sweep,192.168.1.109,192.168.1.0/24,scan packets
attacks/c/aurora.pcapng,1,1,attack,exploit (server 192.168.100.202 -> victim .206),see description,,whole
attacks/c/unknown.pcapng,1,1,attack,undocumented,see description,,whole
`

func TestParseManifest(t *testing.T) {
	ls, err := ParseManifest(strings.NewReader(manifest))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path, attacker string
		n              int
	}{
		{"/data/attacks/s/scan.pcap", "192.168.1.109", 1},
		{"s/scan.pcap", "192.168.1.109", 1},
		{"/elsewhere/c/aurora.pcapng", "192.168.100.202", 1},
		{"c/unknown.pcapng", "", 1},
		{"/data/benign/x/a.pcap", "", 0},
		{"/data/attacks/s/xscan.pcap", "", 0}, // suffix only at a path boundary
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			got := ls.For(c.path)
			if len(got) != c.n {
				t.Fatalf("%d labels, want %d", len(got), c.n)
			}
			if c.n > 0 {
				a := ""
				if got[0].Attacker.IsValid() {
					a = got[0].Attacker.String()
				}
				if a != c.attacker {
					t.Errorf("attacker %q, want %q", a, c.attacker)
				}
			}
		})
	}
}

func TestTruthLabels(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "lab.json")
	js := `{"capture":"lab.pcap","hosts":[{"name":"web","addr":"10.99.0.10","mac":"02:00:0a:63:00:0a"},{"name":"attacker","addr":"10.99.0.66","mac":"02:00:0a:63:00:42"}],
"attacks":[{"name":"nmap","command":"nmap -sS","attacker":"10.99.0.66","start":"2026-01-01T00:00:10Z","end":"2026-01-01T00:00:20Z"},
{"name":"hydra","attacker":"10.99.0.66","skipped":"hydra not installed"}]}`
	if err := os.WriteFile(p, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	ls, err := ReadLabels(p)
	if err != nil {
		t.Fatal(err)
	}
	got := ls.For("/tmp/run/lab.pcap")
	if len(got) != 1 {
		t.Fatalf("labels %v", got)
	}
	at := func(s int) int64 { return time.Date(2026, 1, 1, 0, 0, s, 0, time.UTC).UnixNano() }
	a := netip.MustParseAddr("::ffff:10.99.0.66")
	web := netip.MustParseAddr("10.99.0.10")
	attMAC, webMAC := [6]byte{2, 0, 10, 99, 0, 0x42}, [6]byte{2, 0, 10, 99, 0, 10}
	cases := []struct {
		src  netip.Addr
		mac  [6]byte
		ts   int64
		want bool
	}{
		{a, attMAC, at(15), true},
		{a.Unmap(), [6]byte{}, at(10), true}, // by address alone
		{a, attMAC, at(5), false},
		{a, attMAC, at(21), false},
		{web, webMAC, at(15), false},
		{web, attMAC, at(15), true}, // a forged reply claiming the web server's address
		{web, attMAC, at(25), false},
	}
	for _, c := range cases {
		if got[0].Positive(c.src, c.mac, c.ts) != c.want {
			t.Errorf("Positive(%v, %x, %d) != %v", c.src, c.mac, c.ts, c.want)
		}
	}
	for _, bad := range []string{`"02:00:0a:63:00"`, `"not a mac"`, `"02:00:0a:63:00:42:00:01"`} {
		js := `{"hosts":[{"name":"attacker","addr":"10.99.0.66","mac":` + bad + `}],"attacks":[{"name":"nmap","attacker":"10.99.0.66"}]}`
		if _, err := parseTruth(strings.NewReader(js), "x"); err == nil || !strings.Contains(err.Error(), "MAC") {
			t.Errorf("MAC %s: err %v", bad, err)
		}
	}
	if _, err := ReadLabels(filepath.Join(dir, "missing.csv")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestSplitHoldout(t *testing.T) {
	files := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
	tr, ho := SplitHoldout(files, 0.2)
	if strings.Join(ho, ",") != "2,7" || len(tr) != 8 {
		t.Errorf("train %v hold %v", tr, ho)
	}
	tr, ho = SplitHoldout(files, 0.5)
	if strings.Join(ho, ",") != "1,3,5,7,9" || len(tr) != 5 {
		t.Errorf("train %v hold %v", tr, ho)
	}
}

func TestExtractAndSplitTail(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "b.pcap")
	var buf bytes.Buffer
	info, err := trafficgen.Write(&buf, trafficgen.Config{Seed: 3, Sessions: 50})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Extract(context.Background(), p, Sets(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.N != info.Packets || len(c.Feats[0]) != c.N*Sets()[0].Dim || len(c.Feats[1]) != c.N*Sets()[1].Dim || c.Reason != "" {
		t.Fatalf("extracted %d packets (reason %q), want %d", c.N, c.Reason, info.Packets)
	}
	if why := c.NotBenign(); why != "" {
		t.Errorf("trafficgen's benign sessions not benign: %s", why)
	}
	c2, err := Extract(context.Background(), p, Sets()[1:], 100)
	if err != nil || c2.N != 100 || c2.Reason == "" {
		t.Fatalf("bounded extract: %v %d %q", err, c2.N, c2.Reason)
	}
	// Same packets, same features (fresh state per capture).
	if !equal(c.Feats[1][:100*Sets()[1].Dim], c2.Feats[0]) {
		t.Error("features differ between two extractions")
	}
	tr, ho := SplitTail([]*Capture{c}, 0.25)
	if tr[0].N+ho[0].N != c.N || ho[0].N != int(float64(c.N)*0.25+0.5) || ho[0].TS[0] != c.TS[tr[0].N] {
		t.Errorf("tail split %d + %d of %d", tr[0].N, ho[0].N, c.N)
	}
	if m := Stack(ho, 1); m.Rows != ho[0].N || m.Cols != Sets()[1].Dim {
		t.Errorf("stack %d×%d", m.Rows, m.Cols)
	}
	files, err := List(dir, p)
	if err != nil || len(files) != 1 {
		t.Errorf("list %v %v", files, err)
	}
}

func equal(a, b []float32) bool {
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

func FuzzParseLabels(f *testing.F) {
	f.Add([]byte(manifest), false)
	f.Add([]byte(`{"attacks":[{"name":"x","attacker":"10.99.0.66"}]}`), true)
	f.Add([]byte(`{"hosts":[{"name":"a","addr":"10.99.0.66","mac":"02:00:0a:63:00:42"}],"attacks":[{"name":"x","attacker":"10.99.0.66"}]}`), true)
	f.Fuzz(func(t *testing.T, data []byte, js bool) {
		if js {
			_, _ = parseTruth(bytes.NewReader(data), "x")
		} else {
			_, _ = ParseManifest(bytes.NewReader(data))
		}
	})
}

// writePayload writes a one-packet capture: a TCP segment (or, with icmp,
// an ICMP echo request) with the given payload from 10.99.0.7 to
// 10.99.0.80.
func writePayload(t *testing.T, path string, icmp bool, payload string) {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IPv4(10, 99, 0, 7), DstIP: net.IPv4(10, 99, 0, 80)}
	var l4 gopacket.SerializableLayer = &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}
	if icmp {
		ip.Protocol = layers.IPProtocolICMPv4
	} else {
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, ACK: true, PSH: true, Window: 1024}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		l4 = tcp
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 7}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 80}, EthernetType: layers.EthernetTypeIPv4},
		ip, l4, gopacket.Payload(payload))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1_700_000_000, 0), CaptureLength: len(data), Length: len(data)}, data); err != nil {
		t.Fatal(err)
	}
}

// TestNotBenign: a capture whose HTTP requests the decoder marks as
// attacks, that serves a command shell, whose echoes carry covert data or
// whose payloads are hex-encoded data is named not benign; one with
// ordinary requests, pings or hashes is not.
func TestNotBenign(t *testing.T) {
	dir := t.TempDir()
	req := func(target string) string { return "GET " + target + " HTTP/1.1\r\nHost: lab\r\n\r\n" }
	for _, c := range []struct {
		payload string
		why     string // a word of the objection; "" for none
		icmp    bool
	}{
		{req("/index.php?page=../../../etc/passwd"), "HTTP attacks", false},
		{req("/sqli/?id=1%27+OR+%271%27%3D%271&Submit=Submit"), "HTTP attacks", false},
		{req("/search?q=%22exact+phrase%22&author=O%27Reilly"), "", false},
		{req("/static/app.js"), "", false},
		{"Microsoft Windows [Version 10.0.19045.3693]\r\n(c) Microsoft Corporation.\r\n", "command shell", false},
		{"uid=0(root) gid=0(root) groups=0(root)\n", "command shell", false},
		{"220 ftp.lab FTP server ready\r\n", "", false},
		{"abcdefghijklmnopqrstuvwabcdefghi", "", true},
		{"BlueChat10.100.17.48   Transfer all of the funds", "covert data", true},
		{"o=6b787638683333616b6431660f05f2393c1a354ad6e57d984568037ecebfe360e70ca9e211cdc0f5cf1b065484cf67e605493877069bbcc6b7eae868198581", "hex-encoded", false},
		{"sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "", false},
	} {
		p := filepath.Join(dir, "r.pcap")
		writePayload(t, p, c.icmp, c.payload)
		cp, err := Extract(context.Background(), p, Sets()[:1], 0)
		if err != nil || cp.N != 1 {
			t.Fatalf("%q: extract: %v (%d packets)", c.payload, err, cp.N)
		}
		if why := cp.NotBenign(); (why != "") != (c.why != "") || !strings.Contains(why, c.why) {
			t.Errorf("%q: NotBenign %q, want an objection naming %q", c.payload, why, c.why)
		}
	}
}

// TestList: files are listed once whatever the spelling (relative,
// "./", absolute, through a symlink or a hard link), a root that is a
// symlink is walked, and a root that is neither a file nor a folder is an
// error, as is (for ListNonEmpty) a folder without files. Spelling-based
// de-duplication used to list caps/b.pcap twice for "caps" and
// "./caps/b.pcap", which could put it on both sides of the held-out split,
// and a symlinked folder listed nothing, without an error.
func TestList(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, d := range []string{"caps/sub", "empty/sub", "other"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"caps/a.pcap", "caps/sub/b.pcap", "other/c.pcap"} {
		if err := os.WriteFile(f, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range [][2]string{{"caps", "link"}, {"../caps/a.pcap", "other/a-link.pcap"}, {"../caps", "other/caps-link"}, {"missing", "other/dangling"}} {
		if err := os.Symlink(l[0], l[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link("caps/sub/b.pcap", "other/b-hard.pcap"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo("fifo", 0o644); err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(dir, "caps")
	cases := []struct {
		name     string
		paths    []string
		nonEmpty bool
		want     []string
		err      string
	}{
		{"folder and ./file", []string{"caps", "./caps/sub/b.pcap"}, false, []string{"caps/a.pcap", "caps/sub/b.pcap"}, ""},
		{"file first", []string{"./caps/sub/b.pcap", "caps"}, false, []string{"./caps/sub/b.pcap", "caps/a.pcap"}, ""},
		{"absolute and relative", []string{abs, "caps/a.pcap", "caps/./sub/../a.pcap"}, false, []string{abs + "/a.pcap", abs + "/sub/b.pcap"}, ""},
		{"symlinked folder", []string{"link"}, true, []string{"link/a.pcap", "link/sub/b.pcap"}, ""},
		{"symlinked folder and its target", []string{"caps", "link", abs}, true, []string{"caps/a.pcap", "caps/sub/b.pcap"}, ""},
		// other/: a symlink and a hard link to files of caps/ (listed
		// once), a symlinked folder (not followed), a dangling link.
		{"links inside a folder", []string{"caps", "other"}, true, []string{"caps/a.pcap", "caps/sub/b.pcap", "other/c.pcap"}, ""},
		{"links inside a folder first", []string{"other"}, true, []string{"other/a-link.pcap", "other/b-hard.pcap", "other/c.pcap"}, ""},
		{"folder without files", []string{"caps", "empty"}, false, []string{"caps/a.pcap", "caps/sub/b.pcap"}, ""},
		{"folder without files, non-empty", []string{"caps", "empty"}, true, nil, "folder empty holds no files"},
		{"only duplicates is not empty", []string{"caps", "link/sub"}, true, []string{"caps/a.pcap", "caps/sub/b.pcap"}, ""},
		{"FIFO", []string{"caps", "fifo"}, false, nil, "fifo is neither a regular file nor a folder"},
		{"missing", []string{"nope"}, false, nil, "no such file"},
		{"dangling symlink", []string{"other/dangling"}, false, nil, "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			list := List
			if c.nonEmpty {
				list = ListNonEmpty
			}
			got, err := list(c.paths...)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %q, %v, want an error containing %q", got, err, c.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Fatalf("got %q, %v, want %q", got, err, c.want)
			}
		})
	}
}

// TestChunkFor: a dynamically quantized model is calibrated and evaluated
// one row per run, as the sensors score it (runtime.ConsistentRun): each
// run is quantized with its own scale.
func TestChunkFor(t *testing.T) {
	for q, want := range map[string]int{bundle.QuantInt8Dyn: 1, bundle.QuantInt8Static: ScoreChunk, bundle.QuantNone: ScoreChunk} {
		if got := ChunkFor(q); got != want {
			t.Errorf("ChunkFor(%q) = %d, want %d", q, got, want)
		}
	}
}
