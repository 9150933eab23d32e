package netflow

import (
	"slices"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// The beacon rule: periodic connections.
//
// Malware calls its command-and-control server back at a fixed interval,
// often with a little jitter: a new TCP connection to the same address and
// port every few seconds or minutes, each one ordinary in itself. nethost's
// host_beacon feature sees the recurrence, but the model clips every
// feature at twice its training range, so a beacon that runs longer than
// any benign recurrence cannot score higher than a short one: on the two
// HTTPS beacons of the shared captures (test-cc-capture-1 and -2, every
// 2-3 s) the model's scores stay under 1.5 × its threshold (docs/models.md,
// section 19).
//
// The rule is the one of the beacon analysers used in threat hunting (RITA,
// Active Countermeasures: the dispersion of the intervals between a pair's
// connections, measured by their median absolute deviation): per (source,
// destination address, destination port), the detector keeps the start
// times of the last beaconRing TCP connections (a SYN without ACK; a
// retransmitted SYN, from the same source port within beaconRetransmit,
// is not a new start). When a new start makes at least MinIntervals
// intervals, spanning at least beaconMinSpan, whose median M is at least
// beaconMinPeriod, and whose median absolute deviation is at most
// beaconMaxRelMAD × M (uniform jitter of up to about ±20%), the start is
// flagged: a beacon anomaly at BeaconRatio × its threshold (medium), led
// by the pseudo-feature "beacon", which the agent titles "Periodic
// connections" and reports from one packet, as it does the content hints.
//
// What it leaves: beacons with more jitter, beacons over UDP (DNS), and
// keep-alives inside one long connection. The benign traffic it flags is
// scheduled polling by new connections at a fixed period (a monitoring
// check, a script's retry loop): an analyst suppresses those once.
//
// The table is bounded and set-associative like the lead-in's
// (beaconSets × beaconWays pairs, about 1.3 MB); a new pair replaces the
// least recently started of its set. Only connection starts touch it.

// DefaultBeaconIntervals is the default Options.BeaconIntervals.
const DefaultBeaconIntervals = 20

// BeaconRatio is the score/threshold ratio of a beacon anomaly: medium
// severity in the agent (agent/detect.Severity).
const BeaconRatio = 1.5

// BeaconFeature names the pseudo-feature that leads a beacon anomaly.
const BeaconFeature = "beacon"

const (
	beaconRing       = 32 // starts kept per pair: up to 31 intervals
	beaconWays       = 4
	beaconSets       = 1024
	beaconMinPeriod  = int64(1e9)  // 1 s: faster recurrences are retries and fetch loops
	beaconMinSpan    = int64(60e9) // 60 s
	beaconMaxRelMAD  = 0.1
	beaconRetransmit = int64(10e9) // a SYN from the same source port within 10 s: a retransmission
)

type beaconKey struct {
	src, dst [16]byte
	port     uint16
}

type beaconTag struct {
	key    beaconKey
	used   bool
	lastNs int64 // last start (replacement order)
}

// beaconEntry holds a pair's last connection starts, oldest first from head.
type beaconEntry struct {
	starts  [beaconRing]int64
	n       uint8  // starts held
	head    uint8  // index of the oldest
	srcPort uint16 // source port of the last start
	total   uint32 // starts seen (saturating)
}

// Beacon describes a flagged connection start.
type Beacon struct {
	PeriodNs    int64  // median interval
	Connections uint32 // starts of the pair seen so far
	SpanNs      int64  // from the oldest start held to this one
}

type beaconTable struct {
	seed      uint64
	intervals int // intervals needed (Options.BeaconIntervals)
	tags      []beaconTag
	entries   []beaconEntry
	scratch   [beaconRing - 1]int64
}

func newBeaconTable(seed uint64, intervals int) *beaconTable {
	return &beaconTable{seed: seed, intervals: min(intervals, beaconRing-1),
		tags: make([]beaconTag, beaconSets*beaconWays), entries: make([]beaconEntry, beaconSets*beaconWays)}
}

// observe records p if it starts a TCP connection and reports whether that
// start completes a beacon.
func (t *beaconTable) observe(p *event.Packet) (Beacon, bool) {
	if p.Proto != event.ProtoTCP || p.TCPFlags&(event.TCPSyn|event.TCPAck) != event.TCPSyn ||
		p.Flags&(event.FlagIPv4|event.FlagIPv6) == 0 {
		return Beacon{}, false
	}
	k := beaconKey{src: p.SrcIP, dst: p.DstIP, port: p.DstPort}
	e := t.entry(k, p.TimestampNs)
	ts := p.TimestampNs
	if e.n > 0 {
		last := e.starts[(int(e.head)+int(e.n)-1)%beaconRing]
		if ts < last {
			return Beacon{}, false // out of order: the intervals would be wrong
		}
		// ts ≥ last: their difference as uint64 is exact (as int64 it
		// overflows for extreme packet times)
		if p.SrcPort == e.srcPort && uint64(ts)-uint64(last) < uint64(beaconRetransmit) {
			return Beacon{}, false
		}
	}
	if e.n == beaconRing {
		e.starts[e.head] = ts
		e.head = (e.head + 1) % beaconRing
	} else {
		e.starts[(int(e.head)+int(e.n))%beaconRing] = ts
		e.n++
	}
	e.srcPort = p.SrcPort
	if e.total < ^uint32(0) {
		e.total++
	}
	return t.judge(e)
}

// judge applies the rule to the entry's starts, the newest last.
func (t *beaconTable) judge(e *beaconEntry) (Beacon, bool) {
	if t.intervals <= 0 || int(e.n)-1 < t.intervals {
		return Beacon{}, false
	}
	first := e.starts[e.head]
	last := e.starts[(int(e.head)+int(e.n)-1)%beaconRing]
	span := last - first
	// Cheap bounds first (a flood's starts come microseconds apart): the
	// median of n-1 intervals is at least beaconMinPeriod only if their sum
	// is at least about half of them times it.
	if span < beaconMinSpan || span < int64(e.n-1)/2*beaconMinPeriod {
		return Beacon{}, false
	}
	d := t.scratch[:e.n-1]
	prev := first
	for i := 1; i < int(e.n); i++ {
		s := e.starts[(int(e.head)+i)%beaconRing]
		d[i-1], prev = s-prev, s
	}
	slices.Sort(d)
	m := median(d)
	if m < beaconMinPeriod {
		return Beacon{}, false
	}
	for i, v := range d {
		if v -= m; v < 0 {
			v = -v
		}
		d[i] = v
	}
	slices.Sort(d)
	if float64(median(d)) > beaconMaxRelMAD*float64(m) {
		return Beacon{}, false
	}
	return Beacon{PeriodNs: m, Connections: e.total, SpanNs: span}, true
}

// median of sorted, non-empty d (the lower middle of an even count).
func median(d []int64) int64 { return d[(len(d)-1)/2] }

// entry returns k's entry, replacing the least recently started of its set
// when absent.
func (t *beaconTable) entry(k beaconKey, ts int64) *beaconEntry {
	h := mix(t.seed^le64(k.src[0:])^uint64(k.port)<<48, le64(k.src[8:])^le64(k.dst[0:])^mix(le64(k.dst[8:]), 0))
	base := int(h%beaconSets) * beaconWays
	victim := base
	found := false
	for i := base; i < base+beaconWays; i++ {
		g := &t.tags[i]
		if g.used && g.key == k {
			victim, found = i, true
			break
		}
		if !g.used {
			victim = i
			break
		}
		if v := &t.tags[victim]; v.used && g.lastNs < v.lastNs {
			victim = i
		}
	}
	g := &t.tags[victim]
	if !found {
		*g = beaconTag{key: k, used: true}
		t.entries[victim] = beaconEntry{}
	}
	if ts > g.lastNs {
		g.lastNs = ts
	}
	return &t.entries[victim]
}
