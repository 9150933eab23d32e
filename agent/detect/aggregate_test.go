package detect

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/plugins/sdk"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func anomaly(src, dst string, dport int, tsSec float64, score float32, flags int) sdk.Anomaly {
	return sdk.Anomaly{
		Score: score, Threshold: 1,
		TopFeatures: []sdk.Contribution{{Name: "syn_ratio", Contribution: score}},
		Context: map[string]string{
			sdk.ContextSrcIP: src, sdk.ContextDstIP: dst, sdk.ContextSrcPort: "40000", sdk.ContextDstPort: strconv.Itoa(dport),
			sdk.ContextProto: "tcp", ctxTCPFlags: strconv.Itoa(flags), ctxTimeNs: strconv.FormatInt(int64(tsSec*1e9), 10),
			ctxLength: "60", ctxModel: "nethost", ctxModelVersion: "1", ctxModelDigest: "sha256:ab",
		},
	}
}

func TestSeverity(t *testing.T) {
	for _, c := range []struct {
		ratio float64
		want  wirev1.Severity
	}{{1.01, wirev1.Severity_SEVERITY_LOW}, {1.5, wirev1.Severity_SEVERITY_MEDIUM}, {2.9, wirev1.Severity_SEVERITY_MEDIUM},
		{3, wirev1.Severity_SEVERITY_HIGH}, {9.99, wirev1.Severity_SEVERITY_HIGH}, {10, wirev1.Severity_SEVERITY_CRITICAL},
		{math.Inf(1), wirev1.Severity_SEVERITY_CRITICAL}, {math.NaN(), wirev1.Severity_SEVERITY_CRITICAL}} {
		if got := Severity(c.ratio); got != c.want {
			t.Errorf("Severity(%v) = %v, want %v", c.ratio, got, c.want)
		}
	}
}

func TestAggregateScan(t *testing.T) {
	a := NewAggregator(AggregatorConfig{Window: 30 * time.Second})
	for i := range 1000 {
		an := anomaly("10.99.66.6", "10.99.1.10", 1+i, 100+float64(i)/1000, 25, 0x02)
		if out := a.Add(&an); len(out) != 0 {
			t.Fatalf("finding before the window closed: %v", out)
		}
	}
	if out := a.Tick(int64(110e9)); len(out) != 0 {
		t.Fatalf("window still open, got %d findings", len(out))
	}
	out := a.Tick(int64(131e9))
	if len(out) != 1 {
		t.Fatalf("got %d findings, want 1", len(out))
	}
	f := out[0]
	if f.Count != 1000 || f.Bytes != 60000 || f.Context.SrcIp != "10.99.66.6" || f.Severity != wirev1.Severity_SEVERITY_CRITICAL {
		t.Errorf("finding %v", f)
	}
	want := "SYN scan-like: 1000 anomalous packets from 10.99.66.6 to 1 host, 1000 ports"
	if f.Summary != want {
		t.Errorf("summary %q, want %q", f.Summary, want)
	}
	if f.FirstSeenUnixNano != 100e9 || f.Context.DstPort != 1 || f.Model.Name != "nethost" || f.Model.Version != 1 {
		t.Errorf("first seen / context / model wrong: %v", f)
	}
	if len(a.Flush()) != 0 {
		t.Error("flush after close emitted again")
	}
}

// TestSummaryContentKinds: a finding whose leading feature is a content
// hint is named after it, whatever the packets' shape; other leading
// features keep the shape's name.
func TestSummaryContentKinds(t *testing.T) {
	for _, c := range []struct {
		lead, want string
	}{
		{"host_cmd_shell", "Command shell served: 3 anomalous packets from 10.99.0.10 to 1 host, 1 port"},
		{"host_http_injection", "Web attack (SQL injection or XSS): 3 anomalous packets from 10.99.0.10 to 1 host, 1 port"},
		{"host_http_traversal", "Web attack (path traversal): 3 anomalous packets from 10.99.0.10 to 1 host, 1 port"},
		{"host_icmp_data", "Covert data in ICMP echoes: 3 anomalous packets from 10.99.0.10 to 1 host, 1 port"},
		{"host_hex_data", "Hex-encoded data (C2-like): 3 anomalous packets from 10.99.0.10 to 1 host, 1 port"},
		{"host_cookie_reuse", "Hijacked web session (another client's session cookie): 3 anomalous packets from 10.99.0.10 to 1 host, 1 port"},
		{"host_dst_ports", "SYN burst: 3 anomalous packets from 10.99.0.10 to 1 host, 1 port"},
	} {
		a := NewAggregator(AggregatorConfig{})
		for i := range 3 {
			an := anomaly("10.99.0.10", "10.99.0.66", 4444, float64(i), 4, 0x02)
			an.TopFeatures = []sdk.Contribution{{Name: c.lead, Contribution: 0.5}, {Name: "host_L1_open_rate", Contribution: 0.1}}
			a.Add(&an)
		}
		out := a.Flush()
		if len(out) != 1 || out[0].Summary != c.want {
			t.Errorf("%s: findings %v, want one with summary %q", c.lead, out, c.want)
		}
	}
}

