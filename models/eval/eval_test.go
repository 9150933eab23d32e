package eval

import (
	"bytes"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func ptr(f float64) *float64 { return &f }

func TestEvaluateTable(t *testing.T) {
	benign := Benign{Name: "b", Scores: []float32{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0}}
	cases := []struct {
		name      string
		thr       float64
		attack    Attack
		detected  bool
		attackN   int
		tpr       float64
		auc       float64
		first     *float64
		flagged   int
		benignFPR float64
	}{
		{
			name: "all above", thr: 1.0,
			attack:   Attack{Name: "a", Scores: []float32{2, 3}, TS: []int64{0, 1e9}},
			detected: true, attackN: 2, tpr: 1, auc: 1, first: ptr(0), flagged: 2,
		},
		{
			name: "labelled, attacker late", thr: 0.95,
			// packet 0 is benign background (flagged but not an attack packet), attack starts at t=1 s,
			// first flagged attack packet at t=3 s.
			attack: Attack{Name: "a", Scores: []float32{5, 0.5, 0.15, 2}, TS: []int64{0, 1e9, 2e9, 3e9},
				Positive: []bool{false, true, true, true}},
			detected: true, attackN: 3, tpr: 1.0 / 3, first: ptr(2), flagged: 2, benignFPR: 0.1,
			auc: (5.0/10 + 1.0/10 + 1) / 3, // P(attack > benign), ties half: 0.5 beats 4 of 10 (+tie 0.5), 0.15 beats 1
		},
		{
			// The capture's clock steps back 5 s after the first packet (ppa1e_blaster.pcap does):
			// first detection is measured from the earliest attack packet, never negative.
			name: "clock steps back", thr: 1.0,
			attack:   Attack{Name: "a", Scores: []float32{0.5, 0.5, 3}, TS: []int64{10e9, 5e9, 7e9}},
			detected: true, attackN: 3, tpr: 1.0 / 3, auc: (4.5/10 + 4.5/10 + 1) / 3, first: ptr(2), flagged: 1,
		},
		{
			name: "missed", thr: 10,
			attack:   Attack{Name: "a", Scores: []float32{0.05, 0.05}, TS: []int64{0, 1}},
			detected: false, attackN: 2, tpr: 0, auc: 0, flagged: 0,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Evaluate(Input{Model: ModelInfo{Threshold: c.thr}, Benign: []Benign{benign}, Attacks: []Attack{c.attack}})
			if err != nil {
				t.Fatal(err)
			}
			a := r.Attacks[0]
			if a.Detected != c.detected || a.AttackPackets != c.attackN || a.Flagged != c.flagged {
				t.Errorf("detected %v attack packets %d flagged %d, want %v %d %d", a.Detected, a.AttackPackets, a.Flagged, c.detected, c.attackN, c.flagged)
			}
			if math.Abs(a.TPR-c.tpr) > 1e-9 || math.Abs(r.AtThreshold.TPR-c.tpr) > 1e-9 {
				t.Errorf("TPR %g (pooled %g), want %g", a.TPR, r.AtThreshold.TPR, c.tpr)
			}
			if c.name != "labelled, attacker late" && math.Abs(a.ROCAUC-c.auc) > 1e-9 {
				t.Errorf("ROC AUC %g, want %g", a.ROCAUC, c.auc)
			}
			if (a.FirstDetection == nil) != (c.first == nil) || (c.first != nil && math.Abs(*a.FirstDetection-*c.first) > 1e-9) {
				t.Errorf("first detection %v, want %v", a.FirstDetection, c.first)
			}
			if math.Abs(r.AtThreshold.FPR-c.benignFPR) > 1e-9 {
				t.Errorf("benign FPR %g, want %g", r.AtThreshold.FPR, c.benignFPR)
			}
			wantDet := 0
			if c.detected {
				wantDet = 1
			}
			if r.Detected != wantDet || r.Captures != 1 {
				t.Errorf("detected %d of %d", r.Detected, r.Captures)
			}
		})
	}
}

func TestEvaluateErrors(t *testing.T) {
	if _, err := Evaluate(Input{}); err == nil {
		t.Error("no benign packets accepted")
	}
	b := []Benign{{Scores: []float32{1}}}
	if _, err := Evaluate(Input{Benign: b, Attacks: []Attack{{Scores: []float32{1, 2}, TS: []int64{0}}}}); err == nil {
		t.Error("mismatched times accepted")
	}
	if _, err := Evaluate(Input{Benign: b, Attacks: []Attack{{Scores: []float32{1}, TS: []int64{0}, Positive: []bool{true, false}}}}); err == nil {
		t.Error("mismatched truth accepted")
	}
	r, err := Evaluate(Input{Benign: b, Attacks: []Attack{{Name: "x", Error: "truncated"}}})
	if err != nil || r.Captures != 0 || len(r.Attacks) != 1 {
		t.Errorf("error capture: %v %+v", err, r)
	}
}

func TestROCCurve(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	cases := []struct {
		name           string
		benign, attack []float32
		want           []Point
		err            string
	}{
		{"separated", []float32{1, 2}, []float32{3, 4}, []Point{{0, 0}, {0, 0.5}, {0, 1}, {0.5, 1}, {1, 1}}, ""},
		{"tied", []float32{1, 1}, []float32{1}, []Point{{0, 0}, {1, 1}}, ""},
		{"inverted", []float32{3}, []float32{1}, []Point{{0, 0}, {1, 0}, {1, 1}}, ""},
		{"+Inf attack", []float32{1, 2}, []float32{inf, 3}, []Point{{0, 0}, {0, 0.5}, {0, 1}, {0.5, 1}, {1, 1}}, ""},
		{"-Inf attack", []float32{1}, []float32{-inf}, []Point{{0, 0}, {1, 0}, {1, 1}}, ""},
		{"+Inf benign", []float32{inf}, []float32{1}, []Point{{0, 0}, {1, 0}, {1, 1}}, ""},
		// NaN sorts last and equals no threshold: the walk used to loop
		// for ever on it, appending points.
		{"NaN attack", []float32{1, 2}, []float32{3, nan}, nil, "attack score is NaN"},
		{"NaN benign", []float32{nan}, []float32{1}, nil, "benign score is NaN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ROC(c.benign, c.attack)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %v, %v, want an error containing %q", got, err, c.err)
				}
				return
			}
			if err != nil || len(got) != len(c.want) {
				t.Fatalf("got %v, %v, want %v", got, err, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("got %v, want %v", got, c.want)
				}
			}
		})
	}
}

