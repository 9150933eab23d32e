package detect

import (
	"container/heap"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Context keys the netflow plugin adds to sdk.Anomaly.Context (see
// plugins/netflow; repeated here because the agent does not import plugins).
const (
	ctxTimeNs       = "ts_ns"
	ctxLength       = "len"
	ctxTCPFlags     = "tcp_flags"
	ctxSrcMAC       = "src_mac"
	ctxARPClaim     = "arp_claim"
	ctxARPPrevMAC   = "arp_prev_mac"
	ctxModel        = "model"
	ctxModelVersion = "model_version"
	ctxModelDigest  = "model_digest"
	// the beacon rule's evidence (plugins/netflow beacon.go), on an anomaly
	// led by the pseudo-feature "beacon"
	ctxBeaconPeriodNs    = "beacon_period_ns"
	ctxBeaconConnections = "beacon_connections"
	ctxBeaconDst         = "beacon_dst"
)

// Severity from the ratio of the largest score to its threshold. +Inf (a
// NaN or infinite score, or no positive threshold: the plugins flag a NaN
// score as the most anomalous) and NaN are critical.
func Severity(ratio float64) wirev1.Severity {
	switch {
	case ratio >= 10 || math.IsNaN(ratio):
		return wirev1.Severity_SEVERITY_CRITICAL
	case ratio >= 3:
		return wirev1.Severity_SEVERITY_HIGH
	case ratio >= 1.5:
		return wirev1.Severity_SEVERITY_MEDIUM
	default:
		return wirev1.Severity_SEVERITY_LOW
	}
}

// ParseSeverity parses a severity name: low, medium, high or critical (any
// case).
func ParseSeverity(name string) (wirev1.Severity, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "low":
		return wirev1.Severity_SEVERITY_LOW, nil
	case "medium":
		return wirev1.Severity_SEVERITY_MEDIUM, nil
	case "high":
		return wirev1.Severity_SEVERITY_HIGH, nil
	case "critical":
		return wirev1.Severity_SEVERITY_CRITICAL, nil
	}
	return wirev1.Severity_SEVERITY_UNSPECIFIED, fmt.Errorf("severity %q: want low, medium, high or critical", name)
}

// AggregatorConfig tunes the aggregation of anomalous packets into findings.
type AggregatorConfig struct {
	// Window is the span (packet time) of one finding per source: anomalous
	// packets of a source within Window of its first one merge into one
	// finding. Default 30 s.
	Window time.Duration
	// UpdateEvery, when > 0, re-emits an open finding whose counts changed
	// at most this often (wall clock), so that a long scan is reported while
	// it runs. 0 (offline scans): a finding is emitted once, when its window
	// closes or at the end.
	UpdateEvery time.Duration
	// FirstAfter delays the first emission of a new finding (wall clock) to
	// gather its first packets. Default 1 s; only with UpdateEvery > 0.
	FirstAfter time.Duration
	// MinPackets is the number of anomalous packets a source needs within a
	// window before its finding is emitted (isolated outliers of benign
	// traffic stay below it), unless the severity is high or critical or
	// the finding's leading feature is one of the decoder's content hints
	// (contentKinds): a shell banner, an attack in a request, covert
	// data in an echo, hex-encoded ciphertext or another client's session
	// cookie is evidence in the payload, not a statistical outlier, and
	// one such packet is worth a finding. Nor does an
	// anomalous ARP claim on an address (an unsolicited reply, a new MAC
	// for the address) need more than one packet (arpClaim). Default 3.
	MinPackets uint64
	// MinSeverity is the lowest severity emitted (default medium: an
	// aggregate whose largest score stays under 1.5x its threshold is the
	// marginal noise of a model calibrated at a 0.1% per-packet FPR, which
	// any busy benign source accumulates).
	MinSeverity wirev1.Severity
	// PersistWindows reports low-and-slow sources: a source whose
	// anomalies fill this many windows in a row (each with at least
	// MinPackets anomalous packets, each starting within Window of the
	// previous one's last anomaly) gets a finding for every further such
	// window even below MinSeverity, raised to medium. A beacon scores
	// under 1.5x its threshold packet by packet (below MinSeverity) but
	// keeps doing so for minutes, which isolated benign outliers do not.
	// Default 5 (at least two minutes at the default window); negative:
	// off.
	PersistWindows int
	// MaxOpen bounds the open findings (sources) and the sources whose
	// run of windows is remembered (PersistWindows); beyond it, the oldest
	// open finding is closed and emitted early, and the runs that ended
	// are forgotten (if none has, a new source's run is not followed).
	// Default 4096.
	MaxOpen int
	// PacketTime stamps findings with their last packet's time instead of
	// the wall clock, and closes windows on the anomalies' packet time only
	// (offline scans: reproducible output; see Tick).
	PacketTime bool
	// Now is the wall clock (tests).
	Now func() time.Time
}

func (c *AggregatorConfig) defaults() {
	if c.Window <= 0 {
		c.Window = 30 * time.Second
	}
	if c.FirstAfter <= 0 {
		c.FirstAfter = time.Second
	}
	if c.MinPackets == 0 {
		c.MinPackets = 3
	}
	if c.MinSeverity == wirev1.Severity_SEVERITY_UNSPECIFIED {
		c.MinSeverity = wirev1.Severity_SEVERITY_MEDIUM
	}
	if c.MaxOpen <= 0 {
		c.MaxOpen = 4096
	}
	if c.PersistWindows == 0 {
		c.PersistWindows = DefaultPersistWindows
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// DefaultPersistWindows is the default AggregatorConfig.PersistWindows.
const DefaultPersistWindows = 5

// maxDistinct bounds the distinct hosts remembered per finding.
const maxDistinct = 4096

// agg is one open finding: the anomalies of one source in one window.
// fewPortsMax is how many distinct destination ports an open finding keeps
// in a list before it switches to a bitmap.
const fewPortsMax = 16

type agg struct {
	key         string
	first, last int64 // packet time, ns
	// seq numbers the open findings in the order they opened, and idx is
	// g's place in Aggregator.byLast (eviction order).
	seq              uint64
	idx              int
	count, bytes     uint64
	syn, icmp, arp   uint64
	udp              uint64
	maxRatio         float64
	maxScore, maxThr float64
	top              []sdk.Contribution
	model            *wirev1.ModelRef
	ctx              *wirev1.FindingContext
	// arpPrev is, for ARP claims, the MAC that announced the address before
	// the group's first claim, if that claim changed it (the plugin's
	// arp_prev_mac).
	arpPrev string
	// Destination ports: the first few in a list, then a bitmap of all
	// 65536 (8 KB, allocated only for sources that reach that many: most
	// findings name one or a few ports, and a full bitmap per open finding
	// was most of the agent's allocations during a scan).
	fewPorts       [fewPortsMax]uint16
	ports          *[1024]uint64
	nports         int
	hosts          map[string]struct{}
	hostsSaturated bool

	created  time.Time // wall
	lastEmit time.Time // wall, zero: never emitted
	emitted  uint64    // count at the last emission

	// run is the number of windows in a row of this source, this one
	// included, and runFirst the first packet time of the first of them;
	// set when the window closes (see persist).
	run      int
	runFirst int64

	// The lead-in (sdk.Aggregate.LeadFirstNs, LeadCount, LeadBytes): the
	// source's packets just before its first anomalous one, as the
	// detector saw them; leadFirst 0: none.
	leadFirst           int64
	leadPkts, leadBytes uint64

	// The beacon rule's evidence, from its latest anomaly in the group:
	// the median interval, the connections seen, and where they go
	// (address:port); beaconPeriod 0: none.
	beaconPeriod int64
	beaconConns  uint64
	beaconDst    string
}

// streak is a source's run of consecutive qualifying windows
// (AggregatorConfig.PersistWindows).
type streak struct {
	n     int
	first int64 // first packet time of the run's first window
	last  int64 // last packet time of its last window
}

// Aggregator merges anomalous packets into findings, per source address
// and window.
//
// Emission semantics: an open finding (one source, one window) is emitted
//   - when its window closes (packet time passed first_seen + Window), at
//     the end of the stream, or when evicted (MaxOpen), if its counts changed
//     since its last emission;
//   - and, with UpdateEvery > 0 (live capture), FirstAfter after its first
//     anomaly and then at most every UpdateEvery while its counts change.
//
// Every emission is a new Finding (the spool gives it a new seq) carrying the
// cumulative counts: updates of one finding share detector, context.src_ip
// and first_seen, and a consumer keeps the one with the largest count.
// Nothing is emitted below MinSeverity, nor before MinPackets anomalous
// packets unless the severity is high or critical, a content hint leads or
// the anomalies are ARP claims on an address.
type Aggregator struct {
	cfg  AggregatorConfig
	mu   sync.Mutex
	open map[string]*agg
	// byLast holds the open findings, least recently updated (smallest
	// last packet time, then first opened) first: evictOldest takes its
	// root instead of scanning MaxOpen findings for every new source of a
	// flood. opened numbers the findings (agg.seq).
	byLast lastHeap
	opened uint64
	// anomalies seen and findings emitted
	anomalies, findings uint64
	// swept is the packet-time grid point of the last sweep (PacketTime).
	swept int64
	// streaks are the runs of windows of recently closed sources
	// (PersistWindows), at most MaxOpen; pruned is the packet time of
	// their last pruning.
	streaks map[string]streak
	pruned  int64
}

// NewAggregator returns an empty aggregator.
func NewAggregator(cfg AggregatorConfig) *Aggregator {
	cfg.defaults()
	return &Aggregator{cfg: cfg, open: map[string]*agg{}, streaks: map[string]streak{}}
}

// Add merges one anomaly (as the netflow plugin reports it: one anomalous
// packet, or with sdk.Anomaly.Aggregate several of one source). It returns
// findings that had to be closed (window rolled over, or evicted).
func (a *Aggregator) Add(an *sdk.Anomaly) []*wirev1.Finding {
	c := an.Context
	key := sourceKey(c)
	pre := an.Aggregate
	var ts, lastTs int64
	var count, length uint64
	if pre != nil {
		ts, lastTs, count, length = pre.FirstNs, pre.LastNs, an.Records(), pre.Bytes
		if lastTs < ts {
			lastTs = ts
		}
	} else {
		ts, _ = strconv.ParseInt(c[ctxTimeNs], 10, 64)
		length, _ = strconv.ParseUint(c[ctxLength], 10, 64)
		lastTs, count = ts, 1
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.anomalies += count
	var out []*wirev1.Finding
	if a.cfg.PacketTime {
		out = a.sweep(ts, out)
	}
	g := a.open[key]
	if g != nil && ts-g.first > int64(a.cfg.Window) {
		if f := a.finish(g); f != nil {
			out = append(out, f)
		}
		a.remove(g)
		g = nil
	}
	if g == nil {
		if len(a.open) >= a.cfg.MaxOpen {
			if f := a.evictOldest(); f != nil {
				out = append(out, f)
			}
		}
		a.opened++
		g = &agg{key: key, first: ts, last: ts, seq: a.opened, created: a.cfg.Now(), hosts: map[string]struct{}{}}
		g.ctx = &wirev1.FindingContext{
			SrcIp: c[sdk.ContextSrcIP], DstIp: c[sdk.ContextDstIP], Proto: c[sdk.ContextProto], SrcMac: c[ctxSrcMAC],
		}
		if c[ctxARPClaim] == "1" {
			g.arpPrev = c[ctxARPPrevMAC]
		}
		if v, err := strconv.ParseUint(c[sdk.ContextSrcPort], 10, 16); err == nil {
			g.ctx.SrcPort = uint32(v)
		}
		if v, err := strconv.ParseUint(c[sdk.ContextDstPort], 10, 16); err == nil {
			g.ctx.DstPort = uint32(v)
		}
		a.open[key] = g
		heap.Push(&a.byLast, g)
	}
	g.count += count
	g.bytes += length
	if ts < g.first {
		g.first = ts
	}
	if lastTs > g.last {
		g.last = lastTs
		heap.Fix(&a.byLast, g.idx)
	}
	if pre != nil {
		g.addAggregate(pre)
		// The detector attaches a lead-in to the anomaly that opens a
		// source's window; should another one come (a plugin restarted, or
		// its window mirror differs from this aggregator's), the earliest
		// is kept, not added: lead-ins of one source overlap.
		if pre.LeadCount > 0 && pre.ValidLead() && (g.leadFirst == 0 || pre.LeadFirstNs < g.leadFirst) {
			g.leadFirst, g.leadPkts, g.leadBytes = pre.LeadFirstNs, pre.LeadCount, pre.LeadBytes
		}
	} else {
		g.addContext(c)
	}
	thr := float64(an.Threshold)
	ratio := math.Inf(1)
	if thr > 0 {
		ratio = float64(an.Score) / thr
	}
	if math.IsNaN(ratio) {
		// A NaN score: the plugins flag it as the most anomalous. As NaN
		// it would stay maxRatio (nothing compares greater) and make the
		// finding low, whatever followed.
		ratio = math.Inf(1)
	}
	if len(an.TopFeatures) > 0 && an.TopFeatures[0].Name == beaconFeature {
		if p, err := strconv.ParseInt(c[ctxBeaconPeriodNs], 10, 64); err == nil && p > 0 {
			n, _ := strconv.ParseUint(c[ctxBeaconConnections], 10, 32)
			if n >= g.beaconConns {
				g.beaconPeriod, g.beaconConns, g.beaconDst = p, n, ""
				if ap, err := netip.ParseAddrPort(c[ctxBeaconDst]); err == nil {
					g.beaconDst = ap.String() // the plugin's text, checked
				}
			}
		}
	}
	if ratio > g.maxRatio || g.model == nil {
		g.maxRatio, g.maxScore, g.maxThr = ratio, float64(an.Score), thr
		g.top = an.TopFeatures
		v, _ := strconv.ParseUint(c[ctxModelVersion], 10, 64)
		g.model = &wirev1.ModelRef{Name: c[ctxModel], Version: v, Digest: c[ctxModelDigest], Detector: DetectorName}
	}
	return out
}

// sourceKey is the aggregation key of an anomaly with context c: its
// source address, its MAC without one, and for an ARP claim (an unsolicited
// reply or a new MAC for the address, as the netflow plugin marks it:
// arp_claim) the claimed address with the frame's source MAC, so that a
// poisoner's claims make their own finding, apart from the traffic of the
// host that owns the address. Other anomalous ARP (a host answering for
// its own address while its traffic is anomalous) stays with its sender's
// traffic. The netflow plugin's pre-aggregation keys its merged anomalies
// the same way (plugins/netflow aggKey).
func sourceKey(c map[string]string) string {
	ip := c[sdk.ContextSrcIP]
	switch {
	case c[ctxARPClaim] == "1":
		return "arp:" + c[ctxSrcMAC] + "/" + ip
	case ip == "":
		return "mac:" + c[ctxSrcMAC]
	}
	return ip
}

// addAggregate merges a pre-aggregated anomaly's kinds, ports and hosts.
func (g *agg) addAggregate(pre *sdk.Aggregate) {
	g.syn += pre.TCPSyn
	g.udp += pre.UDP
	g.icmp += pre.ICMP
	g.arp += pre.ARP
	for _, p := range pre.DstPorts {
		g.addPort(uint64(p))
	}
	for _, h := range pre.DstAddrs {
		if h.IsValid() {
			g.addHost(h.String())
		}
	}
	if pre.DstAddrsTruncated {
		// The detector left distinct hosts out: more than the cap.
		g.hostsSaturated = true
	}
}

func (g *agg) addPort(p uint64) {
	if p > 0xffff {
		return
	}
	if g.ports == nil {
		for _, q := range g.fewPorts[:g.nports] {
			if uint64(q) == p {
				return
			}
		}
		if g.nports < fewPortsMax {
			g.fewPorts[g.nports] = uint16(p)
			g.nports++
			return
		}
		g.ports = new([1024]uint64)
		for _, q := range g.fewPorts {
			g.ports[q/64] |= 1 << (q % 64)
		}
	}
	w, b := p/64, p%64
	if g.ports[w]&(1<<b) == 0 {
		g.ports[w] |= 1 << b
		g.nports++
	}
}

func (g *agg) addHost(h string) {
	if _, ok := g.hosts[h]; !ok {
		if len(g.hosts) < maxDistinct {
			g.hosts[h] = struct{}{}
		} else {
			g.hostsSaturated = true
		}
	}
}

// addContext merges one anomalous packet's kind, port and host.
func (g *agg) addContext(c map[string]string) {
	switch c[sdk.ContextProto] {
	case "tcp":
		if fl, err := strconv.ParseUint(c[ctxTCPFlags], 10, 8); err == nil && fl&0x12 == 0x02 {
			g.syn++
		}
	case "udp":
		g.udp++
	case "icmp", "icmpv6":
		g.icmp++
	case "arp":
		g.arp++
	}
	if p, err := strconv.ParseUint(c[sdk.ContextDstPort], 10, 16); err == nil {
		g.addPort(p)
	}
	if h := c[sdk.ContextDstIP]; h != "" {
		g.addHost(h)
	}
}

// sweepStep is the packet-time grid of PacketTime sweeps.
const sweepStep = int64(time.Second)

// sweep (PacketTime only) closes, before an anomaly of packet time ts is
// merged, the open findings whose window closed by the latest point of a
// fixed 1 s packet-time grid at or before ts, in (first packet, source)
// order. Anomalies arrive in packet order, so a closed window would not
// have taken that anomaly or any later one: the findings are what closing
// lazily would give, and which are emitted when depends on the packet
// sequence only (not on how the plugin batched its anomalies, nor on the
// wall clock), so offline output is reproducible.
func (a *Aggregator) sweep(ts int64, out []*wirev1.Finding) []*wirev1.Finding {
	grid := ts - ts%sweepStep
	if ts < 0 || grid <= a.swept {
		return out
	}
	a.swept = grid
	var due []*agg
	for _, g := range a.open {
		if grid-g.first > int64(a.cfg.Window) {
			due = append(due, g)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if due[i].first != due[j].first {
			return due[i].first < due[j].first
		}
		return due[i].key < due[j].key
	})
	for _, g := range due {
		if f := a.finish(g); f != nil {
			out = append(out, f)
		}
		a.remove(g)
	}
	return out
}

// evictOldest closes the least recently updated open finding: the one with
// the smallest last packet time (of equals, the first opened).
func (a *Aggregator) evictOldest() *wirev1.Finding {
	if len(a.byLast) == 0 {
		return nil
	}
	old := a.byLast[0]
	a.remove(old)
	return a.finish(old)
}

// remove forgets the open finding g.
func (a *Aggregator) remove(g *agg) {
	delete(a.open, g.key)
	heap.Remove(&a.byLast, g.idx)
}

// lastHeap is a min-heap of open findings by last packet time, then
// opening order (container/heap); each finding knows its index.
type lastHeap []*agg

func (h lastHeap) Len() int { return len(h) }

func (h lastHeap) Less(i, j int) bool {
	if h[i].last != h[j].last {
		return h[i].last < h[j].last
	}
	return h[i].seq < h[j].seq
}

func (h lastHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}

func (h *lastHeap) Push(x any) {
	g := x.(*agg)
	g.idx = len(*h)
	*h = append(*h, g)
}

func (h *lastHeap) Pop() any {
	old := *h
	g := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	g.idx = -1
	return g
}

// finish returns the final emission of g, or nil if nothing changed since
// the last one or g never qualified. Every window passes here exactly once,
// when it closes.
func (a *Aggregator) finish(g *agg) *wirev1.Finding {
	a.persist(g)
	if g.count == g.emitted || !a.qualifies(g) {
		return nil
	}
	return a.emit(g)
}

// persist extends or restarts g's source's run of windows as g closes.
func (a *Aggregator) persist(g *agg) {
	if a.cfg.PersistWindows < 0 {
		return
	}
	s, ok := a.streaks[g.key]
	switch {
	case g.count < a.cfg.MinPackets:
		// Too few anomalies to count: the run ends.
		if ok {
			delete(a.streaks, g.key)
		}
		return
	case ok && g.first >= s.last && g.first-s.last <= int64(a.cfg.Window):
		s.n++
		s.last = max(s.last, g.last)
	default:
		s = streak{n: 1, first: g.first, last: g.last}
	}
	g.run, g.runFirst = s.n, s.first
	if !ok && len(a.streaks) >= a.cfg.MaxOpen && !a.pruneStreaks(g.first) {
		// Every remembered run is live (more than MaxOpen sources
		// anomalous at once, a flood from many addresses): this source's
		// run is not followed. The work per window stays bounded.
		return
	}
	a.streaks[g.key] = s
}

// pruneStreaks forgets the runs that can no longer continue at packet time
// now (their last anomaly more than a window before it), at most once per
// window of packet time, and reports whether that made room.
func (a *Aggregator) pruneStreaks(now int64) bool {
	win := int64(a.cfg.Window)
	if a.pruned != 0 && now-a.pruned < win {
		return false
	}
	a.pruned = now
	for k, s := range a.streaks {
		if now-s.last > win {
			delete(a.streaks, k)
		}
	}
	return len(a.streaks) < a.cfg.MaxOpen
}

// persistent reports whether g closes a run of at least n windows.
func (g *agg) persistent(n int) bool { return n > 0 && g.run >= n }

// severity is g's severity: from its largest score, raised to medium for a
// persistent source.
func (a *Aggregator) severity(g *agg) wirev1.Severity {
	sev := Severity(g.maxRatio)
	if g.persistent(a.cfg.PersistWindows) && sev < wirev1.Severity_SEVERITY_MEDIUM {
		sev = wirev1.Severity_SEVERITY_MEDIUM
	}
	return sev
}

func (a *Aggregator) qualifies(g *agg) bool {
	return a.qualifiesAlone(g) || g.persistent(a.cfg.PersistWindows)
}

// qualifiesAlone is the rule for one window: severity and packet count
// (see AggregatorConfig.MinPackets).
func (a *Aggregator) qualifiesAlone(g *agg) bool {
	sev := Severity(g.maxRatio)
	return sev >= a.cfg.MinSeverity &&
		(g.count >= a.cfg.MinPackets || sev >= wirev1.Severity_SEVERITY_HIGH || g.contentLed() || g.arpClaim())
}

// contentLed reports whether g's leading feature is a content hint.
func (g *agg) contentLed() bool { return len(g.top) > 0 && contentKinds[g.top[0].Name] != "" }

// arpClaim reports whether g holds ARP claims on an address (sourceKey).
// One forged reply poisons a cache for as long as the entry lives, and the
// tools send one every 2 to 10 s (dsniff's arpspoof, ettercap), so unlike
// IP traffic a single anomalous claim is worth a finding; arpwatch reports
// every changed address the same way.
func (g *agg) arpClaim() bool { return strings.HasPrefix(g.key, "arp:") }

// Tick emits what is due: findings whose window closed before packet time
// nowPkt (ns; 0: none closes) and, with UpdateEvery, updates of open ones.
// With PacketTime, windows close only as anomalies arrive (see sweep) and at
// Flush: nowPkt, the time of the packets read so far, runs ahead of the
// anomalies scored so far by a wall-clock-dependent lag, and closing on it
// split findings differently from run to run.
func (a *Aggregator) Tick(nowPkt int64) []*wirev1.Finding {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*wirev1.Finding
	now := a.cfg.Now()
	for _, k := range a.sortedKeys() {
		g := a.open[k]
		if nowPkt > 0 && !a.cfg.PacketTime && nowPkt-g.first > int64(a.cfg.Window) {
			if f := a.finish(g); f != nil {
				out = append(out, f)
			}
			a.remove(g)
			continue
		}
		if a.cfg.UpdateEvery <= 0 || g.count == g.emitted || !a.qualifies(g) {
			continue
		}
		if (g.lastEmit.IsZero() && now.Sub(g.created) >= a.cfg.FirstAfter) ||
			(!g.lastEmit.IsZero() && now.Sub(g.lastEmit) >= a.cfg.UpdateEvery) {
			out = append(out, a.emit(g))
		}
	}
	return out
}

// Flush closes and emits every open finding (end of stream, shutdown).
func (a *Aggregator) Flush() []*wirev1.Finding {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*wirev1.Finding
	for _, k := range a.sortedKeys() {
		if f := a.finish(a.open[k]); f != nil {
			out = append(out, f)
		}
	}
	clear(a.open)
	clear(a.byLast)
	a.byLast = a.byLast[:0]
	return out
}

// Stats returns the anomalies merged and findings emitted so far.
func (a *Aggregator) Stats() (anomalies, findings uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.anomalies, a.findings
}

// sortedKeys orders open findings by first packet, then source: output
// order is deterministic.
func (a *Aggregator) sortedKeys() []string {
	keys := make([]string, 0, len(a.open))
	for k := range a.open {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		gi, gj := a.open[keys[i]], a.open[keys[j]]
		if gi.first != gj.first {
			return gi.first < gj.first
		}
		return keys[i] < keys[j]
	})
	return keys
}

func (a *Aggregator) emit(g *agg) *wirev1.Finding {
	now := a.cfg.Now()
	g.lastEmit, g.emitted = now, g.count
	a.findings++
	t := now.UnixNano()
	if a.cfg.PacketTime {
		t = g.last
	}
	f := &wirev1.Finding{
		Detector:          DetectorName,
		TimeUnixNano:      t,
		FirstSeenUnixNano: g.first,
		LastSeenUnixNano:  g.last,
		Count:             g.count,
		Severity:          a.severity(g),
		Score:             wireFloat(g.maxScore),
		Threshold:         wireFloat(g.maxThr),
		Model:             g.model,
		Context:           g.ctx,
		Summary:           summary(g, a.cfg.PersistWindows),
		Packets:           g.count,
		Bytes:             g.bytes,
	}
	if g.leadFirst != 0 && g.leadFirst <= g.first {
		f.LeadInUnixNano, f.LeadInPackets, f.LeadInBytes = g.leadFirst, g.leadPkts, g.leadBytes
	}
	for _, c := range g.top {
		f.TopFeatures = append(f.TopFeatures, &wirev1.FeatureContribution{Name: c.Name, Contribution: wireFloat(float64(c.Contribution))})
	}
	return f
}

// wireFloat is v rounded (round) and made finite for the wire
// (wirev1.FiniteScore). The severity is computed before this cap (Severity
// of +Inf: critical).
func wireFloat(v float64) float64 {
	if v = wirev1.FiniteScore(v); v == wirev1.MaxScore || v == -wirev1.MaxScore {
		return v
	}
	return round(v)
}

// round keeps 6 significant digits (float32 scores printed as float64
// would otherwise show noise digits).
func round(v float64) float64 {
	if v == 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return v
	}
	s := strconv.FormatFloat(v, 'g', 6, 64)
	r, _ := strconv.ParseFloat(s, 64)
	return r
}

// contentKinds name a finding whose leading feature is one of the
// decoder's content hints (nethost/v3 to v7): what the payload showed says
// more than the packets' shape.
var contentKinds = map[string]string{
	beaconFeature:         "Periodic connections (C2-like beacon)",
	"host_cmd_shell":      "Command shell served",
	"host_cookie_reuse":   "Hijacked web session (another client's session cookie)",
	"host_hex_data":       "Hex-encoded data (C2-like)",
	"host_icmp_data":      "Covert data in ICMP echoes",
	"host_http_injection": "Web attack (SQL injection or XSS)",
	"host_http_traversal": "Web attack (path traversal)",
}

// beaconFeature is the pseudo-feature that leads the netflow plugin's
// beacon anomalies (plugins/netflow beacon.go): not a model's outlier but a
// rule's, new connections to one address and port at a regular interval,
// and like a content hint one such packet is worth a finding.
const beaconFeature = "beacon"

// summary is a one-line human description of an open finding; persist is
// AggregatorConfig.PersistWindows.
func summary(g *agg, persist int) string {
	src := g.ctx.SrcIp
	switch {
	case src == "":
		src = g.ctx.SrcMac
	case g.arpClaim() && g.arpPrev != "":
		src = g.ctx.SrcMac + " (claiming " + src + ", announced before by " + g.arpPrev + ")"
	case g.arpClaim():
		src = g.ctx.SrcMac + " (claiming " + src + ")"
	}
	hosts := strconv.Itoa(len(g.hosts))
	if g.hostsSaturated {
		hosts = "≥" + hosts
	}
	plural := func(n int, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	}
	kind := "Anomalous traffic"
	lead := ""
	if len(g.top) > 0 {
		lead = g.top[0].Name
	}
	switch {
	case contentKinds[lead] != "":
		kind = contentKinds[lead]
	case g.syn*10 >= g.count*8 && g.nports >= 20:
		kind = "SYN scan-like"
	case g.syn*10 >= g.count*8 && len(g.hosts) >= 20:
		kind = "SYN sweep-like"
	case g.icmp*10 >= g.count*8 && len(g.hosts) >= 10:
		kind = "ICMP sweep-like"
	case g.syn*10 >= g.count*8:
		kind = "SYN burst"
	case g.arpClaim():
		kind = "ARP spoofing-like"
	case g.arp*10 >= g.count*8:
		kind = "ARP anomaly"
	case g.nports >= 100 && g.syn*2 >= g.count:
		kind = "Port scan-like"
	case g.udp*10 >= g.count*8 && g.ctx.DstPort == 53:
		kind = "DNS anomaly"
	}
	s := fmt.Sprintf("%s: %d anomalous %s from %s to %s %s", kind, g.count, plural(int(g.count), "packet", "packets"),
		src, hosts, plural(len(g.hosts), "host", "hosts"))
	if g.nports > 0 {
		s += fmt.Sprintf(", %d %s", g.nports, plural(g.nports, "port", "ports"))
	}
	if lead == beaconFeature && g.beaconPeriod > 0 {
		to := ""
		if g.beaconDst != "" {
			to = " to " + g.beaconDst
		}
		s += fmt.Sprintf("; a new connection%s every %s (%d so far)", to, leadSpan(g.beaconPeriod), g.beaconConns)
	}
	if g.persistent(persist) {
		s += fmt.Sprintf("; persistent: anomalous in %d windows in a row for %s", g.run,
			time.Duration(g.last-g.runFirst).Round(time.Second))
	}
	if g.leadFirst != 0 && g.leadFirst <= g.first {
		s += fmt.Sprintf("; active since %s before (%d earlier %s)", leadSpan(g.first-g.leadFirst),
			g.leadPkts, plural(int(min(g.leadPkts, 2)), "packet", "packets"))
	}
	return s
}

// leadSpan prints how long before first_seen a lead-in began: to the
// microsecond below 10 ms, the millisecond below 10 s, the tenth of a second
// above.
func leadSpan(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d < 10*time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < 10*time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}