func TestAggregateFilters(t *testing.T) {
	cases := []struct {
		name  string
		score float32
		n     int
		want  int
	}{
		{"marginal noise (low severity)", 1.2, 50, 0},
		{"medium, too few packets", 2, 2, 0},
		{"medium, enough packets", 2, 3, 1},
		{"high, one packet", 4, 1, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := NewAggregator(AggregatorConfig{})
			for i := range c.n {
				an := anomaly("192.0.2.1", "192.0.2.2", 80, float64(i), c.score, 0x18)
				a.Add(&an)
			}
			if got := len(a.Flush()); got != c.want {
				t.Errorf("got %d findings, want %d", got, c.want)
			}
		})
	}
}

func TestAggregateUpdates(t *testing.T) {
	now := time.Unix(1000, 0)
	a := NewAggregator(AggregatorConfig{UpdateEvery: 5 * time.Second, FirstAfter: time.Second, Now: func() time.Time { return now }})
	add := func(n int, ts float64) {
		for range n {
			an := anomaly("10.0.0.1", "10.0.0.2", 22, ts, 5, 0x02)
			a.Add(&an)
		}
	}
	add(10, 1)
	if len(a.Tick(0)) != 0 {
		t.Fatal("emitted before FirstAfter")
	}
	now = now.Add(time.Second)
	first := a.Tick(0)
	if len(first) != 1 || first[0].Count != 10 {
		t.Fatalf("first emission %v", first)
	}
	now = now.Add(time.Second)
	add(5, 2)
	if len(a.Tick(0)) != 0 {
		t.Fatal("update before UpdateEvery")
	}
	now = now.Add(5 * time.Second)
	upd := a.Tick(0)
	if len(upd) != 1 || upd[0].Count != 15 || upd[0].FirstSeenUnixNano != first[0].FirstSeenUnixNano {
		t.Fatalf("update %v", upd)
	}
	now = now.Add(10 * time.Second)
	if len(a.Tick(0)) != 0 {
		t.Fatal("unchanged finding re-emitted")
	}
	if len(a.Flush()) != 0 {
		t.Fatal("unchanged finding emitted at flush")
	}
}

// TestAggregateNaNScore: an anomaly with a NaN score (flagged by the plugin
// as the most anomalous) counts as the largest ratio: a NaN first used to
// stay the finding's largest ratio (nothing compares greater) and keep it
// low, below MinSeverity, however strong the anomalies after it.
func TestAggregateNaNScore(t *testing.T) {
	nan := float32(math.NaN())
	for _, scores := range [][]float32{{nan, 25}, {25, nan}} {
		a := NewAggregator(AggregatorConfig{PacketTime: true})
		for i := range 101 {
			score := scores[1]
			if i == 0 {
				score = scores[0]
			}
			an := anomaly("10.0.0.1", "10.0.0.2", 80, 1+float64(i)/100, score, 0x02)
			if out := a.Add(&an); len(out) != 0 {
				t.Fatalf("finding before the end: %v", out)
			}
		}
		out := a.Flush()
		if len(out) != 1 {
			t.Fatalf("scores %v: %d findings, want 1", scores, len(out))
		}
		if f := out[0]; f.Severity != wirev1.Severity_SEVERITY_CRITICAL || f.Score != wirev1.MaxScore || f.Count != 101 {
			t.Fatalf("scores %v: finding %v, want critical with score %g", scores, f, wirev1.MaxScore)
		}
	}
}

// TestFindingNumbersFinite: a finding never carries a number that is not
// finite (the server refuses the whole batch, encoding/json fails): NaN
// and infinite scores and contributions are capped at wirev1.MaxScore, and a
// score/threshold ratio of the capped values stays finite.
func TestFindingNumbersFinite(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, c := range []struct{ score, thr, contrib float32 }{
		{float32(math.NaN()), 1, float32(math.NaN())},
		{inf, 1e-30, inf},
		{inf, float32(math.Inf(1)), -inf},
		{5, float32(math.NaN()), 5},
	} {
		a := NewAggregator(AggregatorConfig{PacketTime: true, MinPackets: 1, MinSeverity: wirev1.Severity_SEVERITY_LOW})
		an := anomaly("10.0.0.1", "10.0.0.2", 80, 1, c.score, 0x02)
		an.Threshold = c.thr
		an.TopFeatures = []sdk.Contribution{{Name: "x", Contribution: c.contrib}}
		a.Add(&an)
		out := a.Flush()
		if len(out) != 1 {
			t.Fatalf("%+v: %d findings", c, len(out))
		}
		f := out[0]
		nums := []float64{f.Score, f.Threshold, f.TopFeatures[0].Contribution}
		if f.Threshold > 0 {
			nums = append(nums, f.Score/f.Threshold)
		}
		for _, v := range nums {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%+v: finding with a number not finite: %v", c, f)
			}
		}
		if _, err := json.Marshal(nums); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if f.Severity != wirev1.Severity_SEVERITY_CRITICAL {
			t.Errorf("%+v: severity %v, want critical", c, f.Severity)
		}
	}
}

