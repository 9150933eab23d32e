package nethost

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

func TestNamesV3(t *testing.T) {
	n := NamesV3()
	if len(n) != DimV3 || DimV3 != DimV2+WebDim {
		t.Fatalf("%d names, DimV3 %d", len(n), DimV3)
	}
	seen := map[string]bool{}
	for _, s := range n {
		if seen[s] {
			t.Errorf("duplicate name %q", s)
		}
		seen[s] = true
	}
	e := New(Config{V3: true})
	if e.Dim() != DimV3 || e.Name() != NameV3 {
		t.Errorf("V3 extractor: Dim %d, Name %q", e.Dim(), e.Name())
	}
	for j := DimV2; j < DimV3; j++ {
		if !IsLog(j) {
			t.Errorf("feature %s is not log-scaled", n[j])
		}
	}
}

// withHints returns pk with content hints on some TCP packets.
func withHints(pk []event.Packet, seed uint64) []event.Packet {
	rng := rand.New(rand.NewPCG(seed, 3))
	out := append([]event.Packet(nil), pk...)
	for i := range out {
		if out[i].Flags&(event.FlagIPv4|event.FlagIPv6) != 0 && rng.IntN(40) == 0 {
			out[i].Flags |= []uint8{event.FlagHTTPInjection, event.FlagHTTPTraversal,
				event.FlagHTTPInjection | event.FlagHTTPTraversal}[rng.IntN(3)]
		}
	}
	return out
}

// TestV3Prefix: nethost/v3's first DimV2 features are nethost/v2's, bit
// for bit, whatever the content hints; a v2 extractor leaves Raw[DimV2:]
// zero and ignores the hints.
func TestV3Prefix(t *testing.T) {
	for _, c := range []struct {
		name string
		pk   []event.Packet
		cfg  Config
	}{
		{"random", withHints(randomPackets(100_000, 3), 1), Config{HashSeed: 5}},
		{"random, 16 hosts, 8 pairs", withHints(randomPackets(50_000, 4), 2), Config{MaxHosts: 16, MaxPairs: 8, HashSeed: 6}},
		{"rawTestPackets", withHints(rawTestPackets(), 3), Config{HashSeed: 7}},
	} {
		v2c, v3c := c.cfg, c.cfg
		v2c.V2, v3c.V3 = true, true
		if hinted := samePrefix(t, c.name, c.pk, New(v2c), New(v3c), true); hinted == 0 {
			t.Errorf("%s: no packet with a nonzero web feature", c.name)
		}
	}
}

// TestWebFeatures follows one SQL injection and one traversal request
// through the source's later packets.
func TestWebFeatures(t *testing.T) {
	e := New(Config{V3: true, HashSeed: 1})
	out := make([]float32, DimV3)
	get := func(ts int64, src, dst string, flags uint8) (inj, trav float64) {
		t.Helper()
		p := syn(ts, netip.MustParseAddr(src), netip.MustParseAddr(dst), 40000)
		p.TCPFlags = event.TCPAck | event.TCPPsh
		p.DstPort = 80
		p.Flags |= flags
		e.Extract(&p, out)
		return featByName(t, out, "host_http_injection"), featByName(t, out, "host_http_traversal")
	}
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-4 {
			t.Errorf("%s = %.5f, want %.5f", what, got, want)
		}
	}
	inj, trav := get(10*sec, "10.99.0.7", "10.99.0.80", 0)
	near("injection before any request", inj, 0)
	inj, trav = get(11*sec, "10.99.0.7", "10.99.0.80", event.FlagHTTPInjection)
	near("injection at the request", inj, math.Log1p(1))
	near("traversal at the injection", trav, 0)
	// λ = 0.1: the count halves every 10 s.
	inj, _ = get(21*sec, "10.99.0.7", "10.99.0.80", 0)
	near("injection 10 s later", inj, math.Log1p(0.5))
	inj, trav = get(21*sec, "10.99.0.7", "10.99.0.80", event.FlagHTTPInjection|event.FlagHTTPTraversal)
	near("injection, second request", inj, math.Log1p(1.5))
	near("traversal, first request", trav, math.Log1p(1))
	// Another source is not touched.
	inj, trav = get(21*sec, "10.99.0.8", "10.99.0.80", 0)
	near("other source injection", inj, 0)
	near("other source traversal", trav, 0)
	inj, trav = get(221*sec, "10.99.0.7", "10.99.0.80", 0)
	if inj > 1e-5 || trav > 1e-5 {
		t.Errorf("200 s later: injection %v, traversal %v, want about 0", inj, trav)
	}
}

func FuzzExtractV3(f *testing.F) {
	var b [2 * event.PacketRecordSize]byte
	p := syn(sec, ipA, ipB, 1)
	p.Flags |= event.FlagHTTPInjection
	p.Marshal(b[:])
	p.TimestampNs += 2 * sec
	p.Flags |= event.FlagHTTPTraversal
	p.Marshal(b[event.PacketRecordSize:])
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		extractRecords(t, Config{V3: true, MaxHosts: 8, MaxPairs: 4}, data, func(v float32) bool { return v >= 0 })
	})
}
