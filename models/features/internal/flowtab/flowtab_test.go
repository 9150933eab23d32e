package flowtab

import "testing"

func TestTableGetLookupEvict(t *testing.T) {
	tab := New[uint64, int](16)
	if tab.Cap() != 16 {
		t.Fatalf("cap %d, want 16", tab.Cap())
	}
	h := func(k uint64) uint64 { return Mix(k, 0) }
	for k := uint64(0); k < 1000; k++ {
		v, last := tab.Get(&k, h(k), int64(k))
		*v = int(k)
		*last = int64(k)
	}
	if tab.Len() > tab.Cap() {
		t.Fatalf("len %d above cap %d", tab.Len(), tab.Cap())
	}
	if tab.Evictions() == 0 {
		t.Fatal("1000 keys in 16 slots evicted nothing")
	}
	// The most recent key survives; a long-evicted one is gone.
	k := uint64(999)
	if v, _ := tab.Lookup(&k, h(k)); v == nil || *v != 999 {
		t.Fatalf("latest key lost: %v", v)
	}
	k = 0
	if v, _ := tab.Lookup(&k, h(k)); v != nil {
		t.Fatalf("oldest key still present: %d", *v)
	}
	if tab.EntryBytes() <= 0 {
		t.Fatal("entry size not positive")
	}
}

// TestMixLowBitsSpreadIPv4Mapped: IPv4-mapped addresses differ only in their
// top bytes; the table picks slots by the hash's low bits, which must still
// spread them.
func TestMixLowBitsSpreadIPv4Mapped(t *testing.T) {
	seen := map[uint64]bool{}
	for i := 0; i < 256; i++ {
		var ip [16]byte
		ip[10], ip[11], ip[12], ip[13], ip[14], ip[15] = 0xff, 0xff, 10, 99, 1, byte(i)
		seen[Mix(LE64(ip[0:]), LE64(ip[8:]))&255] = true
	}
	if len(seen) < 128 {
		t.Fatalf("256 addresses hit only %d of 256 low-bit buckets", len(seen))
	}
}

// TestTableGrows: a large table starts small, doubles with use without
// evicting or losing anything, and stops at its capacity, where eviction
// works as before.
func TestTableGrows(t *testing.T) {
	tab := New[uint64, [3]uint64](1 << 14)
	if tab.Cap() != 1<<14 || tab.Slots() >= tab.Cap() {
		t.Fatalf("cap %d, slots %d: want 16384 and fewer slots", tab.Cap(), tab.Slots())
	}
	h := func(k uint64) uint64 { return Mix(k, 7) }
	for k := uint64(1); k <= 1500; k++ {
		v, last := tab.Get(&k, h(k), int64(k))
		*v = [3]uint64{k, 2 * k, 3 * k}
		*last = int64(k) * 10
	}
	if tab.Len() != 1500 || tab.Evictions() != 0 {
		t.Fatalf("len %d, evictions %d after 1500 keys", tab.Len(), tab.Evictions())
	}
	if tab.Slots() > 8192 || tab.Slots() < 2048 {
		t.Fatalf("%d slots for 1500 keys", tab.Slots())
	}
	for k := uint64(1); k <= 1500; k++ {
		v, last := tab.Lookup(&k, h(k))
		if v == nil || *v != [3]uint64{k, 2 * k, 3 * k} || *last != int64(k)*10 {
			t.Fatalf("key %d lost or changed by growth: %v", k, v)
		}
	}
	for k := uint64(1501); k <= 80000; k++ {
		tab.Get(&k, h(k), int64(k))
	}
	if tab.Slots() != tab.Cap() || tab.Len() > tab.Cap() || tab.Evictions() == 0 {
		t.Fatalf("slots %d, len %d, evictions %d: want full capacity and evictions", tab.Slots(), tab.Len(), tab.Evictions())
	}
}

// TestAcquireCreated: Acquire reports entries it creates, new or recycled
// (zero value, clock now), and not existing ones; Prefetch changes nothing.
func TestAcquireCreated(t *testing.T) {
	tab := New[uint64, [4]uint64](8)
	h := func(k uint64) uint64 { return Mix(k, 0) }
	for k := uint64(0); k < 200; k++ {
		_ = tab.Prefetch(h(k))
		v, last, created := tab.Acquire(&k, h(k), int64(k))
		if !created || *v != [4]uint64{} || *last != int64(k) {
			t.Fatalf("key %d: created %v, value %v, clock %d", k, created, *v, *last)
		}
		*v = [4]uint64{k, k, k, k}
		v, _, created = tab.Acquire(&k, h(k), int64(k)+1)
		if created || v[3] != k {
			t.Fatalf("key %d again: created %v, value %v", k, created, *v)
		}
	}
	if tab.Evictions() == 0 {
		t.Fatal("200 keys in 8 slots evicted nothing")
	}
}

// TestEvictsLeastRecent: in a full table of one probe window, a new key
// replaces the entry with the oldest clock (and the entries' clocks are
// the ones their keys were given, whatever the slots).
func TestEvictsLeastRecent(t *testing.T) {
	tab := New[uint64, int](probeWindow) // one window: every key competes with all
	clocks := []int64{50, 20, 70, 10, 60, 30, 80, 40}
	for k, c := range clocks {
		key := uint64(k)
		v, last, created := tab.Acquire(&key, Mix(key, 1), c)
		if !created || *last != c {
			t.Fatalf("key %d: created %v, clock %d, want a new entry at %d", k, created, *last, c)
		}
		*v = k
	}
	key := uint64(100)
	if _, last, created := tab.Acquire(&key, Mix(key, 1), 90); !created || *last != 90 || tab.Evictions() != 1 {
		t.Fatalf("new key in a full table: created %v, clock %d, evictions %d", created, *last, tab.Evictions())
	}
	for k, c := range clocks {
		key := uint64(k)
		v, last := tab.Lookup(&key, Mix(key, 1))
		switch {
		case c == 10 && v != nil:
			t.Fatalf("key %d (the oldest clock) survived", k)
		case c != 10 && (v == nil || *v != k || *last != c):
			t.Fatalf("key %d (clock %d) lost or changed: %v", k, c, v)
		}
	}
}