func TestAggregateEviction(t *testing.T) {
	a := NewAggregator(AggregatorConfig{MaxOpen: 2})
	var out []*wirev1.Finding
	for i := range 3 {
		an := anomaly("10.0.0."+strconv.Itoa(i), "10.0.0.100", 80, float64(i), 20, 0x18)
		out = append(out, a.Add(&an)...)
	}
	if len(out) != 1 || !strings.Contains(out[0].Summary, "10.0.0.0") {
		t.Fatalf("evicted %v", out)
	}
	if n := len(a.Flush()); n != 2 {
		t.Fatalf("flush %d", n)
	}
}

// TestAggregateEvictionOrder: beyond MaxOpen, the open finding evicted is
// the least recently updated, by last packet time (an anomaly older than a
// finding's last packet does not refresh it); of equal last packet times,
// the first opened goes first (it used to depend on map order, so an
// offline scan's output was not reproducible).
func TestAggregateEvictionOrder(t *testing.T) {
	a := NewAggregator(AggregatorConfig{MaxOpen: 4, MinPackets: 1, MinSeverity: wirev1.Severity_SEVERITY_LOW})
	add := func(src string, ts float64) []*wirev1.Finding {
		an := anomaly(src, "10.0.0.100", 80, ts, 20, 0x18)
		out := a.Add(&an)
		checkByLast(t, a)
		return out
	}
	for i, src := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"} {
		add(src, float64(1+i))
	}
	add("10.0.0.1", 5)   // last 5: now the most recent
	add("10.0.0.3", 0.5) // older than its last (3): stays third
	var evicted []string
	for i := range 4 {
		for _, f := range add("10.0.1."+strconv.Itoa(i), float64(6+i)) {
			evicted = append(evicted, f.Context.SrcIp)
		}
	}
	if want := []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.1"}; !slices.Equal(evicted, want) {
		t.Fatalf("evicted %v, want %v", evicted, want)
	}

	// Ties: 16 sources at one packet time leave in the order they opened.
	for range 5 {
		a = NewAggregator(AggregatorConfig{MaxOpen: 16, MinPackets: 1, MinSeverity: wirev1.Severity_SEVERITY_LOW})
		var want []string
		for i := range 16 {
			src := "10.0.2." + strconv.Itoa(i)
			want = append(want, src)
			add(src, 10)
		}
		evicted = evicted[:0]
		for i := range 16 {
			for _, f := range add("10.0.3."+strconv.Itoa(i), 11) {
				evicted = append(evicted, f.Context.SrcIp)
			}
		}
		if !slices.Equal(evicted, want) {
			t.Fatalf("ties evicted in order %v, want %v", evicted, want)
		}
	}

	// Random sources, times (ties, out of order) and window rollovers.
	rng := rand.New(rand.NewPCG(1, 2))
	a = NewAggregator(AggregatorConfig{MaxOpen: 64, Window: 5 * time.Second, MinPackets: 1, MinSeverity: wirev1.Severity_SEVERITY_LOW})
	for i := range 5000 {
		ts := float64(i)/100 + float64(rng.IntN(300))/100
		add("10.1.0."+strconv.Itoa(rng.IntN(100)), ts)
		if i%1000 == 999 {
			a.Tick(int64(ts * 1e9))
			checkByLast(t, a)
		}
	}
	a.Flush()
	checkByLast(t, a)
}

// checkByLast checks that a.byLast holds exactly the open findings, each
// at its index, with the least recently updated at the root.
func checkByLast(t *testing.T, a *Aggregator) {
	t.Helper()
	if len(a.byLast) != len(a.open) {
		t.Fatalf("%d findings in the eviction heap, %d open", len(a.byLast), len(a.open))
	}
	var oldest *agg
	for i, g := range a.byLast {
		if g.idx != i || a.open[g.key] != g {
			t.Fatalf("heap entry %d: %s at index %d, open %v", i, g.key, g.idx, a.open[g.key] == g)
		}
		if oldest == nil || g.last < oldest.last || (g.last == oldest.last && g.seq < oldest.seq) {
			oldest = g
		}
	}
	if oldest != nil && a.byLast[0] != oldest {
		t.Fatalf("heap root %s (last %d), oldest %s (last %d)", a.byLast[0].key, a.byLast[0].last, oldest.key, oldest.last)
	}
}

