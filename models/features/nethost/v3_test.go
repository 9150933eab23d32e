package nethost

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

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

// near fails t unless got is within 1e-4 of want.
func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-4 {
		t.Errorf("%s = %.5f, want %.5f", what, got, want)
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
	inj, trav := get(10*sec, "10.99.0.7", "10.99.0.80", 0)
	near(t, "injection before any request", inj, 0)
	inj, trav = get(11*sec, "10.99.0.7", "10.99.0.80", event.FlagHTTPInjection)
	near(t, "injection at the request", inj, math.Log1p(1))
	near(t, "traversal at the injection", trav, 0)
	// λ = 0.1: the count halves every 10 s.
	inj, _ = get(21*sec, "10.99.0.7", "10.99.0.80", 0)
	near(t, "injection 10 s later", inj, math.Log1p(0.5))
	inj, trav = get(21*sec, "10.99.0.7", "10.99.0.80", event.FlagHTTPInjection|event.FlagHTTPTraversal)
	near(t, "injection, second request", inj, math.Log1p(1.5))
	near(t, "traversal, first request", trav, math.Log1p(1))
	// Another source is not touched.
	inj, trav = get(21*sec, "10.99.0.8", "10.99.0.80", 0)
	near(t, "other source injection", inj, 0)
	near(t, "other source traversal", trav, 0)
	inj, trav = get(221*sec, "10.99.0.7", "10.99.0.80", 0)
	if inj > 1e-5 || trav > 1e-5 {
		t.Errorf("200 s later: injection %v, traversal %v, want about 0", inj, trav)
	}
}

// hintedSeed is a fuzz seed of two records of one source, 2 s apart: mark
// sets the first one's hint, and the second adds a traversal hint.
func hintedSeed(mark func(*event.Packet)) []byte {
	var b [2 * event.PacketRecordSize]byte
	p := syn(sec, ipA, ipB, 1)
	mark(&p)
	p.Marshal(b[:])
	p.TimestampNs += 2 * sec
	p.Flags |= event.FlagHTTPTraversal
	p.Marshal(b[event.PacketRecordSize:])
	return b[:]
}

func FuzzExtractV3(f *testing.F) {
	f.Add(hintedSeed(func(p *event.Packet) { p.Flags |= event.FlagHTTPInjection }))
	f.Fuzz(func(t *testing.T, data []byte) {
		extractRecords(t, Config{V3: true, MaxHosts: 8, MaxPairs: 4}, data, func(v float32) bool { return v >= 0 })
	})
}