// TestEvaluateNonFinite: a NaN attack score is an error naming the capture
// (it used to hang Evaluate in rocCurve, growing memory), as non-finite
// benign scores are; ±Inf attack scores rank as the extremes they are.
func TestEvaluateNonFinite(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	benign := Benign{Name: "b", Scores: []float32{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0}}
	cases := []struct {
		name     string
		benign   []float32
		attack   []float32
		positive []bool
		err      string
		detected int
		auc      float64
	}{
		{"NaN attack", nil, []float32{2, nan, 3}, nil, "evaluate scan.pcap: score 1 is NaN", 0, 0},
		{"NaN in labelled background", nil, []float32{nan, 3}, []bool{false, true}, "evaluate scan.pcap: score 0 is NaN", 0, 0},
		{"NaN benign", []float32{0.1, nan}, []float32{2}, nil, "benign capture b: score 1 is NaN", 0, 0},
		{"+Inf benign", []float32{0.1, inf}, []float32{2}, nil, "benign capture b: score 1 is +Inf", 0, 0},
		{"+Inf attack", nil, []float32{inf, inf}, nil, "", 1, 1},
		{"-Inf attack", nil, []float32{float32(math.Inf(-1))}, nil, "", 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := benign
			if c.benign != nil {
				b.Scores = c.benign
			}
			in := Input{Model: ModelInfo{Threshold: 1}, Benign: []Benign{b},
				Attacks: []Attack{{Name: "scan.pcap", Scores: c.attack, TS: make([]int64, len(c.attack)), Positive: c.positive}}}
			type result struct {
				r   *Report
				err error
			}
			done := make(chan result, 1)
			go func() {
				r, err := Evaluate(in)
				done <- result{r, err}
			}()
			var res result
			select {
			case res = <-done:
			case <-time.After(10 * time.Second): // generous: it returns in microseconds
				t.Fatal("Evaluate did not return within 10 s")
			}
			if c.err != "" {
				if res.err == nil || !strings.Contains(res.err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", res.err, c.err)
				}
				return
			}
			if res.err != nil {
				t.Fatal(res.err)
			}
			if r := res.r; r.Detected != c.detected || r.ROCAUC != c.auc || r.Attacks[0].ROCAUC != c.auc {
				t.Errorf("detected %d, ROC AUC %g (capture %g), want %d, %g", r.Detected, r.ROCAUC, r.Attacks[0].ROCAUC, c.detected, c.auc)
			}
			if err := res.r.WriteJSON(io.Discard); err != nil {
				t.Errorf("report with ±Inf attack scores: %v", err)
			}
		})
	}
}

// synthetic is a tiny deterministic evaluation: 2000 benign scores, two
// attack captures (one labelled with background packets, one unlabelled).
func synthetic() Input {
	var b []float32
	for i := range 2000 {
		b = append(b, float32(i%1000)/1000)
	}
	scan := Attack{Name: "lab/scan.pcap", What: "nmap -sS", Attacker: "10.99.0.66"}
	for i := range 200 {
		pos := i%4 != 0
		s := float32(i%100) / 100
		if pos {
			s += 0.5 + float32(i%7)/10
		}
		scan.Scores = append(scan.Scores, s)
		scan.TS = append(scan.TS, int64(i)*1e7)
		scan.Positive = append(scan.Positive, pos)
	}
	flood := Attack{Name: "flood.pcap", What: "UDP flood"}
	for i := range 100 {
		flood.Scores = append(flood.Scores, 0.9+float32(i%5)/20)
		flood.TS = append(flood.TS, int64(i)*1e6)
	}
	return Input{
		Model:      ModelInfo{Name: "nethost", Version: 3, FeatureSet: "nethost/v1", Dim: 26, Quantization: "int8-dynamic", Threshold: 0.995},
		Benign:     []Benign{{Name: "b1", Scores: b[:1000]}, {Name: "b2", Scores: b[1000:]}},
		Attacks:    []Attack{scan, flood, {Name: "broken.pcap", Error: "truncated capture file"}},
		Throughput: []Throughput{{Vectors: 1000000, Seconds: 0.5, Batch: 256, PerSec: 2e6}},
	}
}

func TestGolden(t *testing.T) {
	r, err := Evaluate(synthetic())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct {
		file  string
		write func(*bytes.Buffer) error
	}{
		{"eval.md", func(b *bytes.Buffer) error { return r.WriteMarkdown(b) }},
		{"eval.json", func(b *bytes.Buffer) error { return r.WriteJSON(b) }},
		{"roc.svg", func(b *bytes.Buffer) error { return r.WriteSVG(b) }},
	} {
		t.Run(g.file, func(t *testing.T) {
			var buf bytes.Buffer
			if err := g.write(&buf); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "golden", g.file)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("%s differs from the golden file (go test -update to accept):\n%s", g.file, buf.String())
			}
		})
	}
}

func TestWriteFiles(t *testing.T) {
	r, err := Evaluate(synthetic())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{MarkdownFile, JSONFile, SVGFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}
