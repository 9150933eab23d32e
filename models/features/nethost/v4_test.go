package nethost

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

func TestNamesV4(t *testing.T) {
	n := NamesV4()
	if len(n) != DimV4 || DimV4 != DimV3+ShellDim {
		t.Fatalf("%d names, DimV4 %d", len(n), DimV4)
	}
	seen := map[string]bool{}
	for _, s := range n {
		if seen[s] {
			t.Errorf("duplicate name %q", s)
		}
		seen[s] = true
	}
	e := New(Config{V4: true})
	if e.Dim() != DimV4 || e.Name() != NameV4 {
		t.Errorf("V4 extractor: Dim %d, Name %q", e.Dim(), e.Name())
	}
	for j := DimV3; j < DimV4; j++ {
		if !IsLog(j) {
			t.Errorf("feature %s is not log-scaled", n[j])
		}
	}
	if IsLog(DimV4) {
		t.Error("IsLog past the last feature")
	}
}

// withShells returns pk with web hints and the command-shell hint on some
// TCP packets.
func withShells(pk []event.Packet, seed uint64) []event.Packet {
	out := withHints(pk, seed)
	rng := rand.New(rand.NewPCG(seed, 4))
	for i := range out {
		if out[i].Flags&(event.FlagIPv4|event.FlagIPv6) != 0 && rng.IntN(30) == 0 {
			out[i].VLAN |= event.HintCmdShell
		}
	}
	return out
}

// TestV4Prefix: nethost/v4's first DimV3 features are nethost/v3's, bit
// for bit, whatever the hints; a v3 extractor leaves Raw[DimV3:] zero and
// ignores the shell hint.
func TestV4Prefix(t *testing.T) {
	for _, c := range []struct {
		name string
		pk   []event.Packet
		cfg  Config
	}{
		{"random", withShells(randomPackets(100_000, 3), 1), Config{HashSeed: 5}},
		{"random, 16 hosts, 8 pairs", withShells(randomPackets(50_000, 4), 2), Config{MaxHosts: 16, MaxPairs: 8, HashSeed: 6}},
		{"rawTestPackets", withShells(rawTestPackets(), 3), Config{HashSeed: 7}},
	} {
		v3c, v4c := c.cfg, c.cfg
		v3c.V3, v4c.V4 = true, true
		if hinted := samePrefix(t, c.name, c.pk, New(v3c), New(v4c), true); hinted == 0 {
			t.Errorf("%s: no packet with a nonzero shell feature", c.name)
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
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-4 {
			t.Errorf("%s = %.5f, want %.5f", what, got, want)
		}
	}
	near("before the shell", get(10*sec, "10.99.0.9", "10.99.0.66", 0), 0)
	near("the banner", get(11*sec, "10.99.0.9", "10.99.0.66", event.HintCmdShell), math.Log1p(1))
	// λ = 0.1: the count halves every 10 s.
	near("10 s later", get(21*sec, "10.99.0.9", "10.99.0.66", 0), math.Log1p(0.5))
	near("a prompt", get(21*sec, "10.99.0.9", "10.99.0.66", event.HintCmdShell), math.Log1p(1.5))
	near("the attacker", get(21*sec, "10.99.0.66", "10.99.0.9", 0), 0)
	// A VLAN id alone is no hint.
	near("a VLAN id", get(22*sec, "10.99.0.10", "10.99.0.66", 4095), 0)
	if v := get(221*sec, "10.99.0.9", "10.99.0.66", 0); v > 1e-5 {
		t.Errorf("200 s later: %v, want about 0", v)
	}
}

func FuzzExtractV4(f *testing.F) {
	var b [2 * event.PacketRecordSize]byte
	p := syn(sec, ipA, ipB, 1)
	p.VLAN |= event.HintCmdShell
	p.Marshal(b[:])
	p.TimestampNs += 2 * sec
	p.Flags |= event.FlagHTTPTraversal
	p.Marshal(b[event.PacketRecordSize:])
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		extractRecords(t, Config{V4: true, MaxHosts: 8, MaxPairs: 4}, data, func(v float32) bool { return v >= 0 })
	})
}
