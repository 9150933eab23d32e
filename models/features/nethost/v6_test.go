package nethost

import (
	"math"
	"net/netip"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// withHexData returns pk with the hints of withICMPData and the hex-data
// hint on some TCP packets.
func withHexData(pk []event.Packet, seed uint64) []event.Packet {
	return markSome(withICMPData(pk, seed), seed, 6, 20, event.HintHexData,
		func(p *event.Packet) bool { return p.Proto == event.ProtoTCP })
}

// TestHexDataFeature follows a check-in and its answer: both ends count,
// plain HTTP does not, and the count decays with λ = 0.1.
func TestHexDataFeature(t *testing.T) {
	get := hintFeature(t, Config{V6: true, HashSeed: 1}, 400, "host_hex_data")
	near(t, "a request", get(10*sec, "10.99.0.45", "10.99.0.44", 49357, 80, 0), 0)
	near(t, "its answer", get(10*sec, "10.99.0.44", "10.99.0.45", 80, 49357, 0), 0)
	near(t, "hex check-in", get(11*sec, "10.99.0.45", "10.99.0.44", 49357, 80, event.HintHexData), math.Log1p(1))
	near(t, "hex answer", get(11*sec, "10.99.0.44", "10.99.0.45", 80, 49357, event.HintHexData), math.Log1p(1))
	// λ = 0.1: the count halves every 10 s.
	near(t, "10 s later", get(21*sec, "10.99.0.45", "10.99.0.44", 49358, 80, 0), math.Log1p(0.5))
	near(t, "another check-in", get(21*sec, "10.99.0.45", "10.99.0.44", 49358, 80, event.HintHexData), math.Log1p(1.5))
	near(t, "a third host", get(21*sec, "10.99.0.7", "10.99.0.44", 40000, 80, 0), 0)
	// Neither the other hints nor a VLAN id are this hint.
	near(t, "other hints", get(22*sec, "10.99.0.8", "10.99.0.44", 40001, 80, event.HintCmdShell|event.HintICMPData|4095), 0)
	if v := get(221*sec, "10.99.0.45", "10.99.0.44", 49359, 80, 0); v > 1e-5 {
		t.Errorf("200 s later: %v, want about 0", v)
	}
}

// hintFeature returns a function that extracts a TCP packet of size bytes
// (with the VLAN-field hint bits hint) with one extractor of cfg and returns
// the feature name: the content-hint feature tests follow one source with it.
func hintFeature(t *testing.T, cfg Config, size uint16, name string) func(ts int64, src, dst string, sport, dport, hint uint16) float64 {
	e := New(cfg)
	out := make([]float32, e.Dim())
	return func(ts int64, src, dst string, sport, dport, hint uint16) float64 {
		t.Helper()
		p := pkt(ts, netip.MustParseAddr(src), netip.MustParseAddr(dst), event.ProtoTCP, sport, dport, size, event.TCPAck|event.TCPPsh)
		p.VLAN |= hint
		e.Extract(&p, out)
		return featByName(t, out, name)
	}
}

func FuzzExtractV6(f *testing.F) {
	f.Add(hintedSeed(func(p *event.Packet) { p.VLAN |= event.HintHexData | event.HintICMPData | event.HintCmdShell }))
	f.Fuzz(func(t *testing.T, data []byte) {
		extractRecords(t, Config{V6: true, MaxHosts: 8, MaxPairs: 4}, data, func(v float32) bool { return v >= 0 })
	})
}