// BenchmarkAggregatorAddEvict: anomalies of new sources (a random-source
// flood) with MaxOpen findings open, each evicting the oldest.
func BenchmarkAggregatorAddEvict(b *testing.B) {
	a := NewAggregator(AggregatorConfig{})
	ans := make([]sdk.Anomaly, 1<<16)
	for i := range ans {
		ans[i] = anomaly(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), "10.0.0.100", 80, 0, 2, 0x02)
	}
	ts := int64(0)
	next := func(i int) *sdk.Anomaly {
		an := &ans[i%len(ans)]
		ts += 1000
		an.Context[ctxTimeNs] = strconv.FormatInt(ts, 10)
		return an
	}
	for i := range a.cfg.MaxOpen {
		a.Add(next(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		a.Add(next(a.cfg.MaxOpen + i))
	}
}

// TestAggregatePreMerged: one pre-aggregated anomaly (sdk.Anomaly.Aggregate)
// counts like the packets it stands for.
func TestAggregatePreMerged(t *testing.T) {
	per := NewAggregator(AggregatorConfig{PacketTime: true})
	pre := NewAggregator(AggregatorConfig{PacketTime: true})
	g := &sdk.Aggregate{}
	var first sdk.Anomaly
	for i := range 500 {
		an := anomaly("10.99.66.6", "10.99.1."+strconv.Itoa(i%7), 1+i%300, 100+float64(i)/1000, 2+float32(i%13), 0x02)
		per.Add(&an)
		if i == 0 {
			first = an
			g.FirstNs = 100e9
		}
		if an.Score > first.Score {
			first.Score, first.TopFeatures = an.Score, an.TopFeatures
		}
		g.Count++
		g.LastNs = int64((100 + float64(i)/1000) * 1e9)
		g.Bytes += 60
		g.TCPSyn++
	}
	for p := range 300 {
		g.DstPorts = append(g.DstPorts, uint16(1+p))
	}
	for h := range 7 {
		g.DstAddrs = append(g.DstAddrs, netip.MustParseAddr("10.99.1."+strconv.Itoa(h)))
	}
	first.Aggregate = g
	pre.Add(&first)
	want, got := per.Flush(), pre.Flush()
	if len(want) != 1 || len(got) != 1 || !proto.Equal(want[0], got[0]) {
		t.Fatalf("pre-merged %v\nper packet %v", got, want)
	}
	if a, _ := pre.Stats(); a != 500 {
		t.Errorf("counted %d anomalies, want 500", a)
	}
}

// TestAggregatePacketTimeIgnoresTick: offline (PacketTime), the reader's
// packet time given to Tick, which runs ahead of the scored anomalies by a
// wall-clock-dependent lag, closes no window; windows close on the
// anomalies' own time, in a fixed order.
func TestAggregatePacketTimeIgnoresTick(t *testing.T) {
	a := NewAggregator(AggregatorConfig{PacketTime: true, Window: 30 * time.Second})
	for i := range 10 {
		an := anomaly("10.0.0."+strconv.Itoa(1+i%2), "10.0.1.1", 80+i, 100+float64(i), 25, 0x02)
		a.Add(&an)
	}
	if out := a.Tick(int64(500e9)); len(out) != 0 {
		t.Fatalf("Tick closed %d findings in PacketTime mode", len(out))
	}
	late := anomaly("10.0.0.1", "10.0.1.1", 99, 108.5, 25, 0x02) // still in the first window
	a.Add(&late)
	// An anomaly of a third source 40 s later closes both windows, in
	// order of first packet.
	far := anomaly("10.0.0.3", "10.0.1.1", 99, 150, 25, 0x02)
	out := a.Add(&far)
	if len(out) != 2 || out[0].Context.SrcIp != "10.0.0.1" || out[0].Count != 6 || out[1].Count != 5 {
		t.Fatalf("sweep emitted %v", out)
	}
}

// TestAggPortsDistinct: distinct destination ports are counted exactly,
// duplicates included, across the switch from the short list to the bitmap.
func TestAggPortsDistinct(t *testing.T) {
	for _, n := range []int{0, 1, fewPortsMax - 1, fewPortsMax, fewPortsMax + 1, 1000, 65536} {
		var g agg
		for round := range 2 { // every port twice, the second round after the switch
			for i := range n {
				p := uint64(i*7919) % 65536 // a permutation of 0..65535
				g.addPort(p)
				if round == 0 && g.nports != i+1 {
					t.Fatalf("n=%d: after %d ports nports = %d", n, i+1, g.nports)
				}
			}
		}
		g.addPort(65536) // out of range: ignored
		if g.nports != n {
			t.Errorf("n=%d: nports = %d after duplicates", n, g.nports)
		}
		if (g.ports != nil) != (n > fewPortsMax) {
			t.Errorf("n=%d: bitmap allocated = %v", n, g.ports != nil)
		}
	}
}

// TestAggregatePersistent checks the rule for low-and-slow sources
// (AggregatorConfig.PersistWindows): windows in a row of low-severity
// anomalies raise medium findings from the fifth window on, and nothing
// else does.
func TestAggregatePersistent(t *testing.T) {
	type burst struct {
		every   float64 // seconds between anomalies
		n       int     // anomalies
		score   float32
		startAt float64
	}
	cases := []struct {
		name    string
		persist int
		bursts  []burst
		want    []wirev1.Severity
		runs    []int // windows in a row named in each finding's summary (0: none)
	}{
		{name: "beacon for 5 min", bursts: []burst{{every: 7, n: 43, score: 1.2}},
			// windows of 30 s hold 5 anomalies each (0, 7, ..., 28 s; the
			// next starts at 35 s): 9 windows, the 5th to 9th reported
			want: []wirev1.Severity{2, 2, 2, 2, 2}, runs: []int{5, 6, 7, 8, 9}},
		{name: "rule off", persist: -1, bursts: []burst{{every: 7, n: 43, score: 1.2}}},
		{name: "four windows only", bursts: []burst{{every: 7, n: 20, score: 1.2}}},
		{name: "too few anomalies per window", bursts: []burst{{every: 16, n: 30, score: 1.2}}},
		{name: "pauses break the run", bursts: []burst{
			{every: 7, n: 15, score: 1.2}, {every: 7, n: 15, score: 1.2, startAt: 200}, {every: 7, n: 15, score: 1.2, startAt: 400}}},
		{name: "medium windows keep their severity", bursts: []burst{{every: 7, n: 30, score: 2}},
			want: []wirev1.Severity{2, 2, 2, 2, 2, 2}, runs: []int{0, 0, 0, 0, 5, 6}},
		{name: "high windows keep their severity", bursts: []burst{{every: 7, n: 30, score: 4}},
			want: []wirev1.Severity{3, 3, 3, 3, 3, 3}, runs: []int{0, 0, 0, 0, 5, 6}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := NewAggregator(AggregatorConfig{PacketTime: true, PersistWindows: c.persist})
			var out []*wirev1.Finding
			for _, b := range c.bursts {
				for i := range b.n {
					an := anomaly("192.0.2.7", "198.51.100.1", 443, 1000+b.startAt+float64(i)*b.every, b.score, 0x02)
					out = append(out, a.Add(&an)...)
				}
			}
			out = append(out, a.Flush()...)
			if len(out) != len(c.want) {
				for _, f := range out {
					t.Logf("%v %s", f.Severity, f.Summary)
				}
				t.Fatalf("got %d findings, want %d", len(out), len(c.want))
			}
			for i, f := range out {
				if f.Severity != c.want[i] {
					t.Errorf("finding %d: severity %v, want %v", i, f.Severity, c.want[i])
				}
				named := strings.Contains(f.Summary, "persistent: anomalous in ")
				if want := c.runs[i] > 0; named != want {
					t.Errorf("finding %d: summary %q, persistent named %v, want %v", i, f.Summary, named, want)
				} else if want && !strings.Contains(f.Summary, " in "+strconv.Itoa(c.runs[i])+" windows in a row") {
					t.Errorf("finding %d: summary %q, want a run of %d windows", i, f.Summary, c.runs[i])
				}
			}
		})
	}
}

