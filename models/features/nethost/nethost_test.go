package nethost

import (
	"math"
	"net/netip"
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

func TestNames(t *testing.T) {
	n := Names()
	if len(n) != Dim || n[0] != "host_L1_pkt_rate" || n[Dim-1] != "host_dst_hosts" {
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
		{"host_L1_pkt_rate", 100, 3}, {"host_L0.1_pkt_rate", 100, 3}, {"host_L1_byte_rate", 50000, 1500},
		{"host_L1_mean_size", 500, 1e-6}, {"host_L1_dns_share", 1, 1e-9}, {"host_L1_syn_ratio", 0, 0},
		{"host_L1_new_dst_rate", 0, 1e-3}, {"host_dst_ports", 1, 0.01}, {"host_dst_hosts", 1, 0.01},
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
	if got := feat(t, out, "host_dst_ports"); got < 1000 {
		t.Errorf("host_dst_ports = %v after 2000 ports, want > 1000 (sketch saturates near 1420)", got)
	}
	if got := feat(t, out, "host_L1_syn_ratio"); math.Abs(got-1) > 1e-6 {
		t.Errorf("syn_ratio = %v, want 1", got)
	}
	if got := feat(t, out, "host_L1_failed_ratio"); got < 0.95 {
		t.Errorf("failed_ratio = %v, want ~1", got)
	}
	// The 256-bit pair sketch saturates during a long scan, so the rate of
	// recognisably new destinations falls from ~1000/s; it stays far above
	// the ~0 of a benign source.
	if got := feat(t, out, "host_L1_new_dst_rate"); got < 20 {
		t.Errorf("new_dst_rate = %v /s, want high", got)
	}
	if got := feat(t, out, "host_dst_hosts"); got > 1.1 {
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
		e := New(Config{MaxHosts: 8})
		out := make([]float32, Dim)
		var p event.Packet
		for len(data) >= event.PacketRecordSize {
			_ = p.Unmarshal(data)
			data = data[event.PacketRecordSize:]
			e.Extract(&p, out)
			for i, v := range out {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s = %v", names[i], v)
				}
			}
		}
	})
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
