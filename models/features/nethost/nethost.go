// Package nethost implements the feature set nethost/v1: evidence
// aggregated per source address over time, emitted for every packet of that
// source, so that scans, sweeps, brute force, ARP poisoning and odd probes,
// which Kitsune's per-stream statistics (netflow/v1) hardly see, stand out
// packet by packet.
//
// # Roles
//
// The features are role-aware: they describe what a host does as an
// initiator (a client, a scanner), never how busy it is as a responder. A
// busy server answering many clients' ephemeral ports, or a file server
// sending megabytes, must not look like a scanner or a flood. Each packet is
// classified from its header alone (no flow state):
//
//   - connection-initiating ("opens"): TCP SYN without ACK; UDP that is not a
//     reply (source port above the destination port, or equal ports other
//     than 53: server replies come from the lower, well-known port, and a DNS
//     server answering from 53 is never an initiator); ICMP/ICMPv6 requests
//     (echo, timestamp, information, address mask; ICMPv6 echo); ARP
//     requests;
//   - initiator side: TCP (other than SYN/ACK, RST) and UDP packets whose
//     source port is above the destination port (the client end of a
//     conversation, ACKs of a download included) and every open;
//   - responder side: the rest (SYN/ACK, server replies, ICMP replies and
//     errors). Responder-side packets update no rate; they are scored with
//     their source's initiator-side evidence (about zero for a pure server).
//
// "Distinct destination ports/hosts" and "new destinations" count opens only.
//
// # Features
//
// For each decay window λ in {1, 0.1} (half-lives 1 s and 10 s), rates are
// decayed counts scaled to events per second and then log-scaled
// (log1p), ratios are plain:
//
//	init_mean_size   mean size of the initiator-side packets (not a packet
//	                 or byte rate: the ACK stream of a client downloading
//	                 for minutes is no evidence of an attack)
//	open_rate        opens per second (connection attempts, requests)
//	new_dst_rate     opens to a (host, port) pair the source had not used in
//	                 the last 10-20 s (a 256-bit sketch: once a source has
//	                 used several hundred pairs, most new pairs look known,
//	                 so this rate under-counts during long scans)
//	failed_ratio     TCP RSTs and ICMP unreachables the source received per
//	                 TCP SYN it sent (failed connections), capped at 1
//	syn_share        share of the source's initiator-side TCP packets that
//	                 are SYNs (scanners: ~1; clients: small)
//	odd_tcp_rate     TCP packets per second with flag combinations no normal
//	                 stack sends (NULL, FIN without ACK (FIN, Xmas scans),
//	                 SYN+FIN, SYN+RST, URG or PSH without ACK): nmap -O and
//	                 stealth scans
//	icmp_req_rate    ICMP/ICMPv6 requests per second (sweeps)
//	arp_req_rate     ARP requests per second (ARP sweeps)
//	arp_unsol_rate   unsolicited ARP replies per second: replies for this
//	                 IP address beyond the requests seen for it (poisoning
//	                 repeats unsolicited replies; answering a request is
//	                 normal)
//	dns_share        share of the opens that are DNS queries (UDP/TCP to
//	                 port 53); a rate would flag every busy resolver client
//	dns_size         mean size of those queries in bytes (long query names:
//	                 tunnels), 0 without queries
//
// and, over the current and the previous 10-second epoch (opens only):
//
//	dst_ports        distinct destination ports (linear-counting bitmap)
//	dst_hosts        distinct destination hosts, ICMP and ARP targets
//	                 included (linear-counting bitmap)
//
// and, with the 10 s window:
//
//	arp_mac_changes  changes of the MAC address announced in ARP for this
//	                 IP address (ARP poisoning claims another host's IP)
//	short_conn_rate  TCP FINs and RSTs per second the source sends on the
//	                 initiator side to a (host, port) it already used:
//	                 repeated short connections (brute force)
//
// 2 × 11 + 4 = 26 features, all log1p-scaled except the ratios. The sketches
// are 256-bit bitmaps: estimates are good to a few percent up to a few
// hundred and saturate near 1400.
//
// State is one fixed-size, pointer-free entry per source in a capped table
// with least-recently-seen eviction: O(1) work and bounded memory. Frames
// without IP (other than ARP) are keyed by their source MAC.
//
// # History
//
// nethost/v1 was redefined in place before any model shipped: the first
// draft counted destination ports of every packet, responses included, so a
// busy server answering many client ports looked like a port scanner.
package nethost

