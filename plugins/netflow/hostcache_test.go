package netflow

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	nhfeat "github.com/vigil-edge/vigil/models/features/nethost"
)

// checkSurelyClose replays pkts through nethost/v1 and the host cache's
// reuse rule and fails if surelyClose ever says "close" where the exact
// test on the vector does not. It returns how many packets the raw bound
// decided and how many passed the exact test.
func checkSurelyClose(t *testing.T, path string, limit int) (sure, exact, n int) {
	t.Helper()
	pkts := filePackets(t, path, limit)
	ex := nhfeat.New(nhfeat.Config{HashSeed: 1})
	c := newHostCache(1)
	var raw nhfeat.Raw
	v := make([]float32, nhfeat.Dim)
	for i := range pkts {
		p := &pkts[i]
		ex.ExtractRaw(p, &raw)
		raw.Features(v)
		idx, fresh := c.lookup(p)
		e := &c.entries[idx]
		now := p.TimestampNs
		ok := false
		if !fresh && now >= e.tns && now-e.tns <= DefaultReuseMaxAge {
			s := e.surelyClose(&raw)
			ok = e.close(v, DefaultReuseAbs, DefaultReuseRel)
			if s && !ok {
				t.Fatalf("%s packet %d: surelyClose true, close false\nraw %v\nvec %v\nold %v", path, i, raw, v, e.vec)
			}
			if s {
				sure++
			}
		}
		if ok {
			exact++
			continue
		}
		copy(e.vec[:], v)
		e.setBounds(&raw, DefaultReuseAbs, DefaultReuseRel)
		e.tns = now
	}
	return sure, exact, len(pkts)
}

// TestSurelyCloseImpliesClose: the raw-counter bound never accepts a vector
// the exact test rejects (so skipping the vector keeps every decision), on
// real captures; and it decides most reuse hits.
func TestSurelyCloseImpliesClose(t *testing.T) {
	var files []string
	if d := os.Getenv("VIGIL_SHARED_DATA"); d != "" {
		f, _ := filepath.Glob(filepath.Join(d, "attacks", "*", "*.pcap*"))
		files = append(files, f...)
	}
	if ref := "../../.cache/bench/netflow-ref-1000000.pcap"; fileExists(ref) {
		files = append(files, ref)
	}
	if len(files) == 0 {
		t.Skip("no captures (set VIGIL_SHARED_DATA or build the reference capture)")
	}
	var sure, exact, n int
	for _, f := range files {
		s, e, k := checkSurelyClose(t, f, 300_000)
		sure, exact, n = sure+s, exact+e, n+k
	}
	t.Logf("%d captures, %d packets: %d reuse hits, %d of them decided by the raw bound", len(files), n, exact, sure)
	if exact > 0 && sure < exact/2 {
		t.Errorf("the raw bound decided only %d of %d hits", sure, exact)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestSurelyCloseBoundary drives surelyClose with raw values around the
// tolerance edge of every log-scaled feature: whenever it accepts, the
// exact test on the float32 features accepts too.
func TestSurelyCloseBoundary(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var e hostEntry
	var r0, r nhfeat.Raw
	v := make([]float32, nhfeat.Dim)
	accepted := 0
	for it := range 200_000 {
		for j := range r0 {
			switch it % 4 {
			case 0:
				r0[j] = 0
			case 1:
				r0[j] = rng.Float64() * 1e-3
			default:
				r0[j] = math.Exp(rng.Float64()*30 - 10)
			}
		}
		r0.Features(v)
		copy(e.vec[:], v)
		e.setBounds(&r0, DefaultReuseAbs, DefaultReuseRel)
		r = r0
		lo, hi := 0, nhfeat.Dim
		if it%2 == 0 {
			lo = it / 2 % nhfeat.Dim // one feature: more acceptances at the edge
			hi = lo + 1
		}
		for j := lo; j < hi; j++ {
			// Move x to about the edge of the tolerance (in log space for
			// the log-scaled features).
			old := float64(e.vec[j])
			t := float64(DefaultReuseAbs) + float64(DefaultReuseRel)*math.Abs(old)
			f := old + t*(0.98+0.04*rng.Float64())*float64(1-2*rng.IntN(2))
			if nhfeat.IsLog(j) {
				r[j] = max(0, math.Expm1(f))
			} else {
				r[j] = f
			}
		}
		r.Features(v)
		if e.surelyClose(&r) {
			accepted++
			if !e.close(v, DefaultReuseAbs, DefaultReuseRel) {
				t.Fatalf("iteration %d: surelyClose true, close false\nraw %v\nvec %v\nold %v", it, r, v, e.vec)
			}
		}
	}
	if accepted == 0 {
		t.Error("the bound never accepted near the edge")
	}
	t.Logf("accepted %d of 200000 near-edge vectors", accepted)
}
