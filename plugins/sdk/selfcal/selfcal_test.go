package selfcal

import (
	"math"
	"strings"
	"testing"
)

// TestSample: the calibration sample stays bounded and evenly spaced over
// everything offered.
func TestSample(t *testing.T) {
	for _, n := range []int{0, 1, MaxSample - 1, MaxSample, MaxSample + 1, 3*MaxSample + 5, 9 * MaxSample} {
		var c Sample
		c.Reset(0)
		buf := make([]float32, 1000)
		for off := 0; off < n; off += len(buf) {
			k := min(len(buf), n-off)
			for i := range k {
				buf[i] = float32(off + i)
			}
			c.Add(buf[:k])
		}
		if len(c.scores) > MaxSample || c.seen != uint64(n) {
			t.Fatalf("n=%d: %d kept, %d seen", n, len(c.scores), c.seen)
		}
		for i, v := range c.scores {
			if v != float32(uint64(i)*c.stride) {
				t.Fatalf("n=%d: sample %d is %g, want %d (stride %d)", n, i, v, uint64(i)*c.stride, c.stride)
			}
		}
		if wantLen := (n + int(c.stride) - 1) / int(c.stride); len(c.scores) != wantLen {
			t.Fatalf("n=%d: %d kept at stride %d, want %d", n, len(c.scores), c.stride, wantLen)
		}
		if n > MaxSample && len(c.scores) < MaxSample/2 {
			t.Fatalf("n=%d: only %d kept", n, len(c.scores))
		}
	}
}

func TestParseRestored(t *testing.T) {
	dg := "sha256:" + strings.Repeat("0f", 32)
	dg2 := "sha256:" + strings.Repeat("a1", 32)
	cases := []struct {
		in   string
		want map[string]float32
		err  string
	}{
		{"", map[string]float32{}, ""},
		{dg + "=3d4eeb9c", map[string]float32{dg: math.Float32frombits(0x3d4eeb9c)}, ""},
		{dg + "=3d4eeb9c," + dg2 + "=3f800000", map[string]float32{dg: math.Float32frombits(0x3d4eeb9c), dg2: 1}, ""},
		{dg, nil, "want sha256"},
		{"md5:" + strings.Repeat("0f", 16) + "=3f800000", nil, "want sha256"},
		{"sha256:" + strings.Repeat("0F", 32) + "=3f800000", nil, "want sha256"},
		{"sha256:" + strings.Repeat("0f", 31) + "=3f800000", nil, "want sha256"},
		{dg + "=3f80000", nil, "8 hex"},
		{dg + "=03f800000", nil, "8 hex"},
		{dg + "=zzzzzzzz", nil, "8 hex"},
		{dg + "=00000000", nil, "finite positive"},
		{dg + "=bf800000", nil, "finite positive"}, // -1
		{dg + "=7f800000", nil, "finite positive"}, // +Inf
		{dg + "=7fc00000", nil, "finite positive"}, // NaN
		{dg + "=3f800000," + dg + "=3f800000", nil, "twice"},
		{dg + "=3f800000,", nil, "want sha256"},
		{strings.Repeat(dg+"=3f800000,", 16) + dg + "=3f800000", nil, "at most 16"},
	}
	for _, tc := range cases {
		got, err := ParseRestored(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRestored(%.40q): %v, want an error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("ParseRestored(%.40q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("ParseRestored(%.40q)[%s] = %g, want %g", tc.in, k, got[k], v)
			}
		}
	}
}

func FuzzParseRestored(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("0f", 32) + "=3d4eeb9c")
	f.Add("")
	f.Add("=,=")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseRestored(s)
		if err != nil {
			return
		}
		if len(m) > MaxRestored {
			t.Fatalf("%d entries", len(m))
		}
		for k, v := range m {
			if len(k) != 71 || !(v > 0) || math.IsInf(float64(v), 0) {
				t.Fatalf("accepted %q=%v", k, v)
			}
		}
	})
}

