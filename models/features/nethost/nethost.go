// Package nethost implements the feature set nethost/v1: evidence
// aggregated per source address over time, emitted for every packet of that
// source, so that scans, sweeps and floods, which Kitsune's per-stream
// statistics (netflow/v1) hardly see, stand out packet by packet.
//
// For each decay window λ in {1, 0.1} (half-lives 1 s and 10 s), of the
// packets the source sent:
//
//	pkt_rate      packets per second
//	byte_rate     bytes per second
//	mean_size     mean size on the wire
//	syn_ratio     share of TCP packets that are SYN without ACK
//	failed_ratio  TCP RSTs and ICMP unreachables the source received per SYN
//	              it sent (failed connections), capped at 1
//	icmp_rate     ICMP/ICMPv6 packets per second
//	arp_rate      ARP packets per second
//	dns_share     share of packets to port 53
//	new_dst_rate  packets per second to a (host, port) pair the source had
//	              not used in the last 10-20 s (a 256-bit sketch: once a
//	              source has used several hundred pairs, most new pairs look
//	              known, so this rate under-counts during long scans)
//
// and, over the current and the previous 10-second epoch:
//
//	dst_ports     distinct destination ports (linear-counting bitmap)
//	dst_hosts     distinct destination hosts (linear-counting bitmap)
//
// 2 × 9 + 2 = 20 features. The sketches are 256-bit bitmaps: estimates are
// good to a few percent up to a few hundred and saturate near 1400.
//
// State is one fixed-size, pointer-free entry per source in a capped table
// with least-recently-seen eviction: O(1) work and bounded memory. Frames
// without IP (other than ARP) are keyed by their source MAC.
package nethost

