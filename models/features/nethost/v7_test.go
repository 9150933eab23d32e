package nethost

import (
	"math"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// withCookieReuse returns pk with the hints of withHexData and the
// cookie-reuse hint on some TCP packets.
func withCookieReuse(pk []event.Packet, seed uint64) []event.Packet {
	return markSome(withHexData(pk, seed), seed, 7, 20, event.HintCookieReuse,
		func(p *event.Packet) bool { return p.Proto == event.ProtoTCP })
}

// TestCookieReuseFeature follows a hijacker's requests: only his marked
// requests count, not the server's answers nor the owner's requests, and
// the count decays with λ = 0.1.
func TestCookieReuseFeature(t *testing.T) {
	get := hintFeature(t, Config{V7: true, HashSeed: 1}, 500, "host_cookie_reuse")
	near(t, "the owner's request", get(10*sec, "10.99.0.164", "10.99.0.181", 60432, 80, 0), 0)
	near(t, "its answer", get(10*sec, "10.99.0.181", "10.99.0.164", 80, 60432, 0), 0)
	near(t, "the hijacker's request", get(11*sec, "10.99.0.154", "10.99.0.181", 53275, 80, event.HintCookieReuse), math.Log1p(1))
	near(t, "the answer to him", get(11*sec, "10.99.0.181", "10.99.0.154", 80, 53275, 0), 0)
	near(t, "the owner again", get(12*sec, "10.99.0.164", "10.99.0.181", 60432, 80, 0), 0)
	// λ = 0.1: the count halves every 10 s.
	near(t, "10 s later", get(21*sec, "10.99.0.154", "10.99.0.181", 53275, 80, 0), math.Log1p(0.5))
	near(t, "another request", get(21*sec, "10.99.0.154", "10.99.0.181", 53275, 80, event.HintCookieReuse), math.Log1p(1.5))
	// Neither the other hints nor a VLAN id are this hint.
	near(t, "other hints", get(22*sec, "10.99.0.8", "10.99.0.181", 40001, 80, event.HintCmdShell|event.HintICMPData|event.HintHexData|4095), 0)
	if v := get(221*sec, "10.99.0.154", "10.99.0.181", 53276, 80, 0); v > 1e-5 {
		t.Errorf("200 s later: %v, want about 0", v)
	}
}

func FuzzExtractV7(f *testing.F) {
	f.Add(hintedSeed(func(p *event.Packet) {
		p.VLAN |= event.HintCookieReuse | event.HintHexData | event.HintICMPData | event.HintCmdShell
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		extractRecords(t, Config{V7: true, MaxHosts: 8, MaxPairs: 4}, data, func(v float32) bool { return v >= 0 })
	})
}