// TestFormatRestored: what FormatRestored writes, ParseRestored reads back.
func TestFormatRestored(t *testing.T) {
	in := map[string]uint32{"sha256:" + strings.Repeat("b2", 32): 0x3d4eeb9c, "sha256:" + strings.Repeat("a1", 32): 0x3f800000}
	s := FormatRestored(in)
	if !strings.HasPrefix(s, "sha256:a1") {
		t.Fatalf("not sorted: %s", s)
	}
	out, err := ParseRestored(s)
	if err != nil || len(out) != len(in) {
		t.Fatalf("ParseRestored(FormatRestored) = %v, %v", out, err)
	}
	for d, b := range in {
		if math.Float32bits(out[d]) != b {
			t.Fatalf("%s: %08x, want %08x", d, math.Float32bits(out[d]), b)
		}
	}
	if FormatRestored(nil) != "" {
		t.Fatal("empty map")
	}
}

// TestReport: the Health stats of an observing and of a calibrated model.
func TestReport(t *testing.T) {
	st := map[string]uint64{}
	d := "sha256:" + strings.Repeat("0f", 32)
	Report(st, State{FeatureSet: "x/v1", Digest: d, Model: 0.05, Active: 0.05})
	if st["calibrated_x/v1"] != 0 || st["model_threshold_micro_x/v1"] != 50000 || st["threshold_micro_x/v1"] != 50000 || len(st) != 3 {
		t.Fatalf("observing: %v", st)
	}
	Report(st, State{FeatureSet: "x/v1", Digest: d, Model: 0.05, Active: 0.09, Calibrated: true, Local: 0.09, Samples: 7})
	if st["calibrated_x/v1"] != 1 || st["threshold_micro_x/v1"] != 90000 || st["calibration_local_micro_x/v1"] != 90000 ||
		st["calibration_samples_x/v1"] != 7 || st[BitsPrefix+d] != uint64(math.Float32bits(0.09)) {
		t.Fatalf("calibrated: %v", st)
	}
}

// TestSampleQuantile: the quantile of the kept scores; none or NaN is not ok.
func TestSampleQuantile(t *testing.T) {
	var s Sample
	if _, ok := s.Quantile(0.5); ok {
		t.Fatal("quantile of nothing")
	}
	s.Reset(10)
	s.Add([]float32{3, 1, 2})
	if v, ok := s.Quantile(1); !ok || v != 3 || s.Start() != 10 || s.Len() != 3 {
		t.Fatalf("quantile %v %v, start %d, len %d", v, ok, s.Start(), s.Len())
	}
	s.Add([]float32{float32(math.NaN())}) // counts as +Inf
	if v, ok := s.Quantile(1); ok {
		t.Fatalf("infinite quantile accepted: %v", v)
	}
	if v, ok := s.Quantile(0.5); !ok || v != 2.5 && v != 2 && v != 3 {
		t.Fatalf("median with a NaN score: %v %v", v, ok)
	}
}

// TestCut: the first event grace or more after start.
func TestCut(t *testing.T) {
	ts := []int64{5, 7, 9, 12, 11}
	at := func(i int) int64 { return ts[i] }
	for _, tc := range []struct {
		start, grace int64
		want         int
	}{{5, 4, 2}, {5, 100, 5}, {0, 0, 0}, {5, 7, 3}} {
		if got := Cut(len(ts), at, tc.start, tc.grace); got != tc.want {
			t.Errorf("Cut(start %d, grace %d) = %d, want %d", tc.start, tc.grace, got, tc.want)
		}
	}
}

// TestRelease: a released sample holds no buffer and starts over.
func TestRelease(t *testing.T) {
	var s Sample
	s.Reset(5)
	s.Add(make([]float32, 1000))
	s.Release()
	if s.Len() != 0 || cap(s.scores) != 0 || s.Start() != 0 {
		t.Fatalf("after Release: len %d cap %d start %d", s.Len(), cap(s.scores), s.Start())
	}
	s.Add([]float32{1, 2})
	if v, n, ok := s.Finish(1); !ok || v != 2 || n != 2 || cap(s.scores) != 0 {
		t.Fatalf("Finish after Release and Add: %v %d %v, cap %d", v, n, ok, cap(s.scores))
	}
	if _, n, ok := s.Finish(1); ok || n != 0 {
		t.Fatalf("Finish of an empty sample: %d %v", n, ok)
	}
}