// TestAggregatePersistentBounded checks that the runs remembered stay within
// MaxOpen however many sources pass.
func TestAggregatePersistentBounded(t *testing.T) {
	a := NewAggregator(AggregatorConfig{PacketTime: true, MaxOpen: 8})
	for s := range 200 {
		src := netip.AddrFrom4([4]byte{192, 0, 2, byte(s)}).String()
		for i := range 3 {
			an := anomaly(src, "198.51.100.1", 443, float64(s*40+i), 1.2, 0x02)
			a.Add(&an)
		}
		if len(a.open) > 8 || len(a.streaks) > 8 {
			t.Fatalf("after %d sources: %d open, %d runs remembered (max 8)", s+1, len(a.open), len(a.streaks))
		}
	}
	a.Flush()
	if len(a.streaks) > 8 {
		t.Fatalf("%d runs remembered (max 8)", len(a.streaks))
	}
}

// TestAggregatePersistentFlood: with more anomalous sources at once than
// MaxOpen, the runs remembered stay within it (new sources' runs are not
// followed while every remembered one is live).
func TestAggregatePersistentFlood(t *testing.T) {
	a := NewAggregator(AggregatorConfig{PacketTime: true, MaxOpen: 4})
	for i := range 60 { // 60 × 7 s: 7 minutes
		for s := range 10 {
			src := netip.AddrFrom4([4]byte{192, 0, 2, byte(s)}).String()
			an := anomaly(src, "198.51.100.1", 443, 1000+float64(i)*7+float64(s)*0.01, 1.2, 0x02)
			a.Add(&an)
			if len(a.streaks) > 4 {
				t.Fatalf("%d runs remembered (max 4)", len(a.streaks))
			}
		}
	}
	a.Flush()
	if len(a.streaks) > 4 {
		t.Fatalf("%d runs remembered after the flush (max 4)", len(a.streaks))
	}
}

