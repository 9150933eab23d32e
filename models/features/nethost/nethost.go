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
	"github.com/vigil-edge/vigil/models/features/internal/flowtab"
	"math"
	"math/bits"

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
}

// DefaultMaxHosts is the default table capacity.
const DefaultMaxHosts = 1 << 14

const (
	kindIP  uint8 = 1
	kindMAC uint8 = 2
)

type hostKey struct {
	addr [16]byte
	kind uint8
}

// counters are the decayed sums of one window.
type counters struct {
	initPkts, initBytes, opens, newDst, failedIn, syn, initTCP, odd, icmpReq, arpReq, arpUnsol, dns, dnsBytes float64
}

type sketch [4]uint64 // 256 bits

type hostVal struct {
	win        [2]counters
	macChanges float64 // decayed with λ = 0.1
	shortConns float64 // decayed with λ = 0.1
	arpAsked   float64 // ARP requests seen for this IP (decayed with λ = 0.1), not yet answered
	epoch      int64
	cur        [3]sketch // ports, hosts, (host,port) pairs
	prev       [3]sketch
	arpMAC     [6]byte
	arpSeen    bool
	// distKey and distVal cache the dst_ports and dst_hosts features: the
	// value is a function of the sketches' number of set bits only (key:
	// that number + 1; 0: none cached), which changes only on opens to new
	// destinations, so most packets skip its two logarithms.
	distKey [2]uint16
	distVal [2]float32
}

// Extractor computes nethost/v1 features. Not safe for concurrent use.
type Extractor struct {
	seed  uint64
	hosts flowtab.Table[hostKey, hostVal]
	// decayDt and decayF memoize decay's factors of the last time step:
	// steady traffic repeats time steps, and the factors are a function of
	// the step alone (decayDt 0: none yet, as decay never computes a step
	// ≤ 0).
	decayDt int64
	decayF  [len(lambdas)]float64
}

// New returns an extractor with empty state.
func New(cfg Config) *Extractor {
	if cfg.MaxHosts <= 0 {
		cfg.MaxHosts = DefaultMaxHosts
	}
	return &Extractor{seed: cfg.HashSeed, hosts: flowtab.New[hostKey, hostVal](cfg.MaxHosts)}
}

func (e *Extractor) keyOf(addr [16]byte, mac [6]byte, ip bool) (hostKey, uint64) {
	k := hostKey{addr: addr, kind: kindIP}
	if !ip {
		k = hostKey{kind: kindMAC}
		copy(k.addr[:], mac[:])
	}
	return k, flowtab.Mix(e.seed^flowtab.LE64(k.addr[0:])^uint64(k.kind)<<56, flowtab.LE64(k.addr[8:]))
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
	if dt != e.decayDt {
		s := float64(dt) * 1e-9
		for i, l := range lambdas {
			e.decayF[i] = math.Exp2(-l * s)
		}
		e.decayDt = dt
	}
	for i, l := range lambdas {
		f := e.decayF[i]
		c := &v.win[i]
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
		if l == slowLambda {
			v.macChanges *= f
			v.shortConns *= f
			v.arpAsked *= f
		}
	}
}

func (s *sketch) set(h uint64) (was bool) {
	i, b := (h>>6)&3, uint64(1)<<(h&63)
	was = s[i]&b != 0
	s[i] |= b
	return was
}

func (s *sketch) has(h uint64) bool { return s[(h>>6)&3]&(uint64(1)<<(h&63)) != 0 }

