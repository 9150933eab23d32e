package ae

import (
	"context"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// onGrid reports the first weight of a's encoder that is not step·k for the column's
// WeightScale step and an integer |k| ≤ 2^(bits−1) − 1, as models/export quantizes it.
func onGrid(a *AE, bits int) (i, j int, ok bool) {
	qmax := float64(int(1)<<(bits-1) - 1)
	for j := 0; j < a.Hidden; j++ {
		s := a.encoderStep(j, bits)
		for i := 0; i < a.In; i++ {
			w := a.W1[i*a.Hidden+j]
			k := math.Round(w / s)
			if math.Abs(k) > qmax || k*s != w {
				return i, j, false
			}
		}
	}
	return 0, 0, true
}

func TestWeightScale(t *testing.T) {
	cases := []struct {
		amax float64
		bits int
		want float32
	}{
		{127, 8, 1},
		{63, 7, 1},
		{0.5, 8, float32(0.5 / 127)},
		{0, 8, 1}, // an all-zero column
		{1e-50, 8, 1},
	}
	for _, c := range cases {
		if got := WeightScale(c.amax, c.bits); got != c.want {
			t.Errorf("WeightScale(%g, %d) = %g, want %g", c.amax, c.bits, got, c.want)
		}
	}
}

// TestSnapEncoder: every encoder weight lands on its column's grid, the column's largest
// magnitude is kept, no weight moves by more than half a step, the decoder is untouched, and
// snapping again changes nothing.
func TestSnapEncoder(t *testing.T) {
	for _, bits := range []int{8, 7} {
		a := NewAE(13, 9, ActSigmoid, rand.New(rand.NewPCG(3, 4)))
		for i := 0; i < a.In; i++ { // one all-zero column
			a.W1[i*a.Hidden+4] = 0
		}
		before := slices.Clone(a.W1)
		w2 := slices.Clone(a.W2)
		a.SnapEncoder(bits)
		if i, j, ok := onGrid(a, bits); !ok {
			t.Fatalf("%d bits: W1[%d,%d] = %g is off its grid", bits, i, j, a.W1[i*a.Hidden+j])
		}
		for j := 0; j < a.Hidden; j++ {
			var amax0, amax1 float64
			for i := 0; i < a.In; i++ {
				amax0 = max(amax0, math.Abs(before[i*a.Hidden+j]))
				amax1 = max(amax1, math.Abs(a.W1[i*a.Hidden+j]))
			}
			step := float64(WeightScale(amax0, bits))
			if math.Abs(amax1-amax0) > 1e-6*amax0 {
				t.Errorf("%d bits, column %d: largest magnitude %g, was %g", bits, j, amax1, amax0)
			}
			for i := 0; i < a.In; i++ {
				if d := math.Abs(a.W1[i*a.Hidden+j] - before[i*a.Hidden+j]); d > step/2*(1+1e-9) {
					t.Errorf("%d bits: W1[%d,%d] moved by %g, more than half a step %g", bits, i, j, d, step)
				}
			}
		}
		if !slices.Equal(a.W2, w2) {
			t.Error("the decoder changed")
		}
		again := slices.Clone(a.W1)
		a.SnapEncoder(bits)
		if !slices.Equal(a.W1, again) {
			t.Errorf("%d bits: snapping twice moved weights", bits)
		}
	}
}

// TestFitSnapEpochs: with SnapEpochs the encoders end on their int8 grid, the snap epochs
// still train the rest (the model differs from snapping the plain model afterwards), the
// result is deterministic, and bad settings are refused.
func TestFitSnapEpochs(t *testing.T) {
	train := synth(2000, 20, 1, false)
	for _, kind := range []string{KindKitNET, KindSingle} {
		t.Run(kind, func(t *testing.T) {
			var stages []string
			cfg := Config{Kind: kind, MaxGroup: 5, Train: TrainConfig{Epochs: 4, Seed: 7}, SnapEpochs: 2,
				Progress: func(p Progress) { stages = append(stages, p.Stage) }}
			m := mustFit(t, train, cfg)
			aes := m.autoencoders()
			for g, a := range aes {
				if i, j, ok := onGrid(a, 8); !ok {
					t.Fatalf("autoencoder %d: W1[%d,%d] = %g is off its grid", g, i, j, a.W1[i*a.Hidden+j])
				}
			}
			if n := countStage(stages, "snap"); n != 2 {
				t.Errorf("%d snap epochs reported, want 2: %v", n, stages)
			}
			cfg.Progress = nil
			if !reflect.DeepEqual(m, mustFit(t, train, cfg)) {
				t.Fatal("training with SnapEpochs is not deterministic for a seed")
			}
			// The same training without the snap epochs, snapped afterwards: the encoders
			// match (the snap epochs do not move them), the decoders do not (they learned).
			cfg.SnapEpochs = 0
			for g, a := range mustFit(t, train, cfg).autoencoders() {
				a.SnapEncoder(8)
				if !slices.Equal(a.W1, aes[g].W1) {
					t.Fatalf("autoencoder %d: the snap epochs moved the encoder's weights", g)
				}
				if slices.Equal(a.W2, aes[g].W2) || slices.Equal(a.B1, aes[g].B1) {
					t.Fatalf("autoencoder %d: the snap epochs did not train the decoder and the encoder's biases", g)
				}
			}
		})
	}
	for _, c := range []struct {
		epochs, bits int
		want         string
	}{{-1, 8, "snap epochs -1"}, {1, 4, "at 4 bits"}, {1, 9, "at 9 bits"}} {
		_, err := Fit(context.Background(), train, Config{Kind: KindSingle, Train: TrainConfig{Epochs: 1}, SnapEpochs: c.epochs, SnapBits: c.bits})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SnapEpochs %d, SnapBits %d: error %v, want %q", c.epochs, c.bits, err, c.want)
		}
	}
}

