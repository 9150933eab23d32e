package netflow

import (
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
	// cacheSets × cacheWays entries of about 240 bytes: 1 MB, allocated
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
		d := v[j] - old
		m := old
		if m < 0 {
			m = -m
		}
		if d > abs+rel*m || -d > abs+rel*m {
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