// TestContentLedSinglePacket: one medium anomaly led by a content hint is
// a finding; one led by any other feature, or a content-led one below
// MinSeverity, is not.
func TestContentLedSinglePacket(t *testing.T) {
	for _, c := range []struct {
		lead  string
		score float32
		want  int
	}{
		{"host_icmp_data", 2, 1},
		{"host_cmd_shell", 2, 1},
		{"host_hex_data", 1.6, 1},
		{"host_cookie_reuse", 1.6, 1},
		{"host_http_injection", 1.6, 1},
		{"host_icmp_data", 1.2, 0}, // low: below MinSeverity
		{"host_L0.1_icmp_size", 2, 0},
		{"syn_ratio", 2.9, 0},
		{"syn_ratio", 3, 1}, // high: one packet is enough anyway
	} {
		a := NewAggregator(AggregatorConfig{})
		an := anomaly("10.99.0.48", "10.99.0.5", 0, 1, c.score, 0)
		an.TopFeatures = []sdk.Contribution{{Name: c.lead, Contribution: 0.5}}
		a.Add(&an)
		if out := a.Flush(); len(out) != c.want {
			t.Errorf("%s at %.1fx: %d findings, want %d", c.lead, c.score, len(out), c.want)
		}
	}
}

// arpAnomaly is an anomalous ARP reply (operation 2) from mac for ip, an
// ARP claim (the plugin's arp_claim) if claim.
func arpAnomaly(mac, ip, dst string, tsSec float64, score float32, claim bool) sdk.Anomaly {
	an := anomaly(ip, dst, 2, tsSec, score, 0)
	an.Context[sdk.ContextProto] = "arp"
	delete(an.Context, sdk.ContextSrcPort)
	delete(an.Context, ctxTCPFlags)
	an.Context[ctxSrcMAC] = mac
	if claim {
		an.Context[ctxARPClaim] = "1"
	}
	an.TopFeatures = []sdk.Contribution{{Name: "host_L0.1_arp_unsol_rate", Contribution: 0.5}}
	return an
}

// TestARPClaimSinglePacket: one anomalous ARP claim (an unsolicited reply
// or a new MAC for the address) is a finding from medium severity, named
// after the MAC that made the claim; other anomalous ARP and IP traffic
// still need MinPackets packets below high severity.
func TestARPClaimSinglePacket(t *testing.T) {
	const poisoner = "00:25:b3:bf:91:ee"
	for _, c := range []struct {
		what    string
		score   float32
		claim   bool
		ip      bool // an IP packet of the claimed address, not ARP
		want    int
		summary string
	}{
		{"claim", 1.8, true, false, 1, "ARP spoofing-like: 1 anomalous packet from " + poisoner + " (claiming 172.16.0.1) to 1 host"},
		{"claim", 1.5, true, false, 1, "ARP spoofing-like: "},
		{"claim, low", 1.2, true, false, 0, ""},
		{"other ARP", 2, false, false, 0, ""},
		{"other ARP, high", 3, false, false, 1, "ARP anomaly: 1 anomalous packet from 172.16.0.1 to 1 host"},
		{"IP", 2, false, true, 0, ""},
	} {
		a := NewAggregator(AggregatorConfig{})
		an := arpAnomaly(poisoner, "172.16.0.1", "172.16.0.107", 1, c.score, c.claim)
		if c.ip {
			an = anomaly("172.16.0.1", "172.16.0.107", 80, 1, c.score, 0x12)
			an.TopFeatures = []sdk.Contribution{{Name: "host_L0.1_arp_unsol_rate", Contribution: 0.5}}
		}
		a.Add(&an)
		out := a.Flush()
		if len(out) != c.want {
			t.Errorf("%s at %.1fx: %d findings, want %d", c.what, c.score, len(out), c.want)
			continue
		}
		if c.want == 1 && !strings.HasPrefix(out[0].GetSummary(), c.summary) {
			t.Errorf("%s: summary %q, want the prefix %q", c.what, out[0].GetSummary(), c.summary)
		}
		if c.want == 1 && out[0].GetContext().GetSrcMac() != poisoner {
			t.Errorf("%s: context MAC %q", c.what, out[0].GetContext().GetSrcMac())
		}
	}
}

