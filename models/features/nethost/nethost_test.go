package nethost

import (
	"math"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

const sec = int64(1e9)

var (
	macA = [6]byte{2, 0, 0, 0, 0, 0xa}
	macB = [6]byte{2, 0, 0, 0, 0, 0xb}
	ipA  = netip.MustParseAddr("10.99.0.1")
	ipB  = netip.MustParseAddr("10.99.0.2")
)

func pkt(t int64, src, dst netip.Addr, proto uint8, sport, dport, size uint16, flags uint8) event.Packet {
	p := event.Packet{TimestampNs: t, SrcMAC: macA, DstMAC: macB, Proto: proto, SrcPort: sport, DstPort: dport,
		Length: size, TCPFlags: flags, Flags: event.FlagIPv4}
	p.SetSrc(src)
	p.SetDst(dst)
	return p
}

func feat(t *testing.T, out []float32, name string) float64 {
	t.Helper()
	for i, n := range names {
		if n == name {
			return float64(out[i])
		}
	}
	t.Fatalf("no feature %q", name)
	return 0
}

func lg1(x float64) float64 { return math.Log1p(x) }

func TestNames(t *testing.T) {
	n := Names()
	if len(n) != Dim || n[0] != "host_L1_init_mean_size" || n[Dim-4] != "host_dst_ports" {
		t.Fatalf("Names() = %v", n)
	}
}

func TestSteadyRate(t *testing.T) {
	// 100 packets per second of 500 bytes, to one DNS server, for 60 s.
	e := New(Config{})
	out := make([]float32, Dim)
	for i := 0; i < 6000; i++ {
		p := pkt(int64(i)*sec/100, ipA, ipB, event.ProtoUDP, 40000, 53, 500, 0)
		e.Extract(&p, out)
	}
	for _, c := range []struct {
		name      string
		want, tol float64
	}{
		{"host_L1_init_mean_size", 500, 1e-6}, {"host_L0.1_init_mean_size", 500, 1e-6}, {"host_L1_dns_share", 1, 1e-9},
		{"host_L1_dns_size", 500, 1e-6}, {"host_L1_syn_share", 0, 0}, {"host_L1_open_rate", lg1(100), 0.03},
		{"host_L1_new_dst_rate", 0, 1e-3}, {"host_dst_ports", lg1(1), 0.01}, {"host_dst_hosts", lg1(1), 0.01},
	} {
		if got := feat(t, out, c.name); math.Abs(got-c.want) > c.tol {
			t.Errorf("%s = %v, want %v ± %v", c.name, got, c.want, c.tol)
		}
	}
}

// TestPortScan: one source sends SYNs to 2000 ports; the target answers
// with RSTs. The scan's evidence must dwarf a benign source's.
func TestPortScan(t *testing.T) {
	e := New(Config{})
	out := make([]float32, Dim)
	ts := int64(1_700_000_000) * sec
	for port := 1; port <= 2000; port++ {
		ts += sec / 1000
		p := pkt(ts, ipA, ipB, event.ProtoTCP, 61000, uint16(port), 58, event.TCPSyn)
		e.Extract(&p, out)
		scan := append([]float32(nil), out...)
		r := pkt(ts+sec/10000, ipB, ipA, event.ProtoTCP, uint16(port), 61000, 54, event.TCPRst|event.TCPAck)
		e.Extract(&r, out)
		copy(out, scan)
	}
	if got := math.Expm1(feat(t, out, "host_dst_ports")); got < 1000 {
		t.Errorf("host_dst_ports = %v after 2000 ports, want > 1000 (sketch saturates near 1420)", got)
	}
	if got := feat(t, out, "host_L1_syn_share"); math.Abs(got-1) > 1e-6 {
		t.Errorf("syn_share = %v, want 1", got)
	}
	if got := feat(t, out, "host_L1_failed_ratio"); got < 0.95 {
		t.Errorf("failed_ratio = %v, want ~1", got)
	}
	// The 256-bit pair sketch saturates during a long scan, so the rate of
	// recognisably new destinations falls from ~1000/s; it stays far above
	// the ~0 of a benign source.
	if got := math.Expm1(feat(t, out, "host_L1_new_dst_rate")); got < 20 {
		t.Errorf("new_dst_rate = %v /s, want high", got)
	}
	if got := math.Expm1(feat(t, out, "host_dst_hosts")); got > 1.1 {
		t.Errorf("host_dst_hosts = %v, want 1", got)
	}
}

func TestBoundedAndAllocs(t *testing.T) {
	e := New(Config{MaxHosts: 64})
	out := make([]float32, Dim)
	for i := 0; i < 10000; i++ {
		src := netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)})
		p := pkt(int64(i)*1000, src, ipB, event.ProtoUDP, 1, 2, 60, 0)
		e.Extract(&p, out)
	}
	if st := e.Stats(); st.Entries > 64 || st.Evictions == 0 {
		t.Fatalf("stats %+v", st)
	}
	p := pkt(0, ipA, ipB, event.ProtoTCP, 1, 2, 60, event.TCPSyn)
	if a := testing.AllocsPerRun(1000, func() { p.TimestampNs += 1000; p.DstPort++; e.Extract(&p, out) }); a != 0 {
		t.Fatalf("Extract allocates %v times", a)
	}
}