// mustFit is Fit that fails the test on an error.
func mustFit(t *testing.T, data Matrix, cfg Config) *Model {
	t.Helper()
	m, err := Fit(context.Background(), data, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// autoencoders returns m's single autoencoder or its ensemble.
func (m *Model) autoencoders() []*AE {
	if m.Kind == KindSingle {
		return []*AE{m.Single}
	}
	return m.Ensemble
}

func countStage(stages []string, s string) int {
	n := 0
	for _, v := range stages {
		if v == s {
			n++
		}
	}
	return n
}

// TestOutMinRange: a feature that barely varies in training (a flag that is never set, with a
// little jitter, under the input normalisation's spread floor) makes its group's RMSE nearly
// constant; without a floor KitNET's output normalisation scales that group by hundreds, with
// OutMinRange the scale is at most 1/OutMinRange, the other groups keep theirs, and a row with
// the flag set still scores above every training row.
func TestOutMinRange(t *testing.T) {
	train := synth(2000, 12, 1, false)
	rng := rand.New(rand.NewPCG(5, 6))
	for r := 0; r < train.Rows; r++ {
		train.Row(r)[11] = float32(0.001 * rng.Float64())
	}
	cfg := Config{Kind: KindKitNET, MaxGroup: 4, MinRange: 0.2, Train: TrainConfig{Epochs: 3, Seed: 2}}
	m0 := mustFit(t, train, cfg)
	cfg.OutMinRange = 0.01
	m1 := mustFit(t, train, cfg)
	var worst float64
	for g := range m0.Groups {
		worst = max(worst, m0.OutNorm.Scale[g])
		if s := m1.OutNorm.Scale[g]; s > 1/cfg.OutMinRange*(1+1e-12) {
			t.Errorf("group %d: scale %g with OutMinRange %g", g, s, cfg.OutMinRange)
		}
		if m0.OutNorm.Scale[g] <= 1/cfg.OutMinRange && m1.OutNorm.Scale[g] != m0.OutNorm.Scale[g] {
			t.Errorf("group %d: scale %g changed to %g although it is under the floor's bound", g, m0.OutNorm.Scale[g], m1.OutNorm.Scale[g])
		}
	}
	if worst <= 1/cfg.OutMinRange {
		t.Fatalf("no group scaled beyond %g without the floor (largest %g): the test does not exercise it", 1/cfg.OutMinRange, worst)
	}
	var top float64
	for r := 0; r < train.Rows; r++ {
		top = max(top, m1.Score(train.Row(r), nil))
	}
	flag := slices.Clone(train.Row(0))
	flag[11] = 1
	if s := m1.Score(flag, nil); s <= top {
		t.Errorf("a row with the flag set scores %g, not above the training rows' %g", s, top)
	}
}