// TestARPClaimsApart: the ARP claims of two MACs on one address and that
// address's own IP traffic make three findings, each with its MAC; an
// anomalous ARP reply that is no claim (a host answering for its own
// address while its traffic is anomalous) stays in its traffic's finding.
// The plugin's pre-aggregation keys sources the same way (plugins/netflow).
func TestARPClaimsApart(t *testing.T) {
	a := NewAggregator(AggregatorConfig{MinPackets: 1})
	const attacker, owner = "02:00:0a:63:00:42", "02:00:0a:63:00:0a"
	for i := range 4 {
		ts := 10 + float64(i)
		forged := arpAnomaly(attacker, "10.99.0.10", "10.99.0.20", ts, 8, true)
		if i == 0 { // the first forged reply replaced the owner's MAC
			forged.Context[ctxARPPrevMAC] = owner
		}
		for _, an := range []sdk.Anomaly{
			forged,
			arpAnomaly(owner, "10.99.0.10", "10.99.0.66", ts+0.1, 8, true),
			anomaly("10.99.0.10", "10.99.0.20", 443, ts+0.2, 8, 0x12),
			arpAnomaly(owner, "10.99.0.10", "10.99.0.21", ts+0.3, 8, false),
		} {
			a.Add(&an)
		}
	}
	out := a.Flush()
	if len(out) != 3 {
		t.Fatalf("%d findings, want 3: %v", len(out), out)
	}
	macs := map[string]bool{}
	for _, f := range out {
		want, claim := uint64(4), strings.HasPrefix(f.GetSummary(), "ARP spoofing-like: ")
		if !claim {
			want = 8
		}
		if f.GetPackets() != want || f.GetContext().GetSrcIp() != "10.99.0.10" {
			t.Errorf("finding %q: %d packets, want %d, source %s", f.GetSummary(), f.GetPackets(), want, f.GetContext().GetSrcIp())
		}
		if claim {
			macs[f.GetContext().GetSrcMac()] = true
			want := f.GetContext().GetSrcMac() + " (claiming 10.99.0.10)"
			if f.GetContext().GetSrcMac() == attacker {
				want = attacker + " (claiming 10.99.0.10, announced before by " + owner + ")"
			}
			if !strings.Contains(f.GetSummary(), want) {
				t.Errorf("summary %q, want %q in it", f.GetSummary(), want)
			}
		}
	}
	if len(macs) != 2 {
		t.Errorf("ARP claim findings from %v, want both MACs", macs)
	}
}

// FuzzAggregatorAdd: whatever a detector plugin (a separate process) puts
// in an anomaly's context, score and top features, the aggregator neither
// panics nor emits a finding without a count, a source key's summary or a
// severity, or with a number the server refuses (not finite), and every
// anomaly is counted once.
func FuzzAggregatorAdd(f *testing.F) {
	f.Add("10.99.0.10", "02:00:0a:63:00:42", "arp", "1", "02:00:0a:63:00:0a", "1000000000", "42", "2", "", float32(8), float32(1), "host_L0.1_arp_unsol_rate", uint8(3))
	f.Add("", "", "tcp", "", "", "x", "-1", "99999", "300", float32(-1), float32(0), "", uint8(1))
	f.Add("::1", "zz", "udp", "0", "", "9223372036854775807", "18446744073709551616", "53", "2", float32(2), float32(1), "host_cmd_shell", uint8(200))
	f.Add("10.0.0.1", "", "tcp", "", "", "1", "60", "80", "2", float32(math.NaN()), float32(1), "syn_ratio", uint8(4))
	f.Add("10.0.0.1", "", "tcp", "", "", "1", "60", "80", "2", float32(math.Inf(1)), float32(math.Inf(1)), "syn_ratio", uint8(2))
	f.Fuzz(func(t *testing.T, src, mac, proto, claim, prev, ts, length, dport, flags string, score, thr float32, lead string, n uint8) {
		a := NewAggregator(AggregatorConfig{MinPackets: 1, MinSeverity: wirev1.Severity_SEVERITY_LOW, PacketTime: true})
		var out []*wirev1.Finding
		for i := range int(n%8) + 1 {
			an := sdk.Anomaly{Score: score, Threshold: thr, TopFeatures: []sdk.Contribution{{Name: lead, Contribution: score}},
				Context: map[string]string{sdk.ContextSrcIP: src, ctxSrcMAC: mac, sdk.ContextProto: proto, ctxARPClaim: claim,
					ctxARPPrevMAC: prev, ctxTimeNs: ts, ctxLength: length, sdk.ContextDstPort: dport, ctxTCPFlags: flags,
					sdk.ContextDstIP: strconv.Itoa(i)}}
			out = append(out, a.Add(&an)...)
		}
		out = append(out, a.Flush()...)
		var packets uint64
		for _, fd := range out {
			if fd.GetPackets() == 0 || fd.GetSummary() == "" || fd.GetSeverity() == wirev1.Severity_SEVERITY_UNSPECIFIED {
				t.Fatalf("finding %v", fd)
			}
			nums := []float64{fd.GetScore(), fd.GetThreshold()}
			for _, tf := range fd.GetTopFeatures() {
				nums = append(nums, tf.GetContribution())
			}
			for _, v := range nums {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("finding with a number not finite: %v", fd)
				}
			}
			packets += fd.GetPackets()
		}
		if anomalies, _ := a.Stats(); anomalies != uint64(n%8)+1 {
			t.Fatalf("%d anomalies counted, %d added", anomalies, n%8+1)
		}
		if packets > uint64(n%8)+1 {
			t.Fatalf("findings hold %d packets, %d added", packets, n%8+1)
		}
	})
}

