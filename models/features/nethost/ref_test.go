package nethost

// This file keeps the extractor's code as it was before the CPU work of
// session 2 (nethost.go at that commit), renamed with a ref prefix, as the
// reference that the match tests compare the optimised code with bit for
// bit, and as the "before" side of the Capture benchmarks. Do not optimise
// it.

import (
	"math"
	"math/bits"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/features/internal/flowtab"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

const refPerWindow = 11

var refLambdas = [2]float64{1, 0.1}

// refEpochNs is the length of a refSketch epoch.
const refEpochNs = 10_000_000_000

const (
	refKindIP  uint8 = 1
	refKindMAC uint8 = 2
)

type refHostKey struct {
	addr [16]byte
	kind uint8
}

// refCounters are the decayed sums of one window.
type refCounters struct {
	initPkts, initBytes, opens, newDst, failedIn, syn, initTCP, odd, icmpReq, arpReq, arpUnsol, dns, dnsBytes float64
}

type refSketch [4]uint64 // 256 bits

type refHostVal struct {
	win        [2]refCounters
	macChanges float64 // decayed with λ = 0.1
	shortConns float64 // decayed with λ = 0.1
	arpAsked   float64 // ARP requests seen for this IP (decayed with λ = 0.1), not yet answered
	epoch      int64
	cur        [3]refSketch // ports, hosts, (host,port) pairs
	prev       [3]refSketch
	arpMAC     [6]byte
	arpSeen    bool
	// distKey and distVal cache the dst_ports and dst_hosts features: the
	// value is a function of the sketches' number of set bits only (key:
	// that number + 1; 0: none cached), which changes only on opens to new
	// destinations, so most packets skip its two logarithms.
	distKey [2]uint16
	distVal [2]float32
}

// refExtractor computes nethost/v1 features. Not safe for concurrent use.
type refExtractor struct {
	seed  uint64
	hosts flowtab.Table[refHostKey, refHostVal]
	// decayDt and decayF memoize decay's factors of the last time step:
	// steady traffic repeats time steps, and the factors are a function of
	// the step alone (decayDt 0: none yet, as decay never computes a step
	// ≤ 0).
	decayDt int64
	decayF  [len(refLambdas)]float64
}

// refNew returns an extractor with empty state.
func refNew(cfg Config) *refExtractor {
	if cfg.MaxHosts <= 0 {
		cfg.MaxHosts = DefaultMaxHosts
	}
	return &refExtractor{seed: cfg.HashSeed, hosts: flowtab.New[refHostKey, refHostVal](cfg.MaxHosts)}
}

func (e *refExtractor) keyOf(addr [16]byte, mac [6]byte, ip bool) (refHostKey, uint64) {
	k := refHostKey{addr: addr, kind: refKindIP}
	if !ip {
		k = refHostKey{kind: refKindMAC}
		copy(k.addr[:], mac[:])
	}
	return k, flowtab.Mix(e.seed^flowtab.LE64(k.addr[0:])^uint64(k.kind)<<56, flowtab.LE64(k.addr[8:]))
}

const refSlowLambda = 0.1

// decay ages v's decayed sums from packet time *last to now and sets *last
// to now.
func (e *refExtractor) decay(v *refHostVal, last *int64, now int64) {
	dt := now - *last
	if dt <= 0 {
		return
	}
	*last = now
	if dt != e.decayDt {
		s := float64(dt) * 1e-9
		for i, l := range refLambdas {
			e.decayF[i] = math.Exp2(-l * s)
		}
		e.decayDt = dt
	}
	for i, l := range refLambdas {
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
		if l == refSlowLambda {
			v.macChanges *= f
			v.shortConns *= f
			v.arpAsked *= f
		}
	}
}

func (s *refSketch) set(h uint64) (was bool) {
	i, b := (h>>6)&3, uint64(1)<<(h&63)
	was = s[i]&b != 0
	s[i] |= b
	return was
}

func (s *refSketch) has(h uint64) bool { return s[(h>>6)&3]&(uint64(1)<<(h&63)) != 0 }

// refDistinctFeature is the log-scaled estimate of the number of distinct items
// in a ∪ b, cached in *key and *val by the number of set bits it depends on.
func refDistinctFeature(a, b *refSketch, key *uint16, val *float32) float32 {
	ones := 0
	for i := range a {
		ones += bits.OnesCount64(a[i] | b[i])
	}
	if k := uint16(ones + 1); *key != k {
		*key, *val = k, refLg(refDistinctOnes(ones))
	}
	return *val
}

// refDistinctOnes estimates a number of distinct items by linear counting from
// the number of set bits (ones) of a 256-bit refSketch.
func refDistinctOnes(ones int) float64 {
	const m = 256
	zeros := m - ones
	if zeros == 0 {
		zeros = 1 // saturated: about m·ln(m) ≈ 1420
	}
	return m * math.Log(float64(m)/float64(zeros))
}

// refRole is a packet's refRole (see the package documentation).
type refRole uint8

const (
	refRoleResponder refRole = iota
	refRoleInitiator         // initiator side, not an open
	refRoleOpen              // connection-initiating (also initiator side)
)

// refClassify returns p's refRole. ip says p is an unfragmented-or-first IP packet
// with ports (frag excluded by the caller for ports).
func refClassify(p *event.Packet, l4 bool) refRole {
	switch {
	case p.Flags&event.FlagARP != 0:
		if p.DstPort == 1 { // request
			return refRoleOpen
		}
		return refRoleInitiator
	case p.Flags&(event.FlagIPv4|event.FlagIPv6) == 0:
		return refRoleInitiator
	}
	switch p.Proto {
	case event.ProtoTCP:
		if !l4 {
			return refRoleInitiator
		}
		f := p.TCPFlags
		switch {
		case f&(event.TCPSyn|event.TCPAck|event.TCPRst) == event.TCPSyn:
			return refRoleOpen
		case f&(event.TCPSyn|event.TCPAck) == event.TCPSyn|event.TCPAck:
			return refRoleResponder
		case p.SrcPort > p.DstPort:
			return refRoleInitiator
		}
		return refRoleResponder
	case event.ProtoUDP:
		if !l4 {
			return refRoleInitiator
		}
		if p.SrcPort > p.DstPort || (p.SrcPort == p.DstPort && p.SrcPort != 53) {
			return refRoleOpen
		}
		return refRoleResponder
	case event.ProtoICMP:
		switch p.SrcPort { // type
		case 8, 13, 15, 17: // echo, timestamp, information, address mask requests
			return refRoleOpen
		}
		return refRoleResponder
	case event.ProtoICMPv6:
		switch p.SrcPort {
		case 128: // echo request
			return refRoleOpen
		case 133, 135: // router and neighbour solicitations: housekeeping
			return refRoleInitiator
		}
		return refRoleResponder
	}
	return refRoleInitiator
}

// refOddTCP reports flag combinations no normal TCP stack sends.
func refOddTCP(f uint8) bool {
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

// refRaw holds the features of a packet before their final scaling: for a
// log-scaled feature (IsLog) the count or rate x that the feature is
// log(1+x) of, for the others the feature's value itself. A consumer that
// may not need the vector (a score cache comparing against a previous
// vector) can bound the change of the log-scaled features from x alone and
// skip the logarithms; Features gives the vector bit for bit as Extract.
type refRaw [DimV7]float64 // the reference computes nethost/v1 only: Raw[Dim:] stays zero

// refIsLog marks the log-scaled features (see the package documentation).
var refIsLog = func() (l [Dim]bool) {
	for w := range refLambdas {
		for _, j := range []int{1, 2, 5, 6, 7, 8} { // the *_rate statistics
			l[w*refPerWindow+j] = true
		}
	}
	l[Dim-2], l[Dim-1] = true, true // arp_mac_changes, short_conn_rate
	return l
}()

// Features writes the feature vector of r to out, which must hold at least
// Dim values.
func (r *refRaw) Features(out []float32) {
	out = out[:Dim]
	for j := range out {
		// r.Feature(j), written out: the call per feature cost more than
		// the conversion of a linear one.
		var f float32
		if refIsLog[j] {
			f = refLg(r[j])
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
// source to raw (see refRaw).
func (e *refExtractor) ExtractRaw(p *event.Packet, raw *refRaw) {
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
	ep := now / refEpochNs
	switch {
	case ep == v.epoch:
	case ep == v.epoch+1:
		v.prev, v.cur = v.cur, [3]refSketch{}
		v.epoch = ep
	case ep > v.epoch:
		v.prev, v.cur = [3]refSketch{}, [3]refSketch{}
		v.epoch = ep
	}

	r := refClassify(p, l4)
	newDst, knownPair := false, false
	if r == refRoleOpen || (r == refRoleInitiator && tcp && p.TCPFlags&(event.TCPFin|event.TCPRst) != 0) {
		hh := flowtab.Mix(e.seed^flowtab.LE64(p.DstIP[0:]), flowtab.LE64(p.DstIP[8:]))
		port := uint64(0)
		if l4 {
			port = uint64(p.DstPort) | uint64(p.Proto)<<16
		}
		ph := flowtab.Mix(e.seed^port, 0x9e3779b97f4a7c15)
		pair := flowtab.Mix(hh, ph)
		if r == refRoleOpen {
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
	initiator := r != refRoleResponder
	syn := r == refRoleOpen && tcp
	odd := tcp && refOddTCP(p.TCPFlags)
	icmpReq := r == refRoleOpen && (p.Proto == event.ProtoICMP || p.Proto == event.ProtoICMPv6) && isIP
	dns := r == refRoleOpen && l4 && p.DstPort == 53
	for i, l := range refLambdas {
		c := &v.win[i]
		if initiator {
			c.initPkts++
			c.initBytes += float64(p.Length)
			if tcp {
				c.initTCP++
			}
		}
		if r == refRoleOpen {
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
		o := raw[i*refPerWindow:]
		o[0] = refRatio(c.initBytes, c.initPkts)
		o[1] = c.opens * sc
		o[2] = c.newDst * sc
		o[3] = min(1, refRatio(c.failedIn, c.syn))
		o[4] = min(1, refRatio(c.syn, c.initTCP))
		o[5] = c.odd * sc
		o[6] = c.icmpReq * sc
		o[7] = c.arpReq * sc
		o[8] = c.arpUnsol * sc
		o[9] = min(1, refRatio(c.dns, c.opens))
		o[10] = refRatio(c.dnsBytes, c.dns)
	}
	raw[Dim-4] = float64(refDistinctFeature(&v.cur[0], &v.prev[0], &v.distKey[0], &v.distVal[0]))
	raw[Dim-3] = float64(refDistinctFeature(&v.cur[1], &v.prev[1], &v.distKey[1], &v.distVal[1]))
	raw[Dim-2] = v.macChanges
	raw[Dim-1] = v.shortConns * refSlowLambda * math.Ln2
}

// refLg is the log scale of counts and rates: log(1+x), 0 for x ≤ 0.
func refLg(x float64) float32 {
	if !(x > 0) {
		return 0
	}
	return float32(math.Log1p(x))
}

func refRatio(a, b float64) float64 {
	if b <= 1e-3 {
		return 0
	}
	return a / b
}

// BenchmarkCaptureRefExtractRaw is BenchmarkCaptureExtractRaw of the
// reference code: the before figure, in the same binary and run.
func BenchmarkCaptureRefExtractRaw(b *testing.B) {
	benchCaptureWith(b, func() *refExtractor { return refNew(Config{}) },
		func(e *refExtractor, p *event.Packet, raw *Raw, _ []float32) { e.ExtractRaw(p, (*refRaw)(raw)) })
}

// BenchmarkCaptureRefExtract is BenchmarkCaptureExtract of the reference
// code.
func BenchmarkCaptureRefExtract(b *testing.B) {
	benchCaptureWith(b, func() *refExtractor { return refNew(Config{}) },
		func(e *refExtractor, p *event.Packet, raw *Raw, out []float32) {
			e.ExtractRaw(p, (*refRaw)(raw))
			(*refRaw)(raw).Features(out)
		})
}

// BenchmarkCaptureRefDecodeExtract is BenchmarkCaptureDecodeExtract of the
// reference code.
func BenchmarkCaptureRefDecodeExtract(b *testing.B) {
	path := refCapturePath()
	if path == "" {
		b.Skip("no reference capture (make bench builds it)")
	}
	out := make([]float32, Dim)
	var total int
	var cpu time.Duration
	for b.Loop() {
		e := refNew(Config{})
		var r refRaw
		n, c := decodeExtract(b, path, func(p *event.Packet) { e.ExtractRaw(p, &r); r.Features(out) })
		total += n
		cpu += c
	}
	b.ReportMetric(float64(total)/cpu.Seconds(), "packets/CPU-s")
}