// distinctFeature is the log-scaled estimate of the number of distinct items
// in a ∪ b, cached in *key and *val by the number of set bits it depends on.
func distinctFeature(a, b *sketch, key *uint16, val *float32) float32 {
	ones := 0
	for i := range a {
		ones += bits.OnesCount64(a[i] | b[i])
	}
	if k := uint16(ones + 1); *key != k {
		*key, *val = k, lg(distinctOnes(ones))
	}
	return *val
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
// to out, which must hold at least Dim values. It is ExtractRaw followed by
// Raw.Features.
func (e *Extractor) Extract(p *event.Packet, out []float32) {
	var r Raw
	e.ExtractRaw(p, &r)
	r.Features(out)
}

// Raw holds the features of a packet before their final scaling: for a
// log-scaled feature (IsLog) the count or rate x that the feature is
// log(1+x) of, for the others the feature's value itself. A consumer that
// may not need the vector (a score cache comparing against a previous
// vector) can bound the change of the log-scaled features from x alone and
// skip the logarithms; Features gives the vector bit for bit as Extract.
type Raw [Dim]float64

// isLog marks the log-scaled features (see the package documentation).
var isLog = func() (l [Dim]bool) {
	for w := range lambdas {
		for _, j := range []int{1, 2, 5, 6, 7, 8} { // the *_rate statistics
			l[w*perWindow+j] = true
		}
	}
	l[Dim-2], l[Dim-1] = true, true // arp_mac_changes, short_conn_rate
	return l
}()

// IsLog reports whether feature j is log-scaled: Features computes it as
// log1p of its Raw value (0 for values ≤ 0), and the others as the Raw value
// converted to float32. Non-finite results become 0 either way.
func IsLog(j int) bool { return j >= 0 && j < Dim && isLog[j] }

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
// Dim values.
func (r *Raw) Features(out []float32) {
	out = out[:Dim]
	for j := range out {
		// r.Feature(j), written out: the call per feature cost more than
		// the conversion of a linear one.
		var f float32
		if isLog[j] {
			f = lg(r[j])
		} else {
			f = float32(r[j])
		}
		if d := f - f; d != d { // ±Inf or NaN
			f = 0
		}
		out[j] = f
	}
}

// ExtractRaw updates the state with p and writes the raw features of p's
// source to raw (see Raw).
func (e *Extractor) ExtractRaw(p *event.Packet, raw *Raw) {
	now := p.TimestampNs
	isARP := p.Flags&event.FlagARP != 0
	isIP := p.Flags&(event.FlagIPv4|event.FlagIPv6) != 0
	frag := p.Flags&event.FlagFragment != 0
	l4 := isIP && !frag && (p.Proto == event.ProtoTCP || p.Proto == event.ProtoUDP)
	tcp := isIP && !frag && p.Proto == event.ProtoTCP

	// Failures come back to the source: a RST, or an ICMP destination
	// unreachable (type 3 / ICMPv6 type 1), counts for the packet's
	// destination if that host is tracked (no entry is created for it).
	if isIP && ((tcp && p.TCPFlags&event.TCPRst != 0) ||
		(p.Proto == event.ProtoICMP && p.SrcPort == 3) || (p.Proto == event.ProtoICMPv6 && p.SrcPort == 1)) {
		k, h := e.keyOf(p.DstIP, p.DstMAC, true)
		if v, last := e.hosts.Lookup(&k, h); v != nil {
			e.decay(v, last, now)
			for i := range v.win {
				v.win[i].failedIn++
			}
		}
	}

	if isARP && p.DstPort == 1 && p.SrcIP != p.DstIP {
		// The entry is created if absent (bounded like any other): the
		// owner's reply usually comes next.
		k, h := e.keyOf(p.DstIP, p.DstMAC, true)
		v, last := e.hosts.Get(&k, h, now)
		e.decay(v, last, now)
		v.arpAsked = min(v.arpAsked+1, 8)
	}

	k, h := e.keyOf(p.SrcIP, p.SrcMAC, isIP || isARP)
	v, last := e.hosts.Get(&k, h, now)
	e.decay(v, last, now)

	// Sketch epochs.
	ep := now / epochNs
	switch {
	case ep == v.epoch:
	case ep == v.epoch+1:
		v.prev, v.cur = v.cur, [3]sketch{}
		v.epoch = ep
	case ep > v.epoch:
		v.prev, v.cur = [3]sketch{}, [3]sketch{}
		v.epoch = ep
	}

	r := classify(p, l4)
	newDst, knownPair := false, false
	if r == roleOpen || (r == roleInitiator && tcp && p.TCPFlags&(event.TCPFin|event.TCPRst) != 0) {
		hh := flowtab.Mix(e.seed^flowtab.LE64(p.DstIP[0:]), flowtab.LE64(p.DstIP[8:]))
		port := uint64(0)
		if l4 {
			port = uint64(p.DstPort) | uint64(p.Proto)<<16
		}
		ph := flowtab.Mix(e.seed^port, 0x9e3779b97f4a7c15)
		pair := flowtab.Mix(hh, ph)
		if r == roleOpen {
			v.cur[1].set(hh)
			if l4 {
				v.cur[0].set(ph)
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
	if isARP && p.DstPort == 2 || isARP && p.SrcIP == p.DstIP { // replies and gratuitous announcements
		if v.arpSeen && v.arpMAC != p.SrcMAC {
			v.macChanges++
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
		}
	}
	initiator := r != roleResponder
	syn := r == roleOpen && tcp
	odd := tcp && oddTCP(p.TCPFlags)
	icmpReq := r == roleOpen && (p.Proto == event.ProtoICMP || p.Proto == event.ProtoICMPv6) && isIP
	dns := r == roleOpen && l4 && p.DstPort == 53
	for i, l := range lambdas {
		c := &v.win[i]
		if initiator {
			c.initPkts++
			c.initBytes += float64(p.Length)
			if tcp {
				c.initTCP++
			}
		}
		if r == roleOpen {
			c.opens++
		}
		if newDst {
			c.newDst++
		}
		if syn {
			c.syn++
		}
		if odd {
			c.odd++
		}
		if icmpReq {
			c.icmpReq++
		}
		if isARP && p.DstPort == 1 {
			c.arpReq++
		}
		if unsolicited {
			c.arpUnsol++
		}
		if dns {
			c.dns++
			c.dnsBytes += float64(p.Length)
		}
		// A decayed count w of events at a steady rate r settles at
		// r/(λ·ln 2): scale counts to per-second rates.
		sc := l * math.Ln2
		o := raw[i*perWindow:]
		o[0] = ratio(c.initBytes, c.initPkts)
		o[1] = c.opens * sc
		o[2] = c.newDst * sc
		o[3] = min(1, ratio(c.failedIn, c.syn))
		o[4] = min(1, ratio(c.syn, c.initTCP))
		o[5] = c.odd * sc
		o[6] = c.icmpReq * sc
		o[7] = c.arpReq * sc
		o[8] = c.arpUnsol * sc
		o[9] = min(1, ratio(c.dns, c.opens))
		o[10] = ratio(c.dnsBytes, c.dns)
	}
	raw[Dim-4] = float64(distinctFeature(&v.cur[0], &v.prev[0], &v.distKey[0], &v.distVal[0]))
	raw[Dim-3] = float64(distinctFeature(&v.cur[1], &v.prev[1], &v.distKey[1], &v.distVal[1]))
	raw[Dim-2] = v.macChanges
	raw[Dim-1] = v.shortConns * slowLambda * math.Ln2
}

// lg is the log scale of counts and rates: log(1+x), 0 for x ≤ 0.
func lg(x float64) float32 {
	if !(x > 0) {
		return 0
	}
	return float32(math.Log1p(x))
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

// Stats returns the table statistics.
func (e *Extractor) Stats() Stats {
	t := &e.hosts
	return Stats{Entries: t.Len(), Capacity: t.Cap(), Evictions: t.Evictions(), EntryBytes: t.EntryBytes(),
		MemoryBytes: int64(t.Slots() * t.EntryBytes())}
}