import (
	"math"
	"math/bits"
	"runtime"

	"github.com/vigil-edge/vigil/models/features/internal/flowtab"
	"github.com/vigil-edge/vigil/models/features/internal/fmath"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Name is the feature-set name that model manifests refer to.
const Name = "nethost/v1"

// Dim is the number of features per packet.
const Dim = 2*perWindow + 4

const perWindow = 11

var lambdas = [2]float64{1, 0.1}
var lambdaLabels = [2]string{"1", "0.1"}

// epochNs is the length of a sketch epoch.
const epochNs = 10_000_000_000

var windowStats = [perWindow]string{"init_mean_size", "open_rate", "new_dst_rate",
	"failed_ratio", "syn_share", "odd_tcp_rate", "icmp_req_rate", "arp_req_rate", "arp_unsol_rate",
	"dns_share", "dns_size"}

var names = func() []string {
	var n []string
	for _, l := range lambdaLabels {
		for _, s := range windowStats {
			n = append(n, "host_L"+l+"_"+s)
		}
	}
	n = append(n, "host_dst_ports", "host_dst_hosts", "host_arp_mac_changes", "host_short_conn_rate")
	if len(n) != Dim {
		panic("nethost: feature names do not match Dim")
	}
	return n
}()

// Names returns the feature names in output order (a fresh copy).
func Names() []string { return append([]string(nil), names...) }

// Config bounds the extractor's state. Zero values take the defaults.
type Config struct {
	// MaxHosts caps the per-source table. Default 16384.
	MaxHosts int
	// HashSeed seeds the table hash (see netflow.Config.HashSeed).
	HashSeed uint64
	// V2 selects nethost/v2: nethost/v1's features followed by ExtraDim
	// more (v2.go).
	V2 bool
	// MaxPairs caps nethost/v2's table of (source, destination host)
	// pairs. Default 16384.
	MaxPairs int
	// V3 selects nethost/v3: nethost/v2's features (V2 is implied)
	// followed by WebDim more (v3.go).
	V3 bool
	// V4 selects nethost/v4: nethost/v3's features (V3 is implied)
	// followed by ShellDim more (v4.go).
	V4 bool
	// V5 selects nethost/v5: nethost/v4's features (V4 is implied)
	// followed by ICMPDataDim more (v5.go).
	V5 bool
	// V6 selects nethost/v6: nethost/v5's features (V5 is implied)
	// followed by HexDataDim more (v6.go).
	V6 bool
	// V7 selects nethost/v7: nethost/v6's features (V6 is implied)
	// followed by CookieReuseDim more (v7.go).
	V7 bool
}

// DefaultMaxHosts is the default table capacity.
const DefaultMaxHosts = 1 << 14

const (
	kindIP  uint8 = 1
	kindMAC uint8 = 2
)

// hostKey is a source's address (IPv4 mapped into IPv6, or a MAC address
// in the first 6 bytes) as two little-endian words, and its kind: two word
// comparisons instead of a 17-byte one.
type hostKey struct {
	lo, hi uint64
	kind   uint8
}

// counters are the decayed sums of one window.
type counters struct {
	initPkts, initBytes, opens, newDst, failedIn, syn, initTCP, odd, icmpReq, arpReq, arpUnsol, dns, dnsBytes float64
	// icmpBytes is the bytes of the ICMP requests (nethost/v2's icmp_size).
	icmpBytes float64
}

type sketch [4]uint64 // 256 bits

type hostVal struct {
	// The fields every packet reads come first, together (five cache
	// lines with the key); the sketches, read by opens and epoch turns,
	// last.
	win        [2]counters
	macChanges float64 // decayed with λ = 0.1
	shortConns float64 // decayed with λ = 0.1
	beacon     float64 // nethost/v2: longest current run of regular connection starts (decayed with λ = 0.1)
	// nethost/v3: HTTP requests with content hints (decayed with λ = 0.1)
	httpInject, httpTraversal float64
	// nethost/v4: packets that serve a command shell (decayed with λ = 0.1)
	cmdShell float64
	// nethost/v5: ICMP echoes with covert data (decayed with λ = 0.1)
	icmpData float64
	// nethost/v6: packets with hex-encoded data (decayed with λ = 0.1)
	hexData float64
	// nethost/v7: HTTP requests with another client's session cookie (decayed with λ = 0.1)
	cookieReuse float64
	arpAsked    float64 // ARP requests seen for this IP (decayed with λ = 0.1), not yet answered
	epoch       int64
	// distKey and distVal cache the dst_ports and dst_hosts features: the
	// value is a function of the sketches' number of set bits only (key:
	// that number + 1; 0: none cached), which changes only on opens to new
	// destinations, so most packets skip its two logarithms.
	distKey [2]uint16
	distVal [2]float32
	// distOnes is the number of set bits of cur[i] | prev[i] for the port
	// and host sketches (i = 0, 1), kept up to date as bits are set and
	// epochs turn, so that the cache above is checked without counting.
	distOnes [2]uint16
	arpMAC   [6]byte
	arpSeen  bool
	// counted is set once a window counter is incremented. Until then
	// (a pure responder, such as a server) every counter is zero, and
	// decay and the window features skip them.
	counted bool
	cur     [3]sketch // ports, hosts, (host,port) pairs
	prev    [3]sketch
}

// Extractor computes nethost/v1 features. Not safe for concurrent use.
type Extractor struct {
	seed  uint64
	hosts flowtab.Table[hostKey, hostVal]
	// v2 is set for a nethost/v2 or later extractor: its state and features
	// (v2.go).
	v2 *v2State
	// v3 is set for a nethost/v3 or later extractor (v3.go).
	v3 bool
	// v4 is set for a nethost/v4 or later extractor (v4.go).
	v4 bool
	// v5 is set for a nethost/v5 or later extractor (v5.go).
	v5 bool
	// v6 is set for a nethost/v6 or v7 extractor (v6.go).
	v6 bool
	// v7 is set for a nethost/v7 extractor (v7.go).
	v7 bool
	// decays memoizes decay's factors of recent time steps in a small
	// direct-mapped table: the factors are a function of the step alone,
	// and steps recur (captures have microsecond timestamps; steady
	// traffic repeats steps). On the reference capture about a third of
	// the steps are found.
	decays *[decayCacheSize]decayEntry
	// claim records whether the last packet was an ARP claim (ARPClaim);
	// changed whether it changed the address's MAC from prevMAC.
	claim, changed bool
	prevMAC        [6]byte
}

// claimable reports whether a is an address an ARP packet can claim: not
// zero (no address decoded) and not 0.0.0.0.
func claimable(a *[16]byte) bool {
	var zero, zero4 [16]byte
	zero4[10], zero4[11] = 0xff, 0xff
	return *a != zero && *a != zero4
}

// ARPClaim reports whether the packet last given to Extract or ExtractRaw
// was a claim on an IP address in ARP that the address's history does not
// back: a reply nobody asked for (no request for the address seen within
// the features' memory), or a reply or gratuitous announcement from another
// MAC than the last one that announced the address. These are the packets
// ARP cache poisoning consists of (arpwatch reports the second kind as
// "changed ethernet address" and "flip flop"); the features count them in
// arp_unsol_rate and arp_mac_changes. The netflow detector reports an
// anomalous claim under the MAC that sent it, apart from the claimed
// address's own traffic.
func (e *Extractor) ARPClaim() bool { return e.claim }

// ARPPreviousMAC returns, when the packet last given to Extract or
// ExtractRaw was an ARP claim that changed its address's MAC, the MAC that
// announced the address before (arpwatch's "changed ethernet address" old
// and new); ok is false otherwise.
func (e *Extractor) ARPPreviousMAC() (mac [6]byte, ok bool) { return e.prevMAC, e.claim && e.changed }

// decayCacheSize is the number of entries of the decay cache (a power of
// two).
const decayCacheSize = 512

// decayEntry holds the decay factors of one time step dt (0: none, as
// decay never computes a step ≤ 0).
type decayEntry struct {
	dt int64
	f  [len(lambdas)]float64
}

// rateScale[i] scales window i's decayed counts to per-second rates: a
// decayed count w of events at a steady rate r settles at r/(λ·ln 2). It is
// computed in float64 arithmetic (a constant expression would round once,
// not twice).
var rateScale = func() (s [len(lambdas)]float64) {
	for i, l := range lambdas {
		s[i] = l * math.Ln2
	}
	return s
}()

// New returns an extractor with empty state.
func New(cfg Config) *Extractor {
	if cfg.MaxHosts <= 0 {
		cfg.MaxHosts = DefaultMaxHosts
	}
	e := &Extractor{seed: cfg.HashSeed, hosts: flowtab.New[hostKey, hostVal](cfg.MaxHosts),
		decays: new([decayCacheSize]decayEntry)}
	if cfg.V2 || cfg.V3 || cfg.V4 || cfg.V5 || cfg.V6 || cfg.V7 {
		e.v2 = newV2(cfg)
	}
	e.v3 = cfg.V3 || cfg.V4 || cfg.V5 || cfg.V6 || cfg.V7
	e.v4 = cfg.V4 || cfg.V5 || cfg.V6 || cfg.V7
	e.v5 = cfg.V5 || cfg.V6 || cfg.V7
	e.v6 = cfg.V6 || cfg.V7
	e.v7 = cfg.V7
	return e
}

// versions are the feature sets an extractor computes, by version - 1.
var versions = [...]struct {
	name string
	dim  int
}{{Name, Dim}, {NameV2, DimV2}, {NameV3, DimV3}, {NameV4, DimV4}, {NameV5, DimV5}, {NameV6, DimV6}, {NameV7, DimV7}}

// version is the extractor's nethost version, minus 1 (an index into
// versions).
func (e *Extractor) version() int {
	switch {
	case e.v7:
		return 6
	case e.v6:
		return 5
	case e.v5:
		return 4
	case e.v4:
		return 3
	case e.v3:
		return 2
	case e.v2 != nil:
		return 1
	}
	return 0
}

// Dim returns the number of features the extractor writes per packet: Dim
// for nethost/v1, DimV2 for nethost/v2, DimV3 for nethost/v3, DimV4 for
// nethost/v4, DimV5 for nethost/v5, DimV6 for nethost/v6, DimV7 for
// nethost/v7.
func (e *Extractor) Dim() int { return versions[e.version()].dim }

// Name returns the feature set the extractor computes.
func (e *Extractor) Name() string { return versions[e.version()].name }

// ipKey returns the key and hash of an IP address.
func (e *Extractor) ipKey(addr *[16]byte) (hostKey, uint64) {
	k := hostKey{lo: flowtab.LE64(addr[0:]), hi: flowtab.LE64(addr[8:]), kind: kindIP}
	return k, flowtab.Mix(e.seed^k.lo^uint64(kindIP)<<56, k.hi)
}

// macKey returns the key and hash of a MAC address (as if it were the first
// 6 bytes of an address).
func (e *Extractor) macKey(mac *[6]byte) (hostKey, uint64) {
	k := hostKey{lo: uint64(mac[0]) | uint64(mac[1])<<8 | uint64(mac[2])<<16 | uint64(mac[3])<<24 |
		uint64(mac[4])<<32 | uint64(mac[5])<<40, kind: kindMAC}
	return k, flowtab.Mix(e.seed^k.lo^uint64(kindMAC)<<56, k.hi)
}

const slowLambda = 0.1

// decay ages v's decayed sums from packet time *last to now and sets *last
// to now.
func (e *Extractor) decay(v *hostVal, last *int64, now int64) {
	dt := now - *last
	if dt <= 0 {
		return
	}
	*last = now
	if !v.counted && v.macChanges == 0 && v.shortConns == 0 && v.arpAsked == 0 && v.beacon == 0 &&
		v.httpInject == 0 && v.httpTraversal == 0 && v.cmdShell == 0 && v.icmpData == 0 &&
		v.hexData == 0 && v.cookieReuse == 0 {
		return // every decayed sum is zero (a pure responder): nothing to age
	}
	d := &e.decays[uint64(dt)*0x9e3779b97f4a7c15>>(64-9)&(decayCacheSize-1)]
	if d.dt != dt {
		// exp2Pair is math.Exp2 of both, written out side by side
		// (fastmath.go).
		s := float64(dt) * 1e-9
		d.f[0], d.f[1] = fmath.Exp2Pair(-lambdas[0]*s, -lambdas[1]*s)
		d.dt = dt
	}
	f := d.f[1]
	if v.counted {
		decayWin(&v.win[0], d.f[0])
		decayWin(&v.win[1], f)
	}
	// lambdas[1] is slowLambda
	v.macChanges *= f
	v.shortConns *= f
	v.arpAsked *= f
	v.beacon *= f
	v.httpInject *= f
	v.httpTraversal *= f
	v.cmdShell *= f
	v.icmpData *= f
	v.hexData *= f
	v.cookieReuse *= f
}

func decayWin(c *counters, f float64) {
	c.initPkts *= f
	c.initBytes *= f
	c.opens *= f
	c.newDst *= f
	c.failedIn *= f
	c.syn *= f
	c.initTCP *= f
	c.odd *= f
	c.icmpReq *= f
	c.arpReq *= f
	c.arpUnsol *= f
	c.dns *= f
	c.dnsBytes *= f
	c.icmpBytes *= f
}

func (s *sketch) set(h uint64) (was bool) {
	i, b := (h>>6)&3, uint64(1)<<(h&63)
	was = s[i]&b != 0
	s[i] |= b
	return was
}

func (s *sketch) has(h uint64) bool { return s[(h>>6)&3]&(uint64(1)<<(h&63)) != 0 }

// distinctFeature is the log-scaled estimate of the number of distinct items
// in a sketch pair whose union has ones set bits, cached in *key and *val
// by that number.
func distinctFeature(ones uint16, key *uint16, val *float32) float32 {
	if *key != ones+1 {
		setDistinct(ones, key, val)
	}
	return *val
}

func setDistinct(ones uint16, key *uint16, val *float32) {
	*key, *val = ones+1, lg(distinctOnes(int(ones)))
}

// unionOnes is the number of set bits of a | b.
func unionOnes(a, b *sketch) uint16 {
	ones := 0
	for i := range a {
		ones += bits.OnesCount64(a[i] | b[i])
	}
	return uint16(ones)
}

// distinctOnes estimates a number of distinct items by linear counting from
// the number of set bits (ones) of a 256-bit sketch.
func distinctOnes(ones int) float64 {
	const m = 256
	zeros := m - ones
	if zeros == 0 {
		zeros = 1 // saturated: about m·ln(m) ≈ 1420
	}
	return m * math.Log(float64(m)/float64(zeros))
}

// role is a packet's role (see the package documentation).
type role uint8

const (
	roleResponder role = iota
	roleInitiator      // initiator side, not an open
	roleOpen           // connection-initiating (also initiator side)
)

// classify returns p's role. ip says p is an unfragmented-or-first IP packet
// with ports (frag excluded by the caller for ports).
func classify(p *event.Packet, l4 bool) role {
	switch {
	case p.Flags&event.FlagARP != 0:
		if p.DstPort == 1 { // request
			return roleOpen
		}
		return roleInitiator
	case p.Flags&(event.FlagIPv4|event.FlagIPv6) == 0:
		return roleInitiator
	}
	switch p.Proto {
	case event.ProtoTCP:
		if !l4 {
			return roleInitiator
		}
		f := p.TCPFlags
		switch {
		case f&(event.TCPSyn|event.TCPAck|event.TCPRst) == event.TCPSyn:
			return roleOpen
		case f&(event.TCPSyn|event.TCPAck) == event.TCPSyn|event.TCPAck:
			return roleResponder
		case p.SrcPort > p.DstPort:
			return roleInitiator
		}
		return roleResponder
	case event.ProtoUDP:
		if !l4 {
			return roleInitiator
		}
		if p.SrcPort > p.DstPort || (p.SrcPort == p.DstPort && p.SrcPort != 53) {
			return roleOpen
		}
		return roleResponder
	case event.ProtoICMP:
		switch p.SrcPort { // type
		case 8, 13, 15, 17: // echo, timestamp, information, address mask requests
			return roleOpen
		}
		return roleResponder
	case event.ProtoICMPv6:
		switch p.SrcPort {
		case 128: // echo request
			return roleOpen
		case 133, 135: // router and neighbour solicitations: housekeeping
			return roleInitiator
		}
		return roleResponder
	}
	return roleInitiator
}

// oddTCP reports flag combinations no normal TCP stack sends.
func oddTCP(f uint8) bool {
	const syn, fin, rst, ack, urg, psh = event.TCPSyn, event.TCPFin, event.TCPRst, event.TCPAck, event.TCPUrg, event.TCPPsh
	switch {
	case f&(syn|fin|rst|ack|urg|psh) == 0: // NULL
		return true
	case f&syn != 0 && f&(fin|rst) != 0:
		return true
	case f&ack == 0 && f&(fin|urg|psh) != 0: // FIN, Xmas, bare PSH/URG
		return true
	}
	return false
}

// Extract updates the state with p and writes the features of p's source
// to out, which must hold at least e.Dim() values. It is ExtractRaw
// followed by Raw.Features.
func (e *Extractor) Extract(p *event.Packet, out []float32) {
	var r Raw
	e.ExtractRaw(p, &r)
	r.Features(out[:e.Dim()])
}

// Raw holds the features of a packet before their final scaling: for a
// log-scaled feature (IsLog) the count or rate x that the feature is
// log(1+x) of, for the others the feature's value itself. A consumer that
// may not need the vector (a score cache comparing against a previous
// vector) can bound the change of the log-scaled features from x alone and
// skip the logarithms; Features gives the vector bit for bit as Extract.
// An extractor of an earlier version leaves the later versions' values
// zero: a nethost/v1 extractor Raw[Dim:], a nethost/v2 extractor
// Raw[DimV2:], a nethost/v3 extractor Raw[DimV3:], a nethost/v4 extractor
// Raw[DimV4:], a nethost/v5 extractor Raw[DimV5:], a nethost/v6 extractor
// Raw[DimV6:].
type Raw [DimV7]float64

// isLog marks the log-scaled features (see the package documentation and
// v2.go).
var isLog = func() (l [DimV7]bool) {
	for w := range lambdas {
		for _, j := range []int{1, 2, 5, 6, 7, 8} { // the *_rate statistics
			l[w*perWindow+j] = true
		}
	}
	l[Dim-2], l[Dim-1] = true, true // arp_mac_changes, short_conn_rate
	for j, lg := range extraIsLog {
		l[Dim+j] = lg
	}
	for j := range WebDim {
		l[DimV2+j] = true
	}
	for j := range ShellDim {
		l[DimV3+j] = true
	}
	for j := range ICMPDataDim {
		l[DimV4+j] = true
	}
	for j := range HexDataDim {
		l[DimV5+j] = true
	}
	for j := range CookieReuseDim {
		l[DimV6+j] = true
	}
	return l
}()

// IsLog reports whether feature j is log-scaled: Features computes it as
// log1p of its Raw value (0 for values ≤ 0), and the others as the Raw value
// converted to float32. Non-finite results become 0 either way.
func IsLog(j int) bool { return j >= 0 && j < DimV7 && isLog[j] }

// Feature returns feature j of r as Features computes it.
func (r *Raw) Feature(j int) float32 {
	var f float32
	if isLog[j] {
		f = lg(r[j])
	} else {
		f = float32(r[j])
	}
	if d := f - f; d != d { // ±Inf or NaN
		f = 0
	}
	return f
}

// Features writes the feature vector of r to out, which must hold at least
// Dim values: nethost/v1's Dim features, nethost/v2's too when out holds
// DimV2 values, nethost/v3's when it holds DimV3, nethost/v4's when it
// holds DimV4, nethost/v5's when it holds DimV5, nethost/v6's when it
// holds DimV6 and nethost/v7's when it holds DimV7. It computes Feature(j) for every j, written out per feature
// (the layout is fixed: see isLog).
func (r *Raw) Features(out []float32) {
	if len(out) >= DimV7 {
		out[DimV6] = logFeature(r[DimV6])
	}
	if len(out) >= DimV6 {
		out[DimV5] = logFeature(r[DimV5])
	}
	if len(out) >= DimV5 {
		out[DimV4] = logFeature(r[DimV4])
	}
	if len(out) >= DimV4 {
		out[DimV3] = logFeature(r[DimV3])
	}
	if len(out) >= DimV3 {
		out[DimV2] = logFeature(r[DimV2])
		out[DimV2+1] = logFeature(r[DimV2+1])
	}
	if len(out) >= DimV2 {
		// extraIsLog, written out
		oo := (*[ExtraDim]float32)(out[Dim:])
		oo[0] = linFeature(r[Dim])
		oo[1] = logFeature(r[Dim+1])
		oo[2] = logFeature(r[Dim+2])
	}
	o := (*[Dim]float32)(out[:Dim])
	for w := range len(lambdas) {
		ro := (*[perWindow]float64)(r[w*perWindow:])
		oo := (*[perWindow]float32)(o[w*perWindow:])
		oo[0] = linFeature(ro[0])
		oo[1] = logFeature(ro[1])
		oo[2] = logFeature(ro[2])
		oo[3] = linFeature(ro[3])
		oo[4] = linFeature(ro[4])
		oo[5] = logFeature(ro[5])
		oo[6] = logFeature(ro[6])
		oo[7] = logFeature(ro[7])
		oo[8] = logFeature(ro[8])
		oo[9] = linFeature(ro[9])
		oo[10] = linFeature(ro[10])
	}
	o[Dim-4] = linFeature(r[Dim-4])
	o[Dim-3] = linFeature(r[Dim-3])
	o[Dim-2] = logFeature(r[Dim-2])
	o[Dim-1] = logFeature(r[Dim-1])
}

// linFeature is a linear feature: x as float32, 0 when that is not finite.
func linFeature(x float64) float32 {
	f := float32(x)
	if d := f - f; d != d { // ±Inf or NaN
		f = 0
	}
	return f
}

// logFeature is a log-scaled feature: lg(x), 0 when that is not finite
// (lg is finite but for x = +Inf).
func logFeature(x float64) float32 {
	if !(x > 0) || x > math.MaxFloat64 {
		return 0
	}
	return float32(fmath.Log1p(x))
}

// ExtractRaw updates the state with p and writes the raw features of p's
// source to raw (see Raw).
func (e *Extractor) ExtractRaw(p *event.Packet, raw *Raw) {
	e.claim, e.changed = false, false
	now := p.TimestampNs
	flags, proto := p.Flags, p.Proto
	isARP := flags&event.FlagARP != 0
	isIP := flags&(event.FlagIPv4|event.FlagIPv6) != 0
	unfrag := isIP && flags&event.FlagFragment == 0
	tcp := unfrag && proto == event.ProtoTCP
	l4 := tcp || unfrag && proto == event.ProtoUDP
	arpReq := isARP && p.DstPort == 1

	// Failures come back to the source: a RST, or an ICMP destination
	// unreachable (type 3 / ICMPv6 type 1), counts for the packet's
	// destination if that host is tracked (no entry is created for it).
	if isIP && ((tcp && p.TCPFlags&event.TCPRst != 0) ||
		(proto == event.ProtoICMP && p.SrcPort == 3) || (proto == event.ProtoICMPv6 && p.SrcPort == 1)) {
		k, h := e.ipKey(&p.DstIP)
		if v, last := e.hosts.Lookup(&k, h); v != nil {
			e.decay(v, last, now)
			v.win[0].failedIn++
			v.win[1].failedIn++
			v.counted = true
		}
	}

	if arpReq && p.SrcIP != p.DstIP {
		// The entry is created if absent (bounded like any other): the
		// owner's reply usually comes next.
		k, h := e.ipKey(&p.DstIP)
		v, last := e.hosts.Get(&k, h, now)
		e.decay(v, last, now)
		v.arpAsked = min(v.arpAsked+1, 8)
	}

	var k hostKey
	var h uint64
	if isIP || isARP {
		k, h = e.ipKey(&p.SrcIP)
	} else {
		k, h = e.macKey(&p.SrcMAC)
	}
	v, last, created := e.hosts.Acquire(&k, h, now)
	e.decay(v, last, now)

	// Sketch epochs (a packet from an earlier epoch changes none).
	if ep := now / epochNs; ep > v.epoch {
		if ep == v.epoch+1 {
			v.prev, v.cur = v.cur, [3]sketch{}
		} else {
			v.prev, v.cur = [3]sketch{}, [3]sketch{}
		}
		v.epoch = ep
		v.distOnes[0] = unionOnes(&v.cur[0], &v.prev[0])
		v.distOnes[1] = unionOnes(&v.cur[1], &v.prev[1])
	}

	r := classify(p, l4)
	newDst, knownPair := false, false
	if r == roleOpen || (r == roleInitiator && tcp && p.TCPFlags&(event.TCPFin|event.TCPRst) != 0) {
		hh := flowtab.Mix(e.seed^flowtab.LE64(p.DstIP[0:]), flowtab.LE64(p.DstIP[8:]))
		port := uint64(0)
		if l4 {
			port = uint64(p.DstPort) | uint64(proto)<<16
		}
		ph := flowtab.Mix(e.seed^port, 0x9e3779b97f4a7c15)
		pair := flowtab.Mix(hh, ph)
		if r == roleOpen {
			if !v.cur[1].set(hh) && !v.prev[1].has(hh) {
				v.distOnes[1]++
			}
			if l4 && !v.cur[0].set(ph) && !v.prev[0].has(ph) {
				v.distOnes[0]++
			}
			if !v.prev[2].has(pair) && !v.cur[2].set(pair) {
				newDst = true
			}
		} else {
			knownPair = v.prev[2].has(pair) || v.cur[2].has(pair)
		}
	}
	if knownPair {
		v.shortConns++
	}
	if isARP && (p.DstPort == 2 || p.SrcIP == p.DstIP) { // replies and gratuitous announcements
		if v.arpSeen && v.arpMAC != p.SrcMAC {
			v.macChanges++
			e.claim, e.changed, e.prevMAC = true, true, v.arpMAC
		}
		v.arpMAC, v.arpSeen = p.SrcMAC, true
	}

	// An ARP request for an IP address is recorded in that address's entry
	// (if tracked) so that its owner's reply counts as solicited.
	unsolicited := false
	if isARP && p.DstPort == 2 {
		if v.arpAsked >= 0.5 {
			v.arpAsked--
		} else {
			unsolicited = true
			e.claim = true
		}
	}

	// A claim needs a sender address: ARP for other protocols or with
	// malformed address lengths decodes without one (zero), and a probe
	// (RFC 5227) claims nothing.
	e.claim = e.claim && claimable(&p.SrcIP)

	// The counts of both windows, grouped by the conditions (every
	// condition of the second group implies an open; a frame flagged both
	// ARP and IP, which no decoder makes, may count in several).
	w0, w1 := &v.win[0], &v.win[1]
	if r != roleResponder { // initiator side
		v.counted = true
		b := float64(p.Length)
		w0.initPkts++
		w1.initPkts++
		w0.initBytes += b
		w1.initBytes += b
		if tcp {
			w0.initTCP++
			w1.initTCP++
		}
	}
	if r == roleOpen {
		w0.opens++
		w1.opens++
		if newDst {
			w0.newDst++
			w1.newDst++
		}
		if tcp { // a SYN
			w0.syn++
			w1.syn++
		}
		if arpReq {
			w0.arpReq++
			w1.arpReq++
		}
		if isIP && (proto == event.ProtoICMP || proto == event.ProtoICMPv6) {
			b := float64(p.Length)
			w0.icmpReq++
			w1.icmpReq++
			w0.icmpBytes += b
			w1.icmpBytes += b
		}
		if l4 && p.DstPort == 53 {
			b := float64(p.Length)
			w0.dns++
			w1.dns++
			w0.dnsBytes += b
			w1.dnsBytes += b
		}
	}
	if tcp && oddTCP(p.TCPFlags) {
		v.counted = true
		w0.odd++
		w1.odd++
	}
	if unsolicited {
		v.counted = true
		w0.arpUnsol++
		w1.arpUnsol++
	}
	if v.counted {
		windowRaw((*[perWindow]float64)(raw[0:]), w0, rateScale[0])
		windowRaw((*[perWindow]float64)(raw[perWindow:]), w1, rateScale[1])
	} else {
		clear(raw[:2*perWindow]) // what windowRaw writes for zero counters
	}
	raw[Dim-4] = float64(distinctFeature(v.distOnes[0], &v.distKey[0], &v.distVal[0]))
	raw[Dim-3] = float64(distinctFeature(v.distOnes[1], &v.distKey[1], &v.distVal[1]))
	raw[Dim-2] = v.macChanges
	raw[Dim-1] = v.shortConns * slowLambda * math.Ln2
	if e.v2 != nil {
		e.v2.extract(e, p, v, r, created, tcp, raw)
	} else {
		clear(raw[Dim:DimV2])
	}
	if e.v3 {
		extractWeb(p, v, raw)
	} else {
		clear(raw[DimV2:DimV3])
	}
	if e.v4 {
		extractShell(p, v, raw)
	} else {
		clear(raw[DimV3:DimV4])
	}
	if e.v5 {
		extractICMPData(p, v, raw)
	} else {
		clear(raw[DimV4:DimV5])
	}
	if e.v6 {
		extractHexData(p, v, raw)
	} else {
		clear(raw[DimV5:DimV6])
	}
	if e.v7 {
		extractCookieReuse(p, v, raw)
	} else {
		clear(raw[DimV6:])
	}
	runtime.KeepAlive(e) // v points into e's table (flowtab: valid while the table is reachable)
}

// windowRaw writes one window's raw features; sc scales counts to rates.
func windowRaw(o *[perWindow]float64, c *counters, sc float64) {
	o[0] = ratio(c.initBytes, c.initPkts)
	o[1] = c.opens * sc
	o[2] = c.newDst * sc
	o[3] = cap1(ratio(c.failedIn, c.syn))
	o[4] = cap1(ratio(c.syn, c.initTCP))
	o[5] = c.odd * sc
	o[6] = c.icmpReq * sc
	o[7] = c.arpReq * sc
	o[8] = c.arpUnsol * sc
	o[9] = cap1(ratio(c.dns, c.opens))
	o[10] = ratio(c.dnsBytes, c.dns)
}

// lg is the log scale of counts and rates: log(1+x), 0 for x ≤ 0 (log1p
// is math.Log1p: fastmath.go).
func lg(x float64) float32 {
	if !(x > 0) {
		return 0
	}
	if x > math.MaxFloat64 {
		return float32(math.Inf(1))
	}
	return float32(fmath.Log1p(x))
}

// cap1 is min(1, x), NaN included, without min's signed-zero handling
// (which only matters when both operands are zeros).
func cap1(x float64) float64 {
	if x > 1 {
		return 1
	}
	return x
}

func ratio(a, b float64) float64 {
	if b <= 1e-3 {
		return 0
	}
	return a / b
}

// Stats describes the extractor's state.
type Stats struct {
	Entries, Capacity int
	Evictions         uint64
	EntryBytes        int
	MemoryBytes       int64
}

// Stats returns the statistics of the per-source table.
func (e *Extractor) Stats() Stats { return tableStats(&e.hosts) }

func tableStats[K comparable, V any](t *flowtab.Table[K, V]) Stats {
	return Stats{Entries: t.Len(), Capacity: t.Cap(), Evictions: t.Evictions(), EntryBytes: t.EntryBytes(),
		MemoryBytes: int64(t.Slots() * t.EntryBytes())}
}
