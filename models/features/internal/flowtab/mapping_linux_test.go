package flowtab

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// TestMappingHugeAdvice checks that a large mapping is eligible for
// transparent huge pages (the kernel's smaps say so) and a small one is
// left alone.
func TestMappingHugeAdvice(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || strings.Contains(string(mode), "[never]") {
		t.Skipf("transparent huge pages are off here (%q, %v)", mode, err)
	}
	big, small := mapAnon(4<<20), mapAnon(hugeMin/2)
	if big == nil || small == nil {
		t.Skip("no anonymous mappings here")
	}
	defer unmap(big)
	defer unmap(small)
	if got := thpEligible(t, big); got != "1" {
		t.Errorf("4 MB mapping: THPeligible %q, want 1", got)
	}
	if got := thpEligible(t, small); got == "1" && strings.Contains(string(mode), "[madvise]") {
		t.Errorf("1 MB mapping: THPeligible 1 under the madvise setting: advised although small")
	}
}

// thpEligible returns the THPeligible field of the smaps entry that holds mem.
func thpEligible(t *testing.T, mem []byte) string {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	addr := uintptr(unsafe.Pointer(&mem[0]))
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x", &lo, &hi); n == 2 && strings.Count(line, " ") >= 4 {
			in = lo <= addr && addr < hi
			continue
		}
		if v, ok := strings.CutPrefix(line, "THPeligible:"); ok && in {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no smaps entry with THPeligible for %#x", addr)
	return ""
}
