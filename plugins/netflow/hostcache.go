package netflow

import (
	"math"
	"math/bits"

	nhfeat "github.com/vigil-edge/vigil/models/features/nethost"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Score reuse for nethost/v1.
//
// nethost/v1 describes a source's aggregated evidence; consecutive packets of
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
	// cacheSets × cacheWays entries of about 300 bytes: 1.2 MB, allocated
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
	vec     [nhfeat.Dim]float32
	contrib [nhfeat.Dim]float32
	// raw holds, for each log-scaled feature (logFeatures), the raw value
	// (nhfeat.Raw) the scored vector's feature was computed from.
	raw [numLog]float32
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

// close reports whether every feature of v is within the tolerance of the
// entry's scored vector.
func (e *hostEntry) close(v []float32, abs, rel float32) bool {
	v = v[:nhfeat.Dim]
	for j, old := range e.vec {
		if !within(v[j], old, abs, rel) {
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

// numLog is the number of log-scaled nethost/v1 features.
const numLog = 14

// logFeatures lists the log-scaled features (nhfeat.IsLog), linear lists
// the others.
var logFeatures, linear = func() (l, o []int) {
	for j := range nhfeat.Dim {
		if nhfeat.IsLog(j) {
			l = append(l, j)
		} else {
			o = append(o, j)
		}
	}
	if len(l) != numLog {
		panic("netflow: nethost/v1 log-scaled features changed; update numLog")
	}
	return l, o
}()

// setRaw keeps the raw values of the log-scaled features of the vector
// being scored.
func (e *hostEntry) setRaw(r *nhfeat.Raw) {
	for k, j := range logFeatures {
		e.raw[k] = float32(r[j])
	}
}

// linearFeature is r.Feature(j) for a feature j that is not log-scaled
// (inlined; TestLinearFeature): the float32 value, 0 for ±Inf and NaN.
func linearFeature(x float64) float32 {
	f := float32(x)
	if d := f - f; d != d {
		return 0
	}
	return f
}

// surelyClose reports true only if close would report true for the vector
// of r (r.Features), without computing the log-scaled features: those are
// bounded from their raw values. False means undecided: compute the vector
// and call close.
//
// For x, x0 ≥ 0, |log1p(x) − log1p(x0)| ≤ |x − x0| / (1 + min(x, x0)). The
// scored feature old is float32(log1p(x0)) and e.raw holds float32(x0), so
// the feature of x differs from old by at most that bound (with x0 from
// e.raw) plus three float32 roundings (of x0, old and the new feature: a
// few 2^-24 relative to 1 + |old| + tolerance). If that stays below the
// tolerance t = abs + rel·|old| less a margin far above those roundings
// (and above a float32 ulp of t, however the test rounds t), the exact
// difference is at most t and so is its float32 rounding: close passes.
//
// The test is written without a division (|x − x0| > (t − margin)·(1 +
// min)): the two forms differ by float64 roundings, some 1e-16 relative,
// far inside the 1e-5 margin; the division was the costliest instruction of
// the plugin's reuse path (surelyClose was ~8% of a scan's CPU in `perf`).
func (e *hostEntry) surelyClose(r *nhfeat.Raw, abs, rel float32) bool {
	for _, j := range linear {
		if !within(linearFeature(r[j]), e.vec[j], abs, rel) {
			return false
		}
	}
	for k, j := range logFeatures {
		x, x0 := r[j], float64(e.raw[k])
		if !(x >= 0 && x <= math.MaxFloat32 && x0 >= 0 && x0 <= math.MaxFloat32) {
			return false // NaN, Inf or negative: let the vector decide
		}
		m := math.Abs(float64(e.vec[j]))
		t := float64(abs) + float64(rel)*m
		margin := 1e-5 * (1 + m + t)
		if math.Abs(x-x0) > (t-margin)*(1+min(x, x0)) {
			return false
		}
	}
	return true
}

// reset forgets every entry (a new model scores differently).
func (c *hostCache) reset() {
	clear(c.entries)
	c.pending = c.pending[:0]
}
