//go:build goexperiment.simd && amd64

package netflow

import (
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// randomDecays returns decay factors of a random time step: none, tiny,
// typical or huge (factors that underflow to 0).
func randomDecays(rng *rand.Rand) decays {
	switch rng.IntN(6) {
	case 0:
		return ones
	case 1:
		return decayFactors(rng.Int64N(1000) + 1) // up to 1 µs
	case 2:
		return decayFactors(rng.Int64N(1e12)) // up to 1000 s
	case 3:
		return decayFactors(int64(math.Ldexp(rng.Float64(), rng.IntN(40)+10)))
	}
	return decayFactors(int64(rng.ExpFloat64() * 1e7))
}

// randomSize returns a packet size or an inter-arrival time.
func randomSize(rng *rand.Rand) float64 {
	switch rng.IntN(5) {
	case 0:
		return float64(rng.IntN(65536))
	case 1:
		return 0
	case 2:
		return rng.ExpFloat64() * 1e-3
	}
	return float64(60 + rng.IntN(1455))
}

func bytesOf[T any](p *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p))
}

// TestSIMDMatchesScalar runs the SIMD and the scalar updates side by side
// on random streams (random time steps, sizes, directions, fresh entries)
// and checks that state and features agree bit for bit.
func TestSIMDMatchesScalar(t *testing.T) {
	if !simdActive {
		t.Skip("the CPU lacks AVX-512: update runs the scalar code")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for stream := range 2000 {
		var a1, b1 multi1
		var a2, b2 multi2
		var oa1, ob1 [3 * nLambda]float32
		var oa2, ob2 [7 * nLambda]float32
		for step := range 200 {
			f := randomDecays(rng)
			x := randomSize(rng)
			d := rng.IntN(2)
			if step == 0 {
				a1.fresh(x, &oa1)
				b1 = a1
				a2.fresh(d, x, &oa2)
				b2 = a2
				continue
			}
			a1.updateSIMD(&f, x, &oa1)
			b1.updateScalar(&f, x, &ob1)
			a2.updateSIMD(&f, d, x, &oa2)
			b2.updateScalar(&f, d, x, &ob2)
			if string(bytesOf(&a1)) != string(bytesOf(&b1)) || string(bytesOf(&oa1)) != string(bytesOf(&ob1)) {
				t.Fatalf("stream %d step %d: multi1 differs:\nsimd   %+v %v\nscalar %+v %v", stream, step, a1, oa1, b1, ob1)
			}
			if string(bytesOf(&a2)) != string(bytesOf(&b2)) || string(bytesOf(&oa2)) != string(bytesOf(&ob2)) {
				t.Fatalf("stream %d step %d: multi2 differs:\nsimd   %+v %v\nscalar %+v %v", stream, step, a2, oa2, b2, ob2)
			}
		}
	}
}

// TestSIMDExtractorMatchesScalar runs whole extractors with the SIMD and
// with the scalar updates over the test workloads: the features agree bit
// for bit.
func TestSIMDExtractorMatchesScalar(t *testing.T) {
	if !simdActive {
		t.Skip("the CPU lacks AVX-512: update runs the scalar code")
	}
	defer func() { simdActive = true }()
	for name, pk := range map[string][]event.Packet{"golden": goldenSequence(), "benign": benignWorkload(20000), "scan": portScan(20000)} {
		for _, cfg := range []Config{{}, {MaxSockets: 64, MaxChannels: 16, MaxHosts: 16, HashSeed: 7}} {
			var outs [2][]float32
			for v, on := range []bool{false, true} {
				simdActive = on
				outs[v] = make([]float32, len(pk)*Dim)
				New(cfg).ExtractBatch(pk, outs[v])
			}
			for j := range outs[0] {
				if math.Float32bits(outs[0][j]) != math.Float32bits(outs[1][j]) {
					t.Fatalf("%s %+v: packet %d %s: scalar %v, SIMD %v", name, cfg, j/Dim, names[j%Dim], outs[0][j], outs[1][j])
				}
			}
		}
	}
}

// benchUpdates prepares states and steps for the update benchmarks.
func benchSteps() ([]decays, []float64) {
	rng := rand.New(rand.NewPCG(3, 4))
	fs := make([]decays, 1024)
	xs := make([]float64, 1024)
	for i := range fs {
		fs[i] = decayFactors(int64(rng.ExpFloat64() * 1e7))
		xs[i] = float64(60 + rng.IntN(1455))
	}
	return fs, xs
}

// BenchmarkMulti1 and BenchmarkMulti2 time one window update of the
// scalar and the SIMD code, over 256 statistics in turn (so that updates
// overlap, as in the extractor, where consecutive updates hit different
// entries).
func BenchmarkMulti1(b *testing.B) {
	fs, xs := benchSteps()
	for _, simd := range []bool{false, true} {
		b.Run(map[bool]string{false: "scalar", true: "simd"}[simd], func(b *testing.B) {
			var s [256]multi1
			var out [3 * nLambda]float32
			for j := range s {
				s[j].fresh(xs[j], &out)
			}
			i := 0
			for b.Loop() {
				if simd {
					s[i&255].updateSIMD(&fs[i&1023], xs[i&1023], &out)
				} else {
					s[i&255].updateScalar(&fs[i&1023], xs[i&1023], &out)
				}
				i++
			}
		})
	}
}

func BenchmarkMulti2(b *testing.B) {
	fs, xs := benchSteps()
	for _, simd := range []bool{false, true} {
		b.Run(map[bool]string{false: "scalar", true: "simd"}[simd], func(b *testing.B) {
			var s [256]multi2
			var out [7 * nLambda]float32
			for j := range s {
				s[j].fresh(0, xs[j], &out)
			}
			i := 0
			for b.Loop() {
				d := (i >> 8) & 1
				if simd {
					s[i&255].updateSIMD(&fs[i&1023], d, xs[i&1023], &out)
				} else {
					s[i&255].updateScalar(&fs[i&1023], d, xs[i&1023], &out)
				}
				i++
			}
		})
	}
}

// BenchmarkSIMDCaptureDecode is BenchmarkCaptureDecode (read + decode +
// netflow/v1 ExtractBatch on VIGIL_NETFLOW_REF_PCAP) with the scalar and
// the SIMD window updates, interleaved pass by pass in one process, so
// that a shared machine's load affects both alike (in alternating order:
// the second pass of a pair tends to be faster).
// VIGIL_NETFLOW_BENCH_ONLY=scalar runs the scalar code in both (a check
// that the SIMD passes do not slow the scalar ones down).
func BenchmarkSIMDCaptureDecode(b *testing.B) {
	scalarOnly := os.Getenv("VIGIL_NETFLOW_BENCH_ONLY") == "scalar"
	path := os.Getenv("VIGIL_NETFLOW_REF_PCAP")
	if path == "" {
		b.Skip("set VIGIL_NETFLOW_REF_PCAP to a capture")
	}
	if !simdActive {
		b.Skip("the CPU lacks AVX-512")
	}
	defer func() { simdActive = true }()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cpu [2]time.Duration
	var pkts [2]int
	var ratios []float64
	buf := make([]event.Packet, 1024)
	out := make([]float32, len(buf)*Dim)
	for iter := 0; b.Loop(); iter++ {
		var pass [2]time.Duration
		for j := range 2 {
			v := j ^ iter&1 // ABBA order: neither goes first always
			simdActive = v == 1 && !scalarOnly
			e := New(Config{})
			n, c := capturePass(b, path, buf, func(p []event.Packet) { e.ExtractBatch(p, out[:len(p)*Dim]) })
			pkts[v] += n
			pass[v] = c
			cpu[v] += c
		}
		ratios = append(ratios, pass[0].Seconds()/pass[1].Seconds())
	}
	slices.Sort(ratios)
	b.ReportMetric(float64(pkts[0])/cpu[0].Seconds(), "scalar-pkts/CPU-s")
	b.ReportMetric(float64(pkts[1])/cpu[1].Seconds(), "simd-pkts/CPU-s")
	b.ReportMetric(ratios[len(ratios)/2], "median-speedup")
}

// TestDecaySIMD: the vector decay factors are setDecay's bit for bit, for
// steps from 1 ns to the largest int64, at the edges of fmath.Exp2Poly's
// range and on random steps.
func TestDecaySIMD(t *testing.T) {
	if !simdActive {
		t.Skip("the CPU lacks AVX-512: update runs the scalar code")
	}
	steps := []int64{1, 2, 999, 1000, 1001, 1e9, 1e9 + 1, 2e11, 1e12, 1e13, 1e14, 1<<53 + 1, 1 << 62, math.MaxInt64}
	// Where -λ·dt crosses Exp2PolyMin for λ = 5, 3, 1, 0.1, 0.01.
	for _, l := range []float64{5, 3, 1, 0.1, 0.01} {
		edge := int64(1000 / l * 1e9)
		for d := int64(-3); d <= 3; d++ {
			steps = append(steps, edge+d)
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200_000 {
		steps = append(steps, int64(math.Exp2(rng.Float64()*62)))
	}
	for _, dt := range steps {
		var want, got decays
		setDecay(&want, dt)
		decaySIMD(&got, dt)
		if string(bytesOf(&got)) != string(bytesOf(&want)) {
			t.Fatalf("step %d ns: SIMD %v, scalar %v", dt, got, want)
		}
		for i, f := range want {
			if !(f >= 0 && f <= 1) || i >= 6 && f != 1 || want[3] != want[2] {
				t.Fatalf("step %d ns: factors %v", dt, want)
			}
		}
	}
}

// TestTwinsSIMD: the vector twin checks agree with the byte comparison on
// equal statistics and on statistics that differ in any one byte.
func TestTwinsSIMD(t *testing.T) {
	if !simdActive {
		t.Skip("the CPU lacks AVX-512")
	}
	rng := rand.New(rand.NewPCG(7, 8))
	var a1, b1 multi1
	var a2, b2 multi2
	for _, p := range [][]byte{bytesOf(&a1), bytesOf(&a2)} {
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
	}
	b1, b2 = a1, a2
	if !twins1SIMD(&a1, &b1) || !twins2SIMD(&a2, &b2) {
		t.Fatal("equal statistics are not twins")
	}
	for i := range bytesOf(&a1) {
		bytesOf(&b1)[i] ^= 1 << (i % 8)
		if twins1SIMD(&a1, &b1) || twinsBytes1(&a1, &b1) {
			t.Fatalf("multi1 differing in byte %d: twins", i)
		}
		bytesOf(&b1)[i] = bytesOf(&a1)[i]
	}
	for i := range bytesOf(&a2) {
		bytesOf(&b2)[i] ^= 1 << (i % 8)
		if twins2SIMD(&a2, &b2) || twinsBytes2(&a2, &b2) {
			t.Fatalf("multi2 differing in byte %d: twins", i)
		}
		bytesOf(&b2)[i] = bytesOf(&a2)[i]
	}
}
