package flowtab

import (
	"reflect"
	"runtime"
	"testing"
	"time"
)

func TestPointerFree(t *testing.T) {
	type flat struct {
		a [3]float32
		b uint64
		c bool
	}
	type withPtr struct {
		a int
		p *int
	}
	for _, c := range []struct {
		v    any
		want bool
	}{
		{uint8(0), true}, {float64(0), true}, {[4]uint64{}, true}, {flat{}, true}, {[2]flat{}, true},
		{entry[uint64, flat]{}, true}, {[0]*int{}, true},
		{"", false}, {[]int{}, false}, {withPtr{}, false}, {[2]withPtr{}, false}, {map[int]int{}, false},
		{entry[uint64, string]{}, false}, {struct{ f func() }{}, false},
	} {
		if got := pointerFree(reflect.TypeOf(c.v)); got != c.want {
			t.Errorf("pointerFree(%T) = %v, want %v", c.v, got, c.want)
		}
	}
}

// TestTableMapped: generations of at least mapMin bytes of a pointer-free
// table live in a mapping; growth keeps every key and value and unmaps
// the old generation at once; pointerful tables stay on the heap.
func TestTableMapped(t *testing.T) {
	if mapAnon(1) == nil {
		t.Skip("no anonymous mappings on this system")
	}
	type val [60]uint64              // 480 bytes: 4096 slots are past mapMin
	tab := New[uint64, val](1 << 16) // never full here: no key is evicted
	h := func(k uint64) uint64 { return Mix(k, 3) }
	var maps []*mapping
	for k := uint64(1); k <= 6000; k++ {
		v, last := tab.Get(&k, h(k), int64(k))
		v[0], v[59] = k, ^k
		*last = int64(k)
		if tab.mem != nil && (len(maps) == 0 || maps[len(maps)-1] != tab.mem) {
			maps = append(maps, tab.mem)
		}
	}
	if len(maps) < 2 {
		t.Fatalf("%d mapped generations for 6000 keys in %d slots, want at least 2", len(maps), tab.Slots())
	}
	for i, m := range maps {
		if freed := m.r.freed.Load(); freed != (i < len(maps)-1) {
			t.Errorf("generation %d of %d: freed = %v", i, len(maps), freed)
		}
	}
	for k := uint64(1); k <= 6000; k++ {
		v, last := tab.Lookup(&k, h(k))
		if v == nil || v[0] != k || v[59] != ^k || *last != int64(k) {
			t.Fatalf("key %d lost or changed by growth (len %d, slots %d, evictions %d)", k, tab.Len(), tab.Slots(), tab.Evictions())
		}
	}

	big := New[uint64, [60]*int](1 << 14)
	for k := uint64(1); k <= 6000; k++ {
		big.Get(&k, h(k), int64(k))
	}
	if big.mem != nil || big.Slots() < 8192 {
		t.Errorf("pointerful table: mapping %v with %d slots, want the heap", big.mem, big.Slots())
	}
}

// TestMappedTableReleased: a mapped table that becomes unreachable is
// unmapped by its cleanup.
func TestMappedTableReleased(t *testing.T) {
	if mapAnon(1) == nil {
		t.Skip("no anonymous mappings on this system")
	}
	r := func() *region {
		tab := New[uint64, [60]uint64](1 << 14)
		for k := uint64(1); k <= 3000; k++ {
			tab.Get(&k, Mix(k, 1), 1)
		}
		if tab.mem == nil {
			t.Fatal("table of 3000 480-byte entries is not mapped")
		}
		return tab.mem.r
	}()
	for i := 0; i < 100 && !r.freed.Load(); i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if !r.freed.Load() {
		t.Fatal("the unreachable table's mapping was not released")
	}
}
