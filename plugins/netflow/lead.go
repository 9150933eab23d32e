package netflow

import (
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// The lead-in of a finding.
//
// nethost describes a source by evidence it gathers over seconds (rates of
// opens, distinct ports and hosts, failures): the first probes of a scan,
// the first logins of a brute force and the first requests of a C2 session
// score like ordinary traffic until enough of them have been seen. The
// finding's first_seen is the first packet the model flagged, a few
// packets or seconds after the activity began (docs/models.md, section 20:
// on the labelled attack captures most of the attackers' unflagged packets
// come before their first flagged one). The analyst asks "since when?".
//
// So the detector remembers, per source, how many packets it sent in each
// of the last leadSlots slots of Options.LeadIn/leadSlots (default 1 s),
// and when an anomaly opens a source's aggregation window it attaches the
// packets of the slots before it (sdk.Aggregate.LeadFirstNs, LeadCount,
// LeadBytes): the lead-in. Slots are whole: the lead-in covers the slot of
// the first anomaly up to it and the leadSlots slots before that slot, so
// between LeadIn and LeadIn plus one slot; and it never reaches back into
// the slot of the source's previous anomalous packet (that packet belongs
// to an earlier finding, and so may the packets around it). The scores are
// not changed: the lead-in says where the source's activity began, not
// that its packets were anomalous.
//
// The table is bounded (leadSets × leadWays entries of about 300 bytes,
// 1.2 MB with their tags) and set-associative like the score-reuse cache: a
// new source replaces the least recently seen of its set, whose lead-in is
// then lost (Detector.leadEvictions counts it). Cost: one lookup and a few
// adds per packet, 12-13 ns (BenchmarkLeadTable), about 10% of the plugin's
// share of a scan (BenchmarkScoreReference against ...NoLeadIn).

// DefaultLeadIn is the default Options.LeadIn.
const DefaultLeadIn = 10_000_000_000 // 10 s, in ns

// maxLeadBack is the longest lead-in attached: the agent refuses one that
// begins more than sdk.MaxLeadIn before the first anomaly.
const maxLeadBack = int64(sdk.MaxLeadIn)

const (
	leadSlots = 10 // slots before the first anomaly's own
	leadRing  = leadSlots + 1
	leadWays  = 4
	leadSets  = 1024
)

// leadSlot counts one source's packets in one slot.
type leadSlot struct {
	idx   int64  // slot number (packet time / slot width); valid when pkts > 0
	first int64  // time of the slot's first packet
	pkts  uint32 // saturating
	bytes uint32 // saturating
}

// leadTag identifies the source of an entry: the tags of a set's ways
// share two cache lines, so a lookup touches those and then one slot of the
// entry, not every way's entry.
type leadTag struct {
	addr   [16]byte
	kind   uint8 // 0 empty (sourceKey's kinds otherwise)
	lastNs int64 // last packet time (replacement order)
}

// leadEntry is one source's recent packets.
type leadEntry struct {
	anomSlot int64 // slot of the source's last anomalous packet; valid if hasAnom
	hasAnom  bool
	slots    [leadRing]leadSlot
}

// leadTable holds the lead-in slots of recently seen sources.
type leadTable struct {
	seed    uint64
	width   int64 // slot width, ns
	tags    []leadTag
	entries []leadEntry
	evicted uint64 // entries replaced while they still held a packet of the last LeadIn
	// the previous packet's source and entry: runs of one source skip the
	// hash and the probe
	lastAddr [16]byte
	lastKind uint8
	lastIdx  int
}

func newLeadTable(seed uint64, leadIn int64) *leadTable {
	w := leadIn / leadSlots
	if w < 1 {
		w = 1
	}
	return &leadTable{seed: seed, width: w, tags: make([]leadTag, leadSets*leadWays),
		entries: make([]leadEntry, leadSets*leadWays), lastIdx: -1}
}

// slotOf returns the slot number of packet time ts (floor division: times
// before 1970 are negative).
func (t *leadTable) slotOf(ts int64) int64 {
	q := ts / t.width
	if ts%t.width < 0 {
		q--
	}
	return q
}

// entry returns p's source's entry, replacing the least recently seen of its
// set when absent.
func (t *leadTable) entry(p *event.Packet) *leadEntry {
	addr, kind := sourceKey(p)
	if t.lastIdx >= 0 && kind == t.lastKind && addr == t.lastAddr {
		return t.touch(t.lastIdx, p.TimestampNs)
	}
	h := mix(t.seed^le64(addr[0:])^uint64(kind)<<56, le64(addr[8:]))
	base := int(h%leadSets) * leadWays
	victim := base
	found := false
	for i := base; i < base+leadWays; i++ {
		g := &t.tags[i]
		if g.kind == kind && g.addr == addr {
			victim, found = i, true
			break
		}
		if g.kind == 0 {
			victim = i
			break
		}
		if v := &t.tags[victim]; v.kind != 0 && g.lastNs < v.lastNs {
			victim = i
		}
	}
	if !found {
		g := &t.tags[victim]
		if g.kind != 0 && p.TimestampNs-g.lastNs < t.width*leadRing {
			t.evicted++
		}
		*g = leadTag{addr: addr, kind: kind}
		t.entries[victim] = leadEntry{}
	}
	t.lastAddr, t.lastKind, t.lastIdx = addr, kind, victim
	return t.touch(victim, p.TimestampNs)
}

// touch moves entry i's tag forward in the replacement order to ts.
func (t *leadTable) touch(i int, ts int64) *leadEntry {
	if g := &t.tags[i]; ts > g.lastNs {
		g.lastNs = ts
	}
	return &t.entries[i]
}

// add counts a packet of the entry's source at ts. A packet older than the
// ring (out of order by more than the lead-in) is not counted.
func (e *leadEntry) add(t *leadTable, ts int64, length uint32) {
	k := t.slotOf(ts)
	s := &e.slots[uint64(k)%leadRing]
	switch {
	case s.pkts == 0 || s.idx < k: // empty, or a slot the ring has passed
		*s = leadSlot{idx: k, first: ts, pkts: 1, bytes: length}
	case s.idx == k:
		if s.pkts < ^uint32(0) {
			s.pkts++
		}
		if b := s.bytes + length; b >= s.bytes {
			s.bytes = b
		} else {
			s.bytes = ^uint32(0)
		}
		if ts < s.first {
			s.first = ts
		}
	}
	// s.idx > k: the packet is older than what the ring holds there.
}

// markAnomalous records that the source sent an anomalous packet at ts: no
// later lead-in reaches back into its slot.
func (e *leadEntry) markAnomalous(t *leadTable, ts int64) {
	if k := t.slotOf(ts); !e.hasAnom || k > e.anomSlot {
		e.anomSlot, e.hasAnom = k, true
	}
}

// lead returns the lead-in of an anomaly of the entry's source at ts, from
// the packets added before it: the first packet's time, the packets (0:
// no lead-in) and their bytes.
func (e *leadEntry) lead(t *leadTable, ts int64) (first int64, pkts, bytes uint64) {
	cur := t.slotOf(ts)
	lo := cur - leadSlots
	if e.hasAnom && e.anomSlot >= lo {
		lo = e.anomSlot + 1
	}
	for i := range e.slots {
		s := &e.slots[i]
		if s.pkts == 0 || s.idx < lo || s.idx > cur {
			continue
		}
		if s.first > ts { // an out-of-order packet from after the anomaly
			continue
		}
		if ts-s.first > maxLeadBack {
			// The slot before the lead-in's whole slots reaches past
			// what the agent accepts (LeadIn near sdk.MaxLeadIn).
			continue
		}
		if pkts == 0 || s.first < first {
			first = s.first
		}
		pkts += uint64(s.pkts)
		bytes += uint64(s.bytes)
	}
	return first, pkts, bytes
}