func FuzzExtract(f *testing.F) {
	var b [event.PacketRecordSize]byte
	p := pkt(1, ipA, ipB, event.ProtoTCP, 1, 2, 60, event.TCPSyn)
	p.Marshal(b[:])
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		extractRecords(t, Config{MaxHosts: 8}, data, func(float32) bool { return true })
	})
}

// extractRecords runs the 64-byte packet records of data through a fresh
// extractor and fails on a feature that is not finite or not ok.
func extractRecords(t *testing.T, cfg Config, data []byte, ok func(float32) bool) {
	e := New(cfg)
	out := make([]float32, e.Dim())
	n := NamesV7()
	var p event.Packet
	for len(data) >= event.PacketRecordSize {
		_ = p.Unmarshal(data)
		data = data[event.PacketRecordSize:]
		e.Extract(&p, out)
		for i, v := range out {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || !ok(v) {
				t.Fatalf("%s = %v", n[i], v)
			}
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func bench(b *testing.B, gen func(i int) event.Packet) {
	pk := make([]event.Packet, 1<<16)
	for i := range pk {
		pk[i] = gen(i)
	}
	e := New(Config{})
	out := make([]float32, Dim)
	b.ReportAllocs()
	c0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Extract(&pk[i%len(pk)], out)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-c0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(e.Stats().EntryBytes), "B/host")
}

func BenchmarkExtractBenign(b *testing.B) {
	bench(b, func(i int) event.Packet {
		src := netip.AddrFrom4([4]byte{10, 99, 1, byte(i % 200)})
		return pkt(int64(i)*50_000, src, ipB, event.ProtoTCP, uint16(40000+i%8), 443, uint16(60+i%1400), event.TCPAck)
	})
}

func BenchmarkExtractPortScan(b *testing.B) {
	bench(b, func(i int) event.Packet {
		return pkt(int64(i)*10_000, ipA, ipB, event.ProtoTCP, 61000, uint16(i), 58, event.TCPSyn)
	})
}

// TestBusyServerIsQuiet: an HTTP server answering 2000 client connections
// (each from a new ephemeral port, 1 MB downloads) and a DNS server
// answering many queries from port 53 are responders: none of their packets
// may count as opens, new destinations or distinct ports, and their rates
// stay zero. (The first nethost/v1 draft counted every packet's destination
// port, so such a server looked like a port scanner.)
func TestBusyServerIsQuiet(t *testing.T) {
	e := New(Config{})
	out := make([]float32, Dim)
	ts := int64(1_700_000_000) * sec
	var maxOut [Dim]float32
	for c := 0; c < 2000; c++ {
		cport := uint16(32768 + c)
		ts += sec / 200
		syn := pkt(ts, ipA, ipB, event.ProtoTCP, cport, 8080, 74, event.TCPSyn)
		e.Extract(&syn, out)
		for i, typ := range []uint8{event.TCPSyn | event.TCPAck, event.TCPAck, event.TCPAck | event.TCPPsh, event.TCPFin | event.TCPAck, event.TCPRst} {
			r := pkt(ts+int64(i+1)*1000, ipB, ipA, event.ProtoTCP, 8080, cport, 1514, typ)
			e.Extract(&r, out)
			for j, x := range out {
				maxOut[j] = max(maxOut[j], x)
			}
		}
		q := pkt(ts+9000, ipB, ipA, event.ProtoUDP, 53, cport, 120, 0) // DNS answer
		e.Extract(&q, out)
		for j, x := range out {
			maxOut[j] = max(maxOut[j], x)
		}
	}
	for j, x := range maxOut {
		if x != 0 {
			t.Errorf("server feature %s reached %v, want 0", names[j], x)
		}
	}
	// The client made 2000 connections to one (host, port): one port, one
	// host, no new destinations after the first.
	c := pkt(ts+sec/100, ipA, ipB, event.ProtoTCP, 40000, 8080, 74, event.TCPSyn)
	e.Extract(&c, out)
	if got := math.Expm1(feat(t, out, "host_dst_ports")); math.Abs(got-1) > 0.01 {
		t.Errorf("client dst_ports = %v, want 1", got)
	}
	if got := math.Expm1(feat(t, out, "host_L1_new_dst_rate")); got > 0.01 {
		t.Errorf("client new_dst_rate = %v, want ~0", got)
	}
}

func TestRoles(t *testing.T) {
	for _, c := range []struct {
		name string
		p    event.Packet
		want role
	}{
		{"syn", pkt(0, ipA, ipB, event.ProtoTCP, 40000, 80, 60, event.TCPSyn), roleOpen},
		{"synack", pkt(0, ipA, ipB, event.ProtoTCP, 80, 40000, 60, event.TCPSyn|event.TCPAck), roleResponder},
		{"client ack", pkt(0, ipA, ipB, event.ProtoTCP, 40000, 80, 60, event.TCPAck), roleInitiator},
		{"server data", pkt(0, ipA, ipB, event.ProtoTCP, 8080, 40000, 1500, event.TCPAck), roleResponder},
		{"dns query", pkt(0, ipA, ipB, event.ProtoUDP, 40000, 53, 70, 0), roleOpen},
		{"dns answer", pkt(0, ipA, ipB, event.ProtoUDP, 53, 40000, 120, 0), roleResponder},
		{"dns 53-53", pkt(0, ipA, ipB, event.ProtoUDP, 53, 53, 120, 0), roleResponder},
		{"ntp 123-123", pkt(0, ipA, ipB, event.ProtoUDP, 123, 123, 90, 0), roleOpen},
		{"udp server reply high", pkt(0, ipA, ipB, event.ProtoUDP, 5000, 40000, 90, 0), roleResponder},
		{"echo request", pkt(0, ipA, ipB, event.ProtoICMP, 8, 0, 98, 0), roleOpen},
		{"echo reply", pkt(0, ipA, ipB, event.ProtoICMP, 0, 0, 98, 0), roleResponder},
		{"unreachable", pkt(0, ipA, ipB, event.ProtoICMP, 3, 3, 98, 0), roleResponder},
		{"icmpv6 echo", pkt(0, ipA, ipB, event.ProtoICMPv6, 128, 0, 98, 0), roleOpen},
	} {
		p := c.p
		if got := classify(&p, p.Proto == event.ProtoTCP || p.Proto == event.ProtoUDP); got != c.want {
			t.Errorf("%s: role %d, want %d", c.name, got, c.want)
		}
	}
	arp := event.Packet{Flags: event.FlagARP, DstPort: 1}
	if classify(&arp, false) != roleOpen {
		t.Error("ARP request is not an open")
	}
}

func TestOddFlagsAndSweep(t *testing.T) {
	e := New(Config{})
	out := make([]float32, Dim)
	ts := int64(1_700_000_000) * sec
	for i := 0; i < 200; i++ {
		ts += sec / 100
		dst := netip.AddrFrom4([4]byte{10, 99, 1, byte(i)})
		p := pkt(ts, ipA, dst, event.ProtoICMP, 8, 0, 64, 0)
		e.Extract(&p, out)
	}
	if got := math.Expm1(feat(t, out, "host_dst_hosts")); got < 150 {
		t.Errorf("ICMP sweep of 200 hosts: dst_hosts = %v", got)
	}
	if got := math.Expm1(feat(t, out, "host_L1_icmp_req_rate")); got < 50 {
		t.Errorf("icmp_req_rate = %v /s, want ~100", got)
	}
	for _, f := range []uint8{0, event.TCPFin, event.TCPFin | event.TCPPsh | event.TCPUrg, event.TCPSyn | event.TCPFin} {
		if !oddTCP(f) {
			t.Errorf("flags %#x not odd", f)
		}
	}
	for _, f := range []uint8{event.TCPSyn, event.TCPSyn | event.TCPAck, event.TCPAck, event.TCPFin | event.TCPAck, event.TCPRst, event.TCPRst | event.TCPAck, event.TCPPsh | event.TCPAck, event.TCPSyn | event.TCPEce | event.TCPCwr} {
		if oddTCP(f) {
			t.Errorf("flags %#x odd", f)
		}
	}
}

// TestARPMACChange: ARP replies for one IP from two MACs (poisoning).
func TestARPMACChange(t *testing.T) {
	e := New(Config{})
	out := make([]float32, Dim)
	ts := int64(1_700_000_000) * sec
	for i := 0; i < 20; i++ {
		ts += sec
		p := event.Packet{TimestampNs: ts, Flags: event.FlagARP, DstPort: 2, SrcMAC: macA, Length: 42}
		if i%2 == 1 {
			p.SrcMAC = macB
		}
		p.SetSrc(ipA)
		p.SetDst(ipB)
		e.Extract(&p, out)
	}
	if got := feat(t, out, "host_arp_mac_changes"); got < 1 {
		t.Errorf("arp_mac_changes = %v, want high", got)
	}
	if got := feat(t, out, "host_L1_arp_unsol_rate"); got <= 0 {
		t.Errorf("arp_unsol_rate = %v, want > 0 (replies without requests)", got)
	}
	// A reply to a request is solicited.
	e = New(Config{})
	for i := 0; i < 20; i++ {
		ts += sec
		q := event.Packet{TimestampNs: ts, Flags: event.FlagARP, DstPort: 1, SrcMAC: macB, Length: 42}
		q.SetSrc(ipB)
		q.SetDst(ipA)
		e.Extract(&q, out)
		p := event.Packet{TimestampNs: ts + 1000, Flags: event.FlagARP, DstPort: 2, SrcMAC: macA, Length: 42}
		p.SetSrc(ipA)
		p.SetDst(ipB)
		e.Extract(&p, out)
		if got := feat(t, out, "host_L1_arp_unsol_rate"); i > 0 && got != 0 {
			t.Fatalf("solicited replies: arp_unsol_rate = %v", got)
		}
	}
}

// TestARPClaim: ARPClaim marks an unsolicited reply and an announcement
// from a new MAC for a known address, and nothing else: requests, replies
// to requests, repeated announcements from the same MAC, IP packets.
func TestARPClaim(t *testing.T) {
	arp := func(op uint16, mac [6]byte, src, dst netip.Addr) event.Packet {
		p := event.Packet{Flags: event.FlagARP, DstPort: op, SrcMAC: mac, Length: 42}
		p.SetSrc(src)
		p.SetDst(dst)
		return p
	}
	ip := event.Packet{Flags: event.FlagIPv4, Proto: event.ProtoUDP, SrcMAC: macA, SrcPort: 53, DstPort: 40000, Length: 80}
	ip.SetSrc(ipA)
	ip.SetDst(ipB)
	none := [6]byte{}
	steps := []struct {
		what string
		p    event.Packet
		want bool
		prev [6]byte // the MAC the claim replaced (none: no change)
	}{
		{"request for A", arp(1, macB, ipB, ipA), false, none},
		{"A's reply to it", arp(2, macA, ipA, ipB), false, none},
		{"A's gratuitous announcement", arp(1, macA, ipA, ipA), false, none},
		{"A's traffic", ip, false, none},
		{"unsolicited reply for A from A's MAC", arp(2, macA, ipA, ipB), true, none},
		{"request for A again", arp(1, macB, ipB, ipA), false, none},
		{"reply for A from another MAC", arp(2, macB, ipA, ipB), true, macA},
		{"gratuitous announcement of A from the first MAC", arp(1, macA, ipA, ipA), true, macB},
		{"the same again", arp(1, macA, ipA, ipA), false, none},
		{"B's request", arp(1, macB, ipB, ipA), false, none},
		{"reply without a sender address", arp(2, macA, netip.IPv6Unspecified(), ipB), false, none},
		{"reply from another MAC without a sender address", arp(2, macB, netip.IPv6Unspecified(), ipB), false, none},
		{"reply for 0.0.0.0", arp(2, macB, netip.IPv4Unspecified(), ipB), false, none},
	}
	e := New(Config{V5: true})
	out := make([]float32, DimV5)
	ts := int64(1_700_000_000) * sec
	for _, st := range steps {
		ts += sec
		st.p.TimestampNs = ts
		e.Extract(&st.p, out)
		if got := e.ARPClaim(); got != st.want {
			t.Errorf("%s: ARPClaim %v, want %v", st.what, got, st.want)
		}
		if prev, ok := e.ARPPreviousMAC(); ok != (st.prev != none) || prev != st.prev && ok {
			t.Errorf("%s: ARPPreviousMAC %x %v, want %x", st.what, prev, ok, st.prev)
		}
	}
}

// TestRawLogFeatures: the features Raw keeps before log1p are the rates and
// the ARP MAC changes (dst_ports and dst_hosts come logged from their
// per-host cache), and Raw.Features of a packet equals Extract of the same
// packet on a twin extractor, bit for bit.
func TestRawLogFeatures(t *testing.T) {
	for j, n := range Names() {
		want := strings.HasSuffix(n, "_rate") || n == "host_arp_mac_changes"
		if IsLog(j) != want {
			t.Errorf("IsLog(%d) (%s) = %v", j, n, IsLog(j))
		}
	}
	a, b := New(Config{HashSeed: 7}), New(Config{HashSeed: 7})
	va, vb := make([]float32, Dim), make([]float32, Dim)
	var r Raw
	for i, p := range rawTestPackets() {
		a.Extract(&p, va)
		b.ExtractRaw(&p, &r)
		r.Features(vb)
		for j := range va {
			if math.Float32bits(va[j]) != math.Float32bits(vb[j]) {
				t.Fatalf("packet %d feature %s: Extract %v, ExtractRaw+Features %v", i, names[j], va[j], vb[j])
			}
		}
	}
}

// rawTestPackets is a short mixed sequence: SYNs to many ports, a RST back,
// UDP DNS queries, ICMP echo, ARP request and unsolicited reply.
func rawTestPackets() []event.Packet {
	src := [16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 0, 14: 0, 15: 1}
	dst := [16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 0, 14: 0, 15: 2}
	var out []event.Packet
	ts := int64(1_000_000_000)
	for i := range 300 {
		ts += int64(1+i%7) * 3_000_000
		p := event.Packet{TimestampNs: ts, Flags: event.FlagIPv4, SrcIP: src, DstIP: dst, Length: 60}
		switch i % 6 {
		case 0, 1:
			p.Proto, p.TCPFlags, p.SrcPort, p.DstPort = event.ProtoTCP, event.TCPSyn, 40000, uint16(1+i)
		case 2:
			p.Proto, p.TCPFlags, p.SrcIP, p.DstIP, p.SrcPort, p.DstPort = event.ProtoTCP, event.TCPRst|event.TCPAck, dst, src, uint16(i), 40000
		case 3:
			p.Proto, p.SrcPort, p.DstPort, p.Length = event.ProtoUDP, 50000, 53, uint16(90+i%40)
		case 4:
			p.Proto, p.SrcPort = event.ProtoICMP, 8
		case 5:
			p.Flags, p.DstPort = event.FlagARP, uint16(1+i%2)
		}
		out = append(out, p)
	}
	return out
}
