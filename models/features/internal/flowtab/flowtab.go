// Package flowtab is the bounded, pointer-free hash table that the feature
// sets keep their per-host, per-channel and per-socket state in: fixed
// capacity, O(1) work per packet (a bounded probe window) and eviction of the
// least recently seen entry, so that no traffic can slow or bloat an
// extractor. It also holds the hash the feature sets key it with.
package flowtab

import (
	"math/bits"
	"reflect"
	"unsafe"
)

// probeWindow is how many consecutive slots a key may live in. Lookups and
// inserts touch at most this many slots: O(1) per packet whatever the
// traffic. When all slots of a key's window are taken, the least recently
// seen one is evicted (a bucketed LRU).
const probeWindow = 8

// entry is one table entry: key, clock and value, so that a lookup that
// hits reads the tag array and the entry's first cache line (key and
// clock) before the value. K and V must hold no pointers, so the backing
// arrays are never scanned by the garbage collector.
type entry[K comparable, V any] struct {
	key  K
	last int64 // time (ns) of the entry's latest packet: decay clock and LRU clock
	val  V
}

// Table is a bounded open-addressing hash table with bounded linear probing
// and least-recently-seen eviction. It never deletes, so an empty slot ends
// every probe sequence. Probing reads the tag array (one or two cache
// lines) and the entries whose tag matches; the clocks of a window are read
// only to pick the entry to evict.
//
// The slot arrays start small and double (rehashing every entry) when half
// full or when a key's probe window is full, up to the capacity: memory
// follows the number of keys actually seen instead of the cap (a table
// allocated at its cap spreads its keys over all its pages, so even a few
// thousand keys made every page of a 16,384-entry table resident). Growth
// never evicts; entries are evicted only once the table has its full
// capacity, as before. A table that grows holds the same keys and values as
// one allocated at full size until its first eviction (which entry is then
// evicted depends on slot positions, like on the hash seed).
type Table[K comparable, V any] struct {
	tags      []uint32 // 32 bits of the key's hash, low bit set; 0 = empty
	entries   []entry[K, V]
	hashes    []uint64 // the full hash of each slot's key (rehashing on growth)
	mask      uint64
	capacity  int // the most slots the table grows to (a power of two)
	used      int
	evictions uint64
	// mem holds the slot arrays when they are outside the Go heap
	// (mapping.go: generations of at least mapMin bytes, K and V
	// pointer-free); nil when they are on the heap.
	mem     *mapping
	offHeap bool // K and V are pointer-free: large generations may be mapped
}

// initialSlots is the size a table starts at (at most its capacity).
const initialSlots = 256

// New makes a table of at least capacity entries (a power of two), whose
// slot arrays start small and grow with use up to capacity.
func New[K comparable, V any](capacity int) Table[K, V] {
	n := 1 << bits.Len(uint(max(capacity, probeWindow)-1)) // next power of two
	t := Table[K, V]{capacity: n, offHeap: pointerFree(reflect.TypeFor[entry[K, V]]())}
	t.alloc(min(n, initialSlots))
	return t
}

// alloc makes zeroed slot arrays of n slots (a power of two): in a memory
// mapping of their own when they are large and pointer-free (mapping.go),
// else on the heap. It does not free the previous arrays.
func (t *Table[K, V]) alloc(n int) {
	t.mask = uint64(n - 1)
	t.mem = nil
	var e entry[K, V]
	esz := int(unsafe.Sizeof(e))
	if size := n * (esz + 8 + 4); t.offHeap && size >= mapMin {
		if m := newMapping(size); m != nil {
			// Entries, then the 8-byte and the 4-byte arrays: n is a power
			// of two of at least 8 and the mapping is page-aligned, so each
			// array is aligned for its type.
			base := unsafe.Pointer(unsafe.SliceData(m.r.mem))
			t.entries = unsafe.Slice((*entry[K, V])(base), n)
			t.hashes = unsafe.Slice((*uint64)(unsafe.Add(base, n*esz)), n)
			t.tags = unsafe.Slice((*uint32)(unsafe.Add(base, n*(esz+8))), n)
			t.mem = m
			return
		}
	}
	t.tags = make([]uint32, n)
	t.entries = make([]entry[K, V], n)
	t.hashes = make([]uint64, n)
}

// grow doubles the slot arrays (or more, should a key's probe window be
// full in the doubled arrays) and reinserts every entry in slot order, so
// growth is deterministic. Pointers returned earlier become invalid (and
// the old arrays, if mapped, are unmapped at once).
func (t *Table[K, V]) grow() {
	tags, entries, hashes, old := t.tags, t.entries, t.hashes, t.mem
	for n := 2 * len(tags); ; n *= 2 {
		t.alloc(n)
		if t.rehash(tags, entries, hashes, n >= t.capacity) {
			old.free()
			return
		}
		t.mem.free() // a larger generation follows
	}
}

