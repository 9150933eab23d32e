package netflow

import (
	"math"
	"math/bits"

	nhfeat "github.com/vigil-edge/vigil/models/features/nethost"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Score reuse for nethost (v1 to v7).
//
// nethost describes a source's aggregated evidence; consecutive packets of
// one source mostly carry almost the same vector (decayed rates a few
// microseconds apart). Scoring every packet spent most of the plugin's time
// in ONNX Runtime for scores that differed in the fourth digit. The detector
// therefore scores a source's vector when it has changed materially since
// the source's last scored vector (any feature by more than
// ReuseAbs + ReuseRel·|old|) or when that score is older than ReuseMaxAge of
// packet time, and otherwise gives the packet the last score and
// contributions of its source. The comparison is always against the last
// scored vector, not the previous packet's, so slow drift adds up and is
// rescored. The decision depends only on the packet sequence, so results do
// not depend on how the ring cut the stream into batches.

// Default reuse tolerances (Options.ReuseAbs, ReuseRel, ReuseMaxAge).
const (
	DefaultReuseAbs    = 0.01
	DefaultReuseRel    = 0.01
	DefaultReuseMaxAge = 1_000_000_000 // 1 s of packet time, in ns
)

const (
	cacheWays = 4
	// cacheSets × cacheWays entries of about 540 bytes: 2.2 MB, allocated
	// with the first nethost model.
	cacheSets = 1024
)

// hostEntry is the last scored nethost/v1 vector of one source. It holds no
// pointers.
type hostEntry struct {
	addr    [16]byte
	kind    uint8 // 0 empty, 1 IP or ARP sender address, 2 MAC
	pending bool  // scored in the current batch: row is valid, score and contrib are not yet
	row     int32
	tns     int64 // packet time of the scored vector
	score   float32
	// A nethost/v1 or v2 vector leaves the values beyond its dimension zero.
	vec     [nhfeat.DimV7]float32
	contrib [nhfeat.DimV7]float32
	// lo and hi bound, per feature, the raw values (nhfeat.Raw) whose
	// feature is surely within the reuse tolerance of vec (setBounds).
	lo, hi [nhfeat.DimV7]float32
}

// hostCache is a set-associative cache of hostEntry, least recently scored
// replaced first. A miss only costs a scoring, so collisions are harmless.
type hostCache struct {
	seed    uint64
	entries []hostEntry
	pending []int32 // entries set pending in the current batch
	hits    uint64
	misses  uint64
}

func newHostCache(seed uint64) *hostCache {
	return &hostCache{seed: seed, entries: make([]hostEntry, cacheSets*cacheWays)}
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a^0xa0761d6478bd642f, b^0xe7037ed1a0b428db)
	h := hi ^ lo
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// sourceKey is the key nethost/v1 keeps a packet's source under: its IP
// address (IP and ARP), else its MAC address.
func sourceKey(p *event.Packet) (addr [16]byte, kind uint8) {
	if p.Flags&(event.FlagIPv4|event.FlagIPv6|event.FlagARP) != 0 {
		return p.SrcIP, 1
	}
	copy(addr[:], p.SrcMAC[:])
	return addr, 2
}

// lookup returns the entry of p's source, creating one (replacing the least
// recently scored of its set) when absent; fresh reports a new entry.
func (c *hostCache) lookup(p *event.Packet) (idx int, fresh bool) {
	addr, kind := sourceKey(p)
	h := mix(c.seed^le64(addr[0:])^uint64(kind)<<56, le64(addr[8:]))
	base := int(h%cacheSets) * cacheWays
	victim := base
	for i := base; i < base+cacheWays; i++ {
		e := &c.entries[i]
		if e.kind == kind && e.addr == addr {
			return i, false
		}
		if e.kind == 0 {
			victim = i
			break
		}
		if v := &c.entries[victim]; v.kind != 0 && e.tns < v.tns {
			victim = i
		}
	}
	e := &c.entries[victim]
	*e = hostEntry{addr: addr, kind: kind}
	return victim, true
}

// close reports whether every feature of v (any nethost version) is within
// the tolerance of the entry's scored vector.
func (e *hostEntry) close(v []float32, abs, rel float32) bool {
	for j, x := range v[:min(len(v), len(e.vec))] {
		if !within(x, e.vec[j], abs, rel) {
			return false
		}
	}
	return true
}

// within is the tolerance test of one feature: x within abs + rel·|old| of
// old.
func within(x, old, abs, rel float32) bool {
	d := x - old
	m := old
	if m < 0 {
		m = -m
	}
	return !(d > abs+rel*m || -d > abs+rel*m)
}

// surelyClose reports true only if close would report true for the vector
// of r (r.Features), without computing the vector: every raw value lies in
// the interval that setBounds derived from the scored vector. False means
// undecided: compute the vector and call close. Two comparisons per
// feature; NaN fails them.
func (e *hostEntry) surelyClose(r *nhfeat.Raw) bool {
	for j := range r {
		if x := r[j]; !(x >= float64(e.lo[j]) && x <= float64(e.hi[j])) {
			return false
		}
	}
	return true
}

// setBounds derives, from the scored vector e.vec and the raw values r it
// was computed from, the raw intervals [lo, hi] that surelyClose tests.
// Both bounds lie inside the exact interval of the tolerance test, shrunk
// by a margin m' = 1e-5·(1 + |old| + t), where t = abs + rel·|old| and
// t' = t − m'; m' is far above every rounding below (each a few 2^-24
// relative to 1 + |old| + t).
//
// Linear features: feature = float32(x), close needs |f − old| ≤ t
// (float32 arithmetic): the interval is old ± t'.
//
// Log-scaled features: feature = float32(log1p(x)). For x, x0 ≥ 0,
// |log1p(x) − log1p(x0)| ≤ |x − x0| / (1 + min(x, x0)), so the feature is
// within t of old whenever (x0 − t')/(1 + t') ≤ x ≤ x0 + t'·(1 + x0), x0
// being the raw value rounded to float32 (the roundings of x0, old and the
// new feature are inside the margin); x stays in [0, MaxFloat32].
//
// The roundings of the bounds to float32 move them by at most 2^-24 of
// their value, which changes the feature difference they admit by at most
// about 2^-24·(1 + |old| + t): inside the margin too. So surelyClose never
// says "close" where close would not (TestSurelyCloseImpliesClose on real
// captures, TestSurelyCloseBoundary at the edge of every feature).
//
// Computed once per scored vector instead of per packet: at 0.7 reuse hits
// per packet, the per-packet form was the plugin's costliest function (12%
// of a scan's CPU in perf).
func (e *hostEntry) setBounds(r *nhfeat.Raw, abs, rel float32) {
	for j := range r {
		old := float64(e.vec[j])
		m := old
		if m < 0 {
			m = -m
		}
		t := float64(abs) + float64(rel)*m
		tp := t - 1e-5*(1+m+t)
		var lo, hi float64
		if isLog[j] {
			// (x0 − t')/(1 + t') without the division: for t' > 0,
			// 1/(1 + t') ≤ 1 − t' + t'², so (x0 − t')·(1 − t' + t'²) is
			// a lower bound at least as tight as needed (inwards by
			// O(t'³) relative); below 0 it is clamped to 0.
			x0 := float64(float32(r[j]))
			lo = (x0 - tp) * (1 - tp + tp*tp)
			hi = x0 + tp*(1+x0)
			if lo < 0 {
				lo = 0
			}
			if hi > math.MaxFloat32 {
				hi = math.MaxFloat32
			}
			if !(x0 >= 0 && x0 <= math.MaxFloat32) { // NaN, negative or too large: empty
				lo, hi = 1, 0
			}
		} else {
			lo, hi = old-tp, old+tp
		}
		if !(tp > 0) {
			lo, hi = 1, 0 // empty
		}
		// float32 rounds a bound by at most 2^-24 of itself: far inside
		// the margin (see above), so no directed rounding (whose
		// data-dependent branches cost more than the rest of the loop).
		e.lo[j], e.hi[j] = float32(lo), float32(hi)
	}
}

// isLog marks the log-scaled nethost features (nhfeat.IsLog).
var isLog = func() (l [nhfeat.DimV7]bool) {
	for j := range l {
		l[j] = nhfeat.IsLog(j)
	}
	return l
}()

// reset forgets every entry (a new model scores differently).
func (c *hostCache) reset() {
	clear(c.entries)
	c.pending = c.pending[:0]
}
