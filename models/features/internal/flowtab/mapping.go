package flowtab

import (
	"reflect"
	"runtime"
	"sync/atomic"
)

// mapMin is the smallest slot-array generation (bytes) kept outside the Go
// heap, in an anonymous memory mapping of its own (mapping_unix.go). Tables
// of a few hundred KB stay on the heap.
const mapMin = 1 << 20

// A mapping holds one generation of a table's slot arrays outside the Go
// heap. The arrays are pointer-free, so the garbage collector has nothing
// to find in them; keeping them off the heap means that (1) a table's
// memory is returned to the system the moment it doubles, instead of the
// old arrays (half the new size) staying resident as garbage until a
// later collection, (2) the heap goal, a multiple of the live heap, no
// longer grows with the tables: with the plugin's 8 MB host table, GOGC 20
// would otherwise allow 1.6 MB more garbage, and (3) mappings of 2 MB or
// more can ask for transparent huge pages (mapping_linux.go), which spare
// the random slot lookups most of their TLB misses. Pages are resident
// only once touched, as on the heap (a huge page: its 2 MB at once).
//
// The table keeps a *mapping; the memory itself is in a region, which the
// cleanup of the mapping (the table became unreachable) or free (the
// table doubled) unmaps, once.
type mapping struct{ r *region }

type region struct {
	mem   []byte
	freed atomic.Bool
}

func (r *region) free() {
	if !r.freed.Swap(true) {
		unmap(r.mem)
	}
}

// free unmaps m's memory now (nil-safe). Pointers into its arrays become
// invalid: the table keeps none across a growth.
func (m *mapping) free() {
	if m != nil {
		m.r.free()
	}
}

// newMapping maps size zeroed bytes, or returns nil when the system cannot
// (the caller then allocates on the heap).
func newMapping(size int) *mapping {
	mem := mapAnon(size)
	if mem == nil {
		return nil
	}
	m := &mapping{r: &region{mem: mem}}
	runtime.AddCleanup(m, (*region).free, m.r)
	return m
}

// pointerFree reports whether values of t contain no pointers (only
// numbers, booleans and arrays or structs of them), the condition for
// keeping them outside the garbage-collected heap.
func pointerFree(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	case reflect.Array:
		return t.Len() == 0 || pointerFree(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !pointerFree(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}