import (
	"math"
	"math/bits"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Name is the feature-set name that model manifests refer to.
const Name = "nethost/v1"

// Dim is the number of features per packet.
const Dim = 2*perWindow + 2

const perWindow = 9

var lambdas = [2]float64{1, 0.1}
var lambdaLabels = [2]string{"1", "0.1"}

// epochNs is the length of a sketch epoch.
const epochNs = 10_000_000_000

var windowStats = [perWindow]string{"pkt_rate", "byte_rate", "mean_size", "syn_ratio", "failed_ratio",
	"icmp_rate", "arp_rate", "dns_share", "new_dst_rate"}

var names = func() []string {
	var n []string
	for _, l := range lambdaLabels {
		for _, s := range windowStats {
			n = append(n, "host_L"+l+"_"+s)
		}
	}
	n = append(n, "host_dst_ports", "host_dst_hosts")
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
	pkts, bytes, tcp, syn, failedIn, icmp, arp, dns, newDst float64
}

type sketch [4]uint64 // 256 bits

type hostVal struct {
	win   [2]counters
	epoch int64
	cur   [3]sketch // ports, hosts, (host,port) pairs
	prev  [3]sketch
}

// Extractor computes nethost/v1 features. Not safe for concurrent use.
type Extractor struct {
	seed  uint64
	hosts table[hostKey, hostVal]
}

// New returns an extractor with empty state.
func New(cfg Config) *Extractor {
	if cfg.MaxHosts <= 0 {
		cfg.MaxHosts = DefaultMaxHosts
	}
	return &Extractor{seed: cfg.HashSeed, hosts: newTable[hostKey, hostVal](cfg.MaxHosts)}
}

func (e *Extractor) keyOf(addr [16]byte, mac [6]byte, ip bool) (hostKey, uint64) {
	k := hostKey{addr: addr, kind: kindIP}
	if !ip {
		k = hostKey{kind: kindMAC}
		copy(k.addr[:], mac[:])
	}
	return k, mix(e.seed^le64(k.addr[0:])^uint64(k.kind)<<56, le64(k.addr[8:]))
}

func decay(v *hostVal, last *int64, now int64) {
	dt := now - *last
	if dt <= 0 {
		return
	}
	*last = now
	s := float64(dt) * 1e-9
	for i, l := range lambdas {
		f := math.Exp2(-l * s)
		c := &v.win[i]
		c.pkts *= f
		c.bytes *= f
		c.tcp *= f
		c.syn *= f
		c.failedIn *= f
		c.icmp *= f
		c.arp *= f
		c.dns *= f
		c.newDst *= f
	}
}

func (s *sketch) set(h uint64) (was bool) {
	i, b := (h>>6)&3, uint64(1)<<(h&63)
	was = s[i]&b != 0
	s[i] |= b
	return was
}

func (s *sketch) has(h uint64) bool { return s[(h>>6)&3]&(uint64(1)<<(h&63)) != 0 }

// distinct estimates the number of distinct items in a ∪ b by linear counting.
func distinct(a, b *sketch) float64 {
	ones := 0
	for i := range a {
		ones += bits.OnesCount64(a[i] | b[i])
	}
	const m = 256
	zeros := m - ones
	if zeros == 0 {
		zeros = 1 // saturated: about m·ln(m) ≈ 1420
	}
	return m * math.Log(float64(m)/float64(zeros))
}

// Extract updates the state with p and writes the features of p's source
// to out, which must hold at least Dim values.
func (e *Extractor) Extract(p *event.Packet, out []float32) {
	out = out[:Dim]
	now := p.TimestampNs
	isIP := p.Flags&(event.FlagIPv4|event.FlagIPv6|event.FlagARP) != 0
	frag := p.Flags&event.FlagFragment != 0
	tcp := p.Proto == event.ProtoTCP && p.Flags&(event.FlagIPv4|event.FlagIPv6) != 0 && !frag
	icmp := (p.Proto == event.ProtoICMP || p.Proto == event.ProtoICMPv6) && p.Flags&(event.FlagIPv4|event.FlagIPv6) != 0

	// Failures come back to the source: a RST, or an ICMP destination
	// unreachable (type 3 / ICMPv6 type 1), counts for the packet's
	// destination if that host is tracked (no entry is created for it).
	if isIP && ((tcp && p.TCPFlags&event.TCPRst != 0) ||
		(icmp && ((p.Proto == event.ProtoICMP && p.SrcPort == 3) || (p.Proto == event.ProtoICMPv6 && p.SrcPort == 1)))) {
		k, h := e.keyOf(p.DstIP, p.DstMAC, true)
		if v, last := e.hosts.lookup(&k, h); v != nil {
			decay(v, last, now)
			for i := range v.win {
				v.win[i].failedIn++
			}
		}
	}

	k, h := e.keyOf(p.SrcIP, p.SrcMAC, isIP)
	v, last := e.hosts.get(&k, h, now)
	decay(v, last, now)

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
	newDst := false
	if isIP && p.Flags&event.FlagARP == 0 {
		hh := mix(e.seed^le64(p.DstIP[0:]), le64(p.DstIP[8:]))
		ph := mix(e.seed^uint64(p.DstPort)^uint64(p.Proto)<<16, 0x9e3779b97f4a7c15)
		pair := mix(hh, ph)
		v.cur[1].set(hh)
		if !frag && (p.Proto == event.ProtoTCP || p.Proto == event.ProtoUDP) {
			v.cur[0].set(ph)
		}
		if !v.prev[2].has(pair) && !v.cur[2].set(pair) {
			newDst = true
		}
	}

	syn := tcp && p.TCPFlags&(event.TCPSyn|event.TCPAck) == event.TCPSyn
	dns := !frag && (p.Proto == event.ProtoUDP || p.Proto == event.ProtoTCP) && p.DstPort == 53
	for i, l := range lambdas {
		c := &v.win[i]
		c.pkts++
		c.bytes += float64(p.Length)
		if tcp {
			c.tcp++
		}
		if syn {
			c.syn++
		}
		if icmp {
			c.icmp++
		}
		if p.Flags&event.FlagARP != 0 {
			c.arp++
		}
		if dns {
			c.dns++
		}
		if newDst {
			c.newDst++
		}
		// A decayed count w of events at a steady rate r settles at
		// r/(λ·ln 2): scale counts to per-second rates.
		r := l * math.Ln2
		o := out[i*perWindow:]
		o[0] = float32(c.pkts * r)
		o[1] = float32(c.bytes * r)
		o[2] = float32(c.bytes / c.pkts)
		o[3] = float32(ratio(c.syn, c.tcp))
		o[4] = float32(math.Min(1, ratio(c.failedIn, c.syn)))
		o[5] = float32(c.icmp * r)
		o[6] = float32(c.arp * r)
		o[7] = float32(c.dns / c.pkts)
		o[8] = float32(c.newDst * r)
	}
	out[Dim-2] = float32(distinct(&v.cur[0], &v.prev[0]))
	out[Dim-1] = float32(distinct(&v.cur[1], &v.prev[1]))
	for i, x := range out {
		if d := x - x; d != d {
			out[i] = 0
		}
	}
}

func ratio(a, b float64) float64 {
	if b <= 1e-12 {
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
	return Stats{Entries: t.used, Capacity: len(t.tags), Evictions: t.evictions, EntryBytes: t.entryBytes(),
		MemoryBytes: int64(len(t.tags) * t.entryBytes())}
}
