package suppresscheck

import (
	"math/rand/v2"
	"testing"

	"github.com/vigil-edge/vigil/agent/suppress"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// rule is a suppression's matching fields, fed to both implementations.
type rule struct {
	Detector, SrcIP, DstIP string
	DstPort                uint32
	Proto, Path            string
}

// ctx is a finding's detector and context.
type ctx struct {
	Detector, SrcIP, DstIP string
	SrcPort, DstPort       uint32
	Proto, Path, SrcMAC    string
}

func serverMatches(r rule, c ctx) bool {
	s := store.Suppression{ID: 1, Entity: "acme", Detector: r.Detector, SrcIP: r.SrcIP, DstIP: r.DstIP, DstPort: r.DstPort,
		Proto: r.Proto, Path: r.Path}
	return s.Matches(c.Detector, store.FindingContext{SrcIP: c.SrcIP, DstIP: c.DstIP, SrcPort: c.SrcPort, DstPort: c.DstPort,
		Proto: c.Proto, Path: c.Path, SrcMAC: c.SrcMAC})
}

// agentMatches goes the way a rule travels: the wire message the endpoint
// sends, the agent's conversion, then its rule.
func agentMatches(r rule, c ctx) bool {
	m := &wirev1.Suppressions{Generation: 1, Items: []*wirev1.Suppression{{Id: 1, Detector: r.Detector, SrcIp: r.SrcIP,
		DstIp: r.DstIP, DstPort: r.DstPort, Proto: r.Proto, Path: r.Path}}}
	set, _ := suppress.FromWire(m)
	return set.Rules[0].Matches(c.Detector, &wirev1.FindingContext{SrcIp: c.SrcIP, DstIp: c.DstIP, SrcPort: c.SrcPort,
		DstPort: c.DstPort, Proto: c.Proto, Path: c.Path, SrcMac: c.SrcMAC})
}

var base = ctx{Detector: "netflow", SrcIP: "10.0.0.1", DstIP: "10.0.0.2", SrcPort: 40000, DstPort: 22, Proto: "tcp", Path: "/srv/data", SrcMAC: "02:00:00:00:00:01"}

func with(f func(*ctx)) ctx { c := base; f(&c); return c }

// cases is the one table both implementations must agree with.
var cases = []struct {
	name string
	r    rule
	c    ctx
	want bool
}{
	{"detector only matches any context", rule{Detector: "netflow"}, base, true},
	{"detector differs", rule{Detector: "netflow"}, with(func(c *ctx) { c.Detector = "fileactivity" }), false},
	{"detector is case-sensitive", rule{Detector: "NetFlow"}, base, false},
	{"empty detector matches only empty detector", rule{}, base, false},
	{"empty detector, empty finding detector", rule{}, with(func(c *ctx) { c.Detector = "" }), true},
	{"as a false positive teaches it", rule{Detector: "netflow", SrcIP: "10.0.0.1", DstIP: "10.0.0.2", DstPort: 22, Proto: "tcp", Path: "/srv/data"}, base, true},
	{"source port is not part of a rule", rule{Detector: "netflow", DstPort: 22}, with(func(c *ctx) { c.SrcPort = 1 }), true},
	{"src ip differs", rule{Detector: "netflow", SrcIP: "10.0.0.9"}, base, false},
	{"src ip must be exact (no prefix)", rule{Detector: "netflow", SrcIP: "10.0.0."}, base, false},
	{"dst ip differs", rule{Detector: "netflow", DstIP: "10.0.0.3"}, base, false},
	{"ip text compared as text", rule{Detector: "netflow", DstIP: "10.0.0.02"}, base, false},
	{"dst port 0 is any", rule{Detector: "netflow", DstPort: 0}, with(func(c *ctx) { c.DstPort = 65535 }), true},
	{"dst port differs", rule{Detector: "netflow", DstPort: 23}, base, false},
	{"dst port set, finding without port", rule{Detector: "netflow", DstPort: 22}, with(func(c *ctx) { c.DstPort = 0 }), false},
	{"proto case-insensitive", rule{Detector: "netflow", Proto: "TCP"}, base, true},
	{"proto case-insensitive other way", rule{Detector: "netflow", Proto: "udp"}, with(func(c *ctx) { c.Proto = "UDP" }), true},
	{"proto differs", rule{Detector: "netflow", Proto: "udp"}, base, false},
	{"proto unicode folding", rule{Detector: "netflow", Proto: "K"}, with(func(c *ctx) { c.Proto = "\u212a" }), true}, // Kelvin sign folds to K
	{"path exact", rule{Detector: "fileactivity", Path: "/srv/data"}, with(func(c *ctx) { c.Detector = "fileactivity" }), true},
	{"path is case-sensitive", rule{Detector: "fileactivity", Path: "/SRV/data"}, with(func(c *ctx) { c.Detector = "fileactivity" }), false},
	{"path prefix does not match", rule{Detector: "fileactivity", Path: "/srv"}, with(func(c *ctx) { c.Detector = "fileactivity" }), false},
	{"rule field set, finding field empty", rule{Detector: "netflow", Path: "/srv/data"}, with(func(c *ctx) { c.Path = "" }), false},
	{"empty context, rule without fields", rule{Detector: "netflow"}, ctx{Detector: "netflow"}, true},
	{"empty context, rule with ip", rule{Detector: "netflow", DstIP: "10.0.0.2"}, ctx{Detector: "netflow"}, false},
	{"src mac is not part of a rule", rule{Detector: "netflow"}, with(func(c *ctx) { c.SrcMAC = "" }), true},
}

func TestSameRuleOnBothSides(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := serverMatches(tc.r, tc.c); got != tc.want {
				t.Errorf("server (store.Suppression.Matches) = %v, want %v", got, tc.want)
			}
			if got := agentMatches(tc.r, tc.c); got != tc.want {
				t.Errorf("agent (suppress.Rule.Matches) = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSameRuleRandom compares both implementations over random rules and
// contexts drawn from small alphabets (so that matches are frequent),
// seeded: any disagreement is reproducible.
func TestSameRuleRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	port := func() uint32 { return []uint32{0, 22, 80}[rng.IntN(3)] }
	agree, matched := 0, 0
	for range 200000 {
		r := rule{Detector: pick("netflow", "fileactivity", ""), SrcIP: pick("", "10.0.0.1", "10.0.0.2"),
			DstIP: pick("", "10.0.0.1", "10.0.0.2"), DstPort: port(), Proto: pick("", "tcp", "TCP", "udp", "Tcp"),
			Path: pick("", "/a", "/A", "/a/")}
		c := ctx{Detector: pick("netflow", "fileactivity", ""), SrcIP: pick("", "10.0.0.1", "10.0.0.2"),
			DstIP: pick("", "10.0.0.1", "10.0.0.2"), SrcPort: port(), DstPort: port(), Proto: pick("", "tcp", "tCP", "udp", "icmp"),
			Path: pick("", "/a", "/A", "/a/")}
		s, a := serverMatches(r, c), agentMatches(r, c)
		if s != a {
			t.Fatalf("rule %+v, finding %+v: server %v, agent %v", r, c, s, a)
		}
		agree++
		if s {
			matched++
		}
	}
	if matched == 0 || matched == agree {
		t.Fatalf("degenerate sample: %d of %d matched", matched, agree)
	}
}