// rehash inserts the old slots' entries; when a key's window is full it
// gives up (false), unless drop is set (full capacity), where such an entry
// is dropped and counted as an eviction.
func (t *Table[K, V]) rehash(tags []uint32, entries []entry[K, V], hashes []uint64, drop bool) bool {
	for j, tag := range tags {
		if tag == 0 {
			continue
		}
		i := hashes[j] & t.mask
		placed := false
		for range probeWindow {
			if t.tags[i] == 0 {
				t.tags[i], t.entries[i], t.hashes[i] = tag, entries[j], hashes[j]
				placed = true
				break
			}
			i = (i + 1) & t.mask
		}
		if !placed {
			if !drop {
				return false
			}
			t.used--
			t.evictions++
		}
	}
	return true
}

// Get returns the entry of k and its clock, creating (or recycling) an entry
// when absent; a new entry is zeroed and its clock is now. Get may grow the
// table: pointers returned by earlier calls become invalid. The pointers of
// Get, Acquire and Lookup may point outside the Go heap (mapping.go): they
// keep nothing alive, so the caller must keep the table reachable until its
// last use of them (runtime.KeepAlive on the table's owner).
func (t *Table[K, V]) Get(k *K, h uint64, now int64) (*V, *int64) {
	v, last, _ := t.Acquire(k, h, now)
	return v, last
}

// Acquire is Get that also reports whether the entry was created (or
// recycled) by this call: then its value is zero and its clock is now.
func (t *Table[K, V]) Acquire(k *K, h uint64, now int64) (v *V, last *int64, created bool) {
	if 2*t.used >= len(t.tags) && len(t.tags) < t.capacity {
		t.grow()
	}
	for {
		v, last, created, ok := t.get(k, h, now, len(t.tags) == t.capacity)
		if ok {
			return v, last, created
		}
		t.grow() // the key's probe window is full below capacity
	}
}

func (t *Table[K, V]) get(k *K, h uint64, now int64, evict bool) (v *V, last *int64, created, ok bool) {
	tag := uint32(h>>32) | 1
	i := h & t.mask
	for range probeWindow {
		switch t.tags[i] {
		case tag:
			if e := &t.entries[i]; e.key == *k {
				return &e.val, &e.last, false, true
			}
		case 0:
			t.used++
			t.tags[i] = tag
			t.hashes[i] = h
			e := &t.entries[i]
			e.key, e.last = *k, now
			return &e.val, &e.last, true, true
		}
		i = (i + 1) & t.mask
	}
	if !evict {
		return nil, nil, false, false
	}
	// The window is full: evict its least recently seen entry (the first
	// of equals).
	victim := h & t.mask
	for j, i := 1, victim; j < probeWindow; j++ {
		i = (i + 1) & t.mask
		if t.entries[i].last < t.entries[victim].last {
			victim = i
		}
	}
	t.evictions++
	t.tags[victim] = tag
	t.hashes[victim] = h
	t.entries[victim] = entry[K, V]{key: *k, last: now}
	e := &t.entries[victim]
	return &e.val, &e.last, true, true
}

// Prefetch loads the memory a lookup of hash h starts with (the tag and
// the first cache line of the entry, key and clock, of the key's first slot)
// into the cache and returns a value of no meaning: callers add it to a
// field so that the loads are kept. Calling it for a few keys before
// looking them up lets their cache misses overlap. It changes nothing.
func (t *Table[K, V]) Prefetch(h uint64) uint64 {
	i := h & t.mask
	return uint64(t.tags[i]) + uint64(*(*byte)(unsafe.Pointer(&t.entries[i])))
}

// Lookup returns the entry of k and its clock, or nil when absent.
func (t *Table[K, V]) Lookup(k *K, h uint64) (*V, *int64) {
	tag := uint32(h>>32) | 1
	i := h & t.mask
	for range probeWindow {
		switch t.tags[i] {
		case tag:
			if e := &t.entries[i]; e.key == *k {
				return &e.val, &e.last
			}
		case 0:
			return nil, nil
		}
		i = (i + 1) & t.mask
	}
	return nil, nil
}

// EntryBytes is the memory per slot: key, statistics, tag, clock and hash.
func (t *Table[K, V]) EntryBytes() int {
	return int(unsafe.Sizeof(t.entries[0])) + int(unsafe.Sizeof(t.tags[0])) + int(unsafe.Sizeof(t.hashes[0]))
}

// hashing: a fixed-seed multiply-mix (wyhash style). Deterministic, so that
// eviction order and thus features are reproducible; Config.HashSeed lets a
// deployment pick a secret seed against crafted collisions.
const (
	k0 = 0xa0761d6478bd642f
	k1 = 0xe7037ed1a0b428db
)

// Mix hashes two words (see the constants above).
func Mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a^k0, b^k1)
	return fmix(hi ^ lo)
}

// fmix is MurmurHash3's 64-bit finaliser: the multiply-mix alone leaves the
// low bits (which pick table slots and sketch bits) depending on the low
// bits of its inputs only, and IPv4-mapped addresses differ in their top
// bytes.
func fmix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// LE64 reads a little-endian word from b[:8].
func LE64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// Len is the number of entries in use.
func (t *Table[K, V]) Len() int { return t.used }

// Cap is the capacity: the most slots the table grows to.
func (t *Table[K, V]) Cap() int { return t.capacity }

// Slots is the number of slots allocated now.
func (t *Table[K, V]) Slots() int { return len(t.tags) }

// Evictions counts entries recycled because their probe window was full.
func (t *Table[K, V]) Evictions() uint64 { return t.evictions }
