// Package ae trains Vigil's anomaly models in pure Go: a single autoencoder, or a KitNET ensemble
// as in the Kitsune paper (Mirsky et al., NDSS 2018): the features are clustered by correlation into
// groups of at most m, one small autoencoder reconstructs each group, and an output autoencoder
// reconstructs the vector of the group reconstruction errors (RMSEs); its RMSE is the score.
//
// Everything is float64, single-threaded per autoencoder and deterministic for a seed (the group
// autoencoders train in parallel, each with its own seeded generator, so the result does not depend
// on scheduling). The trained Model is plain data that models/export turns into an ONNX graph; its
// Score method is the float64 reference the exported graph is tested against.
package ae

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// Activation of an autoencoder's output layer (the hidden layer is always a sigmoid).
const (
	ActSigmoid = "sigmoid"
	ActLinear  = "linear"
)

// AE is a one-hidden-layer autoencoder: h = sigmoid(x·W1 + B1), y = act(h·W2 + B2).
// W1 is In×Hidden and W2 is Hidden×In, row-major.
type AE struct {
	In, Hidden int
	W1, B1     []float64
	W2, B2     []float64
	OutAct     string
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// WeightScale is the step of the symmetric bits-bit grid for a weight column whose largest
// magnitude is amax: amax/(2^(bits−1) − 1) as a float32, or 1 for an all-zero column. It is the
// one definition of the grid that models/export quantizes a layer's weights to and that
// SnapEncoder rounds the float weights to.
func WeightScale(amax float64, bits int) float32 {
	s := float32(amax / float64(int(1)<<(bits-1)-1))
	if s == 0 {
		return 1
	}
	return s
}

// SnapEncoder rounds the encoder's weights (W1, one grid per hidden unit: a column of W1) to
// the symmetric bits-bit grid of WeightScale, so that an int8 model exported from a quantizes
// them without error: each weight becomes step·k for an integer |k| ≤ 2^(bits−1) − 1, exactly
// the value its int8 form k stands for. The column's largest weight keeps its magnitude.
func (a *AE) SnapEncoder(bits int) {
	qmax := float64(int(1)<<(bits-1) - 1)
	for j := 0; j < a.Hidden; j++ {
		s := a.encoderStep(j, bits)
		for i := 0; i < a.In; i++ {
			w := &a.W1[i*a.Hidden+j]
			*w = s * max(-qmax, min(qmax, math.Round(*w/s)))
		}
	}
}

// encoderStep is the WeightScale step of hidden unit j's encoder weights (column j of W1).
func (a *AE) encoderStep(j, bits int) float64 {
	var amax float64
	for i := 0; i < a.In; i++ {
		amax = max(amax, math.Abs(a.W1[i*a.Hidden+j]))
	}
	return float64(WeightScale(amax, bits))
}

// NewAE initialises an autoencoder with Xavier-uniform weights from rng.
func NewAE(in, hidden int, outAct string, rng *rand.Rand) *AE {
	a := &AE{In: in, Hidden: hidden, OutAct: outAct,
		W1: make([]float64, in*hidden), B1: make([]float64, hidden),
		W2: make([]float64, hidden*in), B2: make([]float64, in)}
	lim := math.Sqrt(6 / float64(in+hidden))
	for i := range a.W1 {
		a.W1[i] = (2*rng.Float64() - 1) * lim
	}
	for i := range a.W2 {
		a.W2[i] = (2*rng.Float64() - 1) * lim
	}
	return a
}

// Forward computes the reconstruction of x into y (len In) using h (len Hidden) as scratch.
func (a *AE) Forward(x, h, y []float64) {
	for j := 0; j < a.Hidden; j++ {
		h[j] = a.B1[j]
	}
	for i := 0; i < a.In; i++ {
		xi := x[i]
		if xi == 0 {
			continue
		}
		row := a.W1[i*a.Hidden : (i+1)*a.Hidden]
		for j, w := range row {
			h[j] += xi * w
		}
	}
	for j := range h[:a.Hidden] {
		h[j] = sigmoid(h[j])
	}
	a.decode(h[:a.Hidden], y)
}

// decode computes the reconstruction y (len In) from the hidden activations h (len Hidden).
func (a *AE) decode(h, y []float64) {
	copy(y[:a.In], a.B2)
	for j, hj := range h {
		row := a.W2[j*a.In : (j+1)*a.In]
		for i, w := range row {
			y[i] += hj * w
		}
	}
	if a.OutAct == ActSigmoid {
		for i := range y[:a.In] {
			y[i] = sigmoid(y[i])
		}
	}
}

// RMSE is the root mean squared reconstruction error of x; sq (len In) receives the per-feature
// squared errors when non-nil.
func (a *AE) RMSE(x []float64, sq []float64) float64 {
	h := make([]float64, a.Hidden)
	y := make([]float64, a.In)
	a.Forward(x, h, y)
	var s float64
	for i := 0; i < a.In; i++ {
		d := y[i] - x[i]
		if sq != nil {
			sq[i] = d * d
		}
		s += d * d
	}
	return math.Sqrt(s / float64(a.In))
}

// TrainConfig controls autoencoder training.
type TrainConfig struct {
	Epochs       int
	BatchSize    int
	LearningRate float64 // Adam step size
	Seed         uint64
	// InputNoise and HiddenNoise, if > 0, train for 8-bit inference: every training input
	// value (after the clip) and every hidden activation gets uniform noise in ±InputNoise
	// (±HiddenNoise), the size of the rounding error of the int8 model's activation
	// quantization (half a step: 0.5/255 for a [0, 1] range), while the target stays the
	// clean input. The autoencoder then learns to reconstruct the same output from rounded
	// activations, so its int8 scores rank like its float scores. 0 (default) trains
	// exactly as before.
	InputNoise, HiddenNoise float64
}

func (c *TrainConfig) defaults() {
	if c.Epochs <= 0 {
		c.Epochs = 10
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 32
	}
	if c.LearningRate <= 0 {
		c.LearningRate = 0.005
	}
}

// adam holds the optimiser state for one parameter slice.
type adam struct{ m, v []float64 }

func newAdam(n int) *adam { return &adam{m: make([]float64, n), v: make([]float64, n)} }

func (o *adam) step(p, g []float64, lr float64, t int) {
	const b1, b2, eps = 0.9, 0.999, 1e-8
	c1 := 1 - math.Pow(b1, float64(t))
	c2 := 1 - math.Pow(b2, float64(t))
	for i := range p {
		o.m[i] = b1*o.m[i] + (1-b1)*g[i]
		o.v[i] = b2*o.v[i] + (1-b2)*g[i]*g[i]
		p[i] -= lr * (o.m[i] / c1) / (math.Sqrt(o.v[i]/c2) + eps)
	}
}

// Matrix is a row-major float32 matrix view: Rows×Cols values in Data.
type Matrix struct {
	Data       []float32
	Rows, Cols int
}

// Row returns row r.
func (m Matrix) Row(r int) []float32 { return m.Data[r*m.Cols : (r+1)*m.Cols] }

// DistinctRows returns the index of the first occurrence of every distinct row, in order
// (rows compare by their float32 bits).
func (m Matrix) DistinctRows() []int {
	seen := map[string]bool{}
	var out []int
	for r := 0; r < m.Rows; r++ {
		key := make([]byte, 0, 4*m.Cols)
		for _, v := range m.Row(r) {
			key = binary.LittleEndian.AppendUint32(key, math.Float32bits(v))
		}
		if k := string(key); !seen[k] {
			seen[k] = true
			out = append(out, r)
		}
	}
	return out
}

// Train fits a to the rows of data, reading only the given columns (nil = all, in order). It
// returns the mean loss (MSE) of each epoch; report, if non-nil, is called after each epoch.
func (a *AE) Train(ctx context.Context, data Matrix, cols []int, cfg TrainConfig, rng *rand.Rand, report func(epoch int, loss float64)) ([]float64, error) {
	tr, err := newTrainer(a, data, cols, cfg, rng)
	if err != nil {
		return nil, err
	}
	var losses []float64
	for ep := 0; ep < tr.cfg.Epochs; ep++ {
		loss, err := tr.epoch(ctx)
		if err != nil {
			return losses, err
		}
		losses = append(losses, loss)
		if report != nil {
			report(ep+1, loss)
		}
	}
	return losses, nil
}

// trainer is the state of one autoencoder's mini-batch Adam training.
type trainer struct {
	a                  *AE
	data               Matrix
	cols               []int
	cfg                TrainConfig
	rng                *rand.Rand
	lo, hi             float64 // encoder input clip
	x, h, y, dz2, dz1  []float64
	xq, hq             []float64 // noisy encoder input and hidden activations (InputNoise, HiddenNoise)
	gW1, gB1, gW2, gB2 []float64
	oW1, oB1, oW2, oB2 *adam
	perm               []int
	t                  int
	// frozenW1 keeps the encoder's weights as they are (Config.SnapEpochs): the other
	// parameters still learn.
	frozenW1 bool
}

func newTrainer(a *AE, data Matrix, cols []int, cfg TrainConfig, rng *rand.Rand) (*trainer, error) {
	cfg.defaults()
	if cols == nil {
		cols = make([]int, data.Cols)
		for i := range cols {
			cols[i] = i
		}
	}
	if len(cols) != a.In {
		return nil, fmt.Errorf("train autoencoder: %d columns for %d inputs", len(cols), a.In)
	}
	if data.Rows == 0 {
		return nil, errors.New("train autoencoder: no data")
	}
	in, hid, bs := a.In, a.Hidden, cfg.BatchSize
	tr := &trainer{a: a, data: data, cols: cols, cfg: cfg, rng: rng, lo: math.Inf(-1), hi: math.Inf(1),
		x: make([]float64, bs*in), h: make([]float64, bs*hid), y: make([]float64, bs*in),
		dz2: make([]float64, bs*in), dz1: make([]float64, bs*hid),
		gW1: make([]float64, in*hid), gB1: make([]float64, hid), gW2: make([]float64, hid*in), gB2: make([]float64, in),
		oW1: newAdam(in * hid), oB1: newAdam(hid), oW2: newAdam(hid * in), oB2: newAdam(in),
		perm: make([]int, data.Rows)}
	if cfg.InputNoise > 0 || cfg.HiddenNoise > 0 {
		tr.xq, tr.hq = make([]float64, bs*in), make([]float64, bs*hid)
	}
	for i := range tr.perm {
		tr.perm[i] = i
	}
	return tr, nil
}

// noisyDecode adds HiddenNoise to the hidden activations h (into hq) and recomputes the
// reconstruction y from them.
func (tr *trainer) noisyDecode(h, hq, y []float64) {
	a := tr.a
	copy(hq, h)
	if tr.cfg.HiddenNoise <= 0 {
		return
	}
	for j := range hq {
		hq[j] += tr.cfg.HiddenNoise * (2*tr.rng.Float64() - 1)
	}
	a.decode(hq, y)
}

// epoch runs one pass over the data in a fresh random order and returns the mean MSE.
func (tr *trainer) epoch(ctx context.Context) (float64, error) {
	a, data, cols, cfg := tr.a, tr.data, tr.cols, tr.cfg
	in, hid, bs := a.In, a.Hidden, cfg.BatchSize
	x, h, y, dz2, dz1 := tr.x, tr.h, tr.y, tr.dz2, tr.dz1
	gW1, gB1, gW2, gB2 := tr.gW1, tr.gB1, tr.gW2, tr.gB2
	perm := tr.perm
	xc := make([]float64, in)
	tr.rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
	var epochLoss float64
	for start := 0; start < len(perm); start += bs {
		if start%(bs*256) == 0 {
			if err := ctx.Err(); err != nil {
				return 0, fmt.Errorf("train autoencoder: %w", err)
			}
		}
		n := min(bs, len(perm)-start)
		for b := 0; b < n; b++ {
			row := data.Row(perm[start+b])
			for k, c := range cols {
				x[b*in+k] = float64(row[c])
			}
		}
		noisy := tr.xq != nil
		for b := 0; b < n; b++ {
			xb := x[b*in : (b+1)*in]
			for i, v := range xb {
				xc[i] = min(max(v, tr.lo), tr.hi)
				if cfg.InputNoise > 0 {
					xc[i] += cfg.InputNoise * (2*tr.rng.Float64() - 1)
				}
			}
			a.Forward(xc, h[b*hid:(b+1)*hid], y[b*in:(b+1)*in])
			if noisy {
				copy(tr.xq[b*in:(b+1)*in], xc)
				tr.noisyDecode(h[b*hid:(b+1)*hid], tr.hq[b*hid:(b+1)*hid], y[b*in:(b+1)*in])
			}
		}
		// Loss = mean over batch and features of (y−x)²; gradients of that.
		scale := 2 / float64(n*in)
		var loss float64
		for i := 0; i < n*in; i++ {
			d := y[i] - x[i]
			loss += d * d
			g := scale * d
			if a.OutAct == ActSigmoid {
				g *= y[i] * (1 - y[i])
			}
			dz2[i] = g
		}
		epochLoss += loss
		clear(gW1)
		clear(gB1)
		clear(gW2)
		clear(gB2)
		for b := 0; b < n; b++ {
			hb, db := h[b*hid:(b+1)*hid], dz2[b*in:(b+1)*in]
			hd := hb // the decoder's input (noisy with HiddenNoise)
			if noisy {
				hd = tr.hq[b*hid : (b+1)*hid]
			}
			for j := 0; j < hid; j++ {
				hj := hb[j]
				row := gW2[j*in : (j+1)*in]
				w2row := a.W2[j*in : (j+1)*in]
				var dh float64
				for i, g := range db {
					row[i] += hd[j] * g
					dh += g * w2row[i]
				}
				dz1[b*hid+j] = dh * hj * (1 - hj)
			}
			for i, g := range db {
				gB2[i] += g
			}
			d1 := dz1[b*hid : (b+1)*hid]
			for j, g := range d1 {
				gB1[j] += g
			}
			if tr.frozenW1 {
				continue
			}
			xb := x[b*in : (b+1)*in]
			if noisy {
				xb = tr.xq[b*in : (b+1)*in]
			}
			for i, xi := range xb {
				if !noisy {
					xi = min(max(xi, tr.lo), tr.hi)
				}
				if xi == 0 {
					continue
				}
				row := gW1[i*hid : (i+1)*hid]
				for j, g := range d1 {
					row[j] += xi * g
				}
			}
		}
		tr.t++
		if !tr.frozenW1 {
			tr.oW1.step(a.W1, gW1, cfg.LearningRate, tr.t)
		}
		tr.oB1.step(a.B1, gB1, cfg.LearningRate, tr.t)
		tr.oW2.step(a.W2, gW2, cfg.LearningRate, tr.t)
		tr.oB2.step(a.B2, gB2, cfg.LearningRate, tr.t)
	}
	return epochLoss / float64(data.Rows*in), nil
}
