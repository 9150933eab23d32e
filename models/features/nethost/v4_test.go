package nethost

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// TestNamesVersions: each later set's names are unique, its extractor
// reports its name and dimension, and the features it adds are
// log-scaled counts.
func TestNamesVersions(t *testing.T) {
	for _, c := range []struct {
		name         string
		names        []string
		prevDim, dim int
		cfg          Config
	}{
		{NameV3, NamesV3(), DimV2, DimV3, Config{V3: true}},
		{NameV4, NamesV4(), DimV3, DimV4, Config{V4: true}},
		{NameV5, NamesV5(), DimV4, DimV5, Config{V5: true}},
		{NameV6, NamesV6(), DimV5, DimV6, Config{V6: true}},
		{NameV7, NamesV7(), DimV6, DimV7, Config{V7: true}},
	} {
		n := c.names
		if len(n) != c.dim {
			t.Fatalf("%s: %d names, dim %d", c.name, len(n), c.dim)
		}
		seen := map[string]bool{}
		for _, s := range n {
			if seen[s] {
				t.Errorf("%s: duplicate name %q", c.name, s)
			}
			seen[s] = true
		}
		e := New(c.cfg)
		if e.Dim() != c.dim || e.Name() != c.name {
			t.Errorf("%s extractor: Dim %d, Name %q", c.name, e.Dim(), e.Name())
		}
		for j := c.prevDim; j < c.dim; j++ {
			if !IsLog(j) {
				t.Errorf("%s: feature %s is not log-scaled", c.name, n[j])
			}
		}
	}
	if DimV3 != DimV2+WebDim || DimV4 != DimV3+ShellDim || DimV5 != DimV4+ICMPDataDim || DimV6 != DimV5+HexDataDim || DimV7 != DimV6+CookieReuseDim || IsLog(DimV7) {
		t.Errorf("dimensions %d %d %d %d %d, IsLog past the last feature %v", DimV3, DimV4, DimV5, DimV6, DimV7, IsLog(DimV7))
	}
}

// withShells returns pk with web hints and the command-shell hint on some
// TCP packets.
func withShells(pk []event.Packet, seed uint64) []event.Packet {
	return markSome(withHints(pk, seed), seed, 4, 30, event.HintCmdShell,
		func(p *event.Packet) bool { return p.Flags&(event.FlagIPv4|event.FlagIPv6) != 0 })
}

// markSome sets the VLAN-field hint bit hint on about one in n of the
// packets of pk that match (random stream stream of seed), in place, and
// returns pk.
func markSome(pk []event.Packet, seed, stream uint64, n int, hint uint16, match func(*event.Packet) bool) []event.Packet {
	rng := rand.New(rand.NewPCG(seed, stream))
	for i := range pk {
		if match(&pk[i]) && rng.IntN(n) == 0 {
			pk[i].VLAN |= hint
		}
	}
	return pk
}

// TestPrefixVersions: each set's features begin with the previous set's,
// bit for bit, whatever the content hints; the previous set leaves the
// added raw values zero and ignores the hints it does not read
// (nethost/v3 after v2, v4 after v3, v5 after v4, v6 after v5, v7 after v6).
func TestPrefixVersions(t *testing.T) {
	for _, v := range []struct {
		name      string
		hints     func([]event.Packet, uint64) []event.Packet
		old, next Config
	}{
		{"v3 after v2", withHints, Config{V2: true}, Config{V3: true}},
		{"v4 after v3", withShells, Config{V3: true}, Config{V4: true}},
		{"v5 after v4", withICMPData, Config{V4: true}, Config{V5: true}},
		{"v6 after v5", withHexData, Config{V5: true}, Config{V6: true}},
		{"v7 after v6", withCookieReuse, Config{V6: true}, Config{V7: true}},
	} {
		for _, c := range []struct {
			name string
			pk   []event.Packet
			cfg  Config
		}{
			{"random", v.hints(randomPackets(100_000, 3), 1), Config{HashSeed: 5}},
			{"random, 16 hosts, 8 pairs", v.hints(randomPackets(50_000, 4), 2), Config{MaxHosts: 16, MaxPairs: 8, HashSeed: 6}},
			{"rawTestPackets", v.hints(rawTestPackets(), 3), Config{HashSeed: 7}},
		} {
			a, b := c.cfg, c.cfg
			a.V2, a.V3, a.V4, a.V5, a.V6, a.V7 = v.old.V2, v.old.V3, v.old.V4, v.old.V5, v.old.V6, v.old.V7
			b.V2, b.V3, b.V4, b.V5, b.V6, b.V7 = v.next.V2, v.next.V3, v.next.V4, v.next.V5, v.next.V6, v.next.V7
			if added := samePrefix(t, v.name+", "+c.name, c.pk, New(a), New(b), true); added == 0 {
				t.Errorf("%s, %s: no packet with a nonzero added feature", v.name, c.name)
			}
		}
	}
}

// TestShellFeature follows one shell banner through its source's later
// packets.
func TestShellFeature(t *testing.T) {
	e := New(Config{V4: true, HashSeed: 1})
	out := make([]float32, DimV4)
	get := func(ts int64, src, dst string, hint uint16) float64 {
		t.Helper()
		p := syn(ts, netip.MustParseAddr(src), netip.MustParseAddr(dst), 4444)
		p.TCPFlags = event.TCPAck | event.TCPPsh
		p.DstPort = 49200
		p.VLAN |= hint
		e.Extract(&p, out)
		return featByName(t, out, "host_cmd_shell")
	}
	near(t, "before the shell", get(10*sec, "10.99.0.9", "10.99.0.66", 0), 0)
	near(t, "the banner", get(11*sec, "10.99.0.9", "10.99.0.66", event.HintCmdShell), math.Log1p(1))
	// λ = 0.1: the count halves every 10 s.
	near(t, "10 s later", get(21*sec, "10.99.0.9", "10.99.0.66", 0), math.Log1p(0.5))
	near(t, "a prompt", get(21*sec, "10.99.0.9", "10.99.0.66", event.HintCmdShell), math.Log1p(1.5))
	near(t, "the attacker", get(21*sec, "10.99.0.66", "10.99.0.9", 0), 0)
	// A VLAN id alone is no hint.
	near(t, "a VLAN id", get(22*sec, "10.99.0.10", "10.99.0.66", 4095), 0)
	if v := get(221*sec, "10.99.0.9", "10.99.0.66", 0); v > 1e-5 {
		t.Errorf("200 s later: %v, want about 0", v)
	}
}

func FuzzExtractV4(f *testing.F) {
	f.Add(hintedSeed(func(p *event.Packet) { p.VLAN |= event.HintCmdShell }))
	f.Fuzz(func(t *testing.T, data []byte) {
		extractRecords(t, Config{V4: true, MaxHosts: 8, MaxPairs: 4}, data, func(v float32) bool { return v >= 0 })
	})
}
