package nethost

import (
	"math"
	"net/netip"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// withICMPData returns pk with the web and shell hints of withShells and
// the covert-ICMP hint on some ICMP packets.
func withICMPData(pk []event.Packet, seed uint64) []event.Packet {
	return markSome(withShells(pk, seed), seed, 5, 4, event.HintICMPData,
		func(p *event.Packet) bool { return p.Proto == event.ProtoICMP || p.Proto == event.ProtoICMPv6 })
}

// TestICMPDataFeature follows a covert echo request and its reply: both
// ends count, a ping does not, and the count decays with λ = 0.1.
func TestICMPDataFeature(t *testing.T) {
	e := New(Config{V5: true, HashSeed: 1})
	out := make([]float32, DimV5)
	get := func(ts int64, src, dst string, typ uint16, hint uint16) float64 {
		t.Helper()
		p := pkt(ts, netip.MustParseAddr(src), netip.MustParseAddr(dst), event.ProtoICMP, typ, 0, 182, 0)
		p.VLAN |= hint
		e.Extract(&p, out)
		return featByName(t, out, "host_icmp_data")
	}
	near(t, "a ping", get(10*sec, "10.99.0.48", "10.99.0.5", 8, 0), 0)
	near(t, "its reply", get(10*sec, "10.99.0.5", "10.99.0.48", 0, 0), 0)
	near(t, "covert request", get(11*sec, "10.99.0.48", "10.99.0.5", 8, event.HintICMPData), math.Log1p(1))
	near(t, "covert reply", get(11*sec, "10.99.0.5", "10.99.0.48", 0, event.HintICMPData), math.Log1p(1))
	// λ = 0.1: the count halves every 10 s.
	near(t, "10 s later", get(21*sec, "10.99.0.48", "10.99.0.5", 8, 0), math.Log1p(0.5))
	near(t, "another message", get(21*sec, "10.99.0.48", "10.99.0.5", 8, event.HintICMPData), math.Log1p(1.5))
	near(t, "a third host", get(21*sec, "10.99.0.7", "10.99.0.5", 8, 0), 0)
	// Neither the shell hint nor a VLAN id is this hint.
	near(t, "shell hint", get(22*sec, "10.99.0.8", "10.99.0.5", 8, event.HintCmdShell|4095), 0)
	if v := get(221*sec, "10.99.0.48", "10.99.0.5", 8, 0); v > 1e-5 {
		t.Errorf("200 s later: %v, want about 0", v)
	}
}

func FuzzExtractV5(f *testing.F) {
	f.Add(hintedSeed(func(p *event.Packet) { p.VLAN |= event.HintICMPData | event.HintCmdShell }))
	f.Fuzz(func(t *testing.T, data []byte) {
		extractRecords(t, Config{V5: true, MaxHosts: 8, MaxPairs: 4}, data, func(v float32) bool { return v >= 0 })
	})
}