// TestAggregateLeadIn: a finding takes the lead-in of the anomaly that
// opened it; a second one (a restarted plugin) replaces it only if it
// reaches further back, and is never added to it; a lead-in that
// sdk.Aggregate.ValidLead refuses, or per-packet anomalies, give none; the
// summary says since when the source was active.
func TestAggregateLeadIn(t *testing.T) {
	pre := func(first, leadFirst float64, leadPkts uint64) *sdk.Anomaly {
		an := anomaly("10.99.66.6", "10.99.1.1", 22, first, 5, 0x02)
		an.Aggregate = &sdk.Aggregate{Count: 3, FirstNs: int64(first * 1e9), LastNs: int64((first + 1) * 1e9), Bytes: 180,
			LeadCount: leadPkts, LeadBytes: 60 * leadPkts}
		if leadPkts > 0 || leadFirst != 0 {
			an.Aggregate.LeadFirstNs = int64(leadFirst * 1e9)
		}
		return &an
	}
	for _, tc := range []struct {
		name      string
		in        []*sdk.Anomaly
		wantFirst float64 // 0: no lead-in
		wantPkts  uint64
		wantText  string
	}{
		{"one", []*sdk.Anomaly{pre(100, 94.5, 12)}, 94.5, 12, "; active since 5.5s before (12 earlier packets)"},
		{"one packet", []*sdk.Anomaly{pre(100, 99.75, 1)}, 99.75, 1, "; active since 250ms before (1 earlier packet)"},
		{"none", []*sdk.Anomaly{pre(100, 0, 0)}, 0, 0, ""},
		{"a later one merged", []*sdk.Anomaly{pre(100, 94.5, 12), pre(102, 97, 30)}, 94.5, 12, ""},
		{"an earlier one merged", []*sdk.Anomaly{pre(100, 96, 12), pre(99, 90, 30)}, 90, 30, "; active since 9s before (30 earlier packets)"},
		{"after the first anomaly", []*sdk.Anomaly{pre(100, 100.5, 4)}, 0, 0, ""},
		{"too long before", []*sdk.Anomaly{pre(400, 99, 4)}, 0, 0, ""},
		{"a time without packets", []*sdk.Anomaly{pre(100, 95, 0)}, 0, 0, ""},
		{"per-packet anomalies", func() []*sdk.Anomaly {
			a, b := anomaly("10.99.66.6", "10.99.1.1", 22, 100, 5, 2), anomaly("10.99.66.6", "10.99.1.1", 23, 100.5, 5, 2)
			c := anomaly("10.99.66.6", "10.99.1.1", 24, 101, 5, 2)
			return []*sdk.Anomaly{&a, &b, &c}
		}(), 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAggregator(AggregatorConfig{PacketTime: true})
			for _, an := range tc.in {
				if out := a.Add(an); len(out) != 0 {
					t.Fatalf("emitted early: %v", out)
				}
			}
			fs := a.Flush()
			if len(fs) != 1 {
				t.Fatalf("%d findings", len(fs))
			}
			f := fs[0]
			if got := float64(f.LeadInUnixNano) / 1e9; got != tc.wantFirst || f.LeadInPackets != tc.wantPkts ||
				f.LeadInBytes != 60*tc.wantPkts || !wirev1.ValidLeadIn(f) {
				t.Fatalf("lead-in %d packets (%d bytes) from %.3f s; want %d from %.3f s: %v", f.LeadInPackets, f.LeadInBytes, got, tc.wantPkts, tc.wantFirst, f)
			}
			has := strings.Contains(f.Summary, "; active since ")
			if has != (tc.wantFirst != 0) || (tc.wantText != "" && !strings.HasSuffix(f.Summary, tc.wantText)) {
				t.Fatalf("summary %q, want suffix %q", f.Summary, tc.wantText)
			}
		})
	}
}
