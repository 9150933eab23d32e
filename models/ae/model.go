package ae

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
)

// Model kinds.
const (
	KindKitNET = "kitnet"
	KindSingle = "single"
)

// Normalisation kinds.
const (
	NormMinMax = "minmax"
	NormZScore = "zscore"
)

// Norm is a per-feature affine normalisation xn = (x − Offset)·Scale. The encoders see xn clipped to
// [Lo, Hi] (which bounds what an outlier does to a layer, and to a dynamically quantized batch); the
// reconstruction error is measured against the unclipped xn, so outliers still score high.
type Norm struct {
	Kind          string
	Offset, Scale []float64
	Lo, Hi        float64
}

// Apply writes the normalised x into dst.
func (n *Norm) Apply(x []float32, dst []float64) {
	for i := range n.Offset {
		dst[i] = (float64(x[i]) - n.Offset[i]) * n.Scale[i]
	}
}

// FitNorm learns a normalisation from the rows of data.
func FitNorm(data Matrix, kind string) (Norm, error) { return FitNormRange(data, kind, 0) }

// FitNormRange is FitNorm with a floor on each feature's spread (the min-max
// range or the standard deviation): a feature that barely varies in the
// training data is scaled as if it varied by at least minRange, so that a
// small deviation of it cannot dominate the reconstruction error. Without a
// floor, a feature that is nonzero for one training file in ten thousand
// (a rare content indicator at 0.015) is scaled ×66, and the next benign
// file with the same small value scores as a strong anomaly.
func FitNormRange(data Matrix, kind string, minRange float64) (Norm, error) {
	d := data.Cols
	n := Norm{Kind: kind, Offset: make([]float64, d), Scale: make([]float64, d)}
	if data.Rows == 0 {
		return n, errors.New("fit normalisation: no data")
	}
	// A non-finite value would pass into the ranges unnoticed (a +Inf
	// maximum gives scale 1/Inf = 0 and normalises every value of the
	// feature to (x−lo)·0, which is NaN for the +Inf itself) and from there
	// into every weight.
	for r := 0; r < data.Rows; r++ {
		for i, v := range data.Row(r) {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return n, fmt.Errorf("fit normalisation: feature %d of row %d is %v (want a finite value)", i, r, v)
			}
		}
	}
	switch kind {
	case NormMinMax:
		lo, hi := make([]float64, d), make([]float64, d)
		for i := range lo {
			lo[i], hi[i] = math.Inf(1), math.Inf(-1)
		}
		for r := 0; r < data.Rows; r++ {
			for i, v := range data.Row(r) {
				lo[i] = min(lo[i], float64(v))
				hi[i] = max(hi[i], float64(v))
			}
		}
		for i := range lo {
			n.Offset[i] = lo[i]
			n.Scale[i] = 1 / max(rangeOrUnit(hi[i]-lo[i], lo[i]), minRange)
		}
		n.Lo, n.Hi = -1, 2
	case NormZScore:
		mean, m2 := make([]float64, d), make([]float64, d)
		for r := 0; r < data.Rows; r++ {
			k := float64(r + 1)
			for i, v := range data.Row(r) { // Welford
				delta := float64(v) - mean[i]
				mean[i] += delta / k
				m2[i] += delta * (float64(v) - mean[i])
			}
		}
		for i := range mean {
			n.Offset[i] = mean[i]
			n.Scale[i] = 1 / max(rangeOrUnit(math.Sqrt(m2[i]/float64(data.Rows)), mean[i]), minRange)
		}
		n.Lo, n.Hi = -6, 6
	default:
		return n, fmt.Errorf("fit normalisation: unknown kind %q", kind)
	}
	for i := range n.Scale {
		if !finite(n.Scale[i]) || n.Scale[i] == 0 || !finite(n.Offset[i]) {
			return n, fmt.Errorf("fit normalisation: feature %d: offset %v, scale %v (want finite, nonzero scale)", i, n.Offset[i], n.Scale[i])
		}
	}
	return n, nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// rangeOrUnit guards constant features: their spread becomes max(|value|, 1), so a later change of
// the value is visible without dividing by ~0.
func rangeOrUnit(r, v float64) float64 {
	if r > 1e-12 {
		return r
	}
	return max(math.Abs(v), 1)
}

// Model is a trained anomaly model.
type Model struct {
	Kind string
	Dim  int
	Norm Norm
	// Single autoencoder (KindSingle).
	Single *AE
	// KitNET (KindKitNET): Groups[g] are the feature indices of Ensemble[g]; OutNorm normalises
	// the vector of group RMSEs for Output.
	Groups   [][]int
	Ensemble []*AE
	OutNorm  Norm
	Output   *AE
}

// Score computes the model's score and per-feature contributions (squared error in normalised
// space) for one vector, in float64. It is the reference for the exported ONNX graph.
func (m *Model) Score(x []float32, contrib []float64) float64 {
	xn := make([]float64, m.Dim)
	m.Norm.Apply(x, xn)
	xc := make([]float64, m.Dim)
	for i, v := range xn {
		xc[i] = min(max(v, m.Norm.Lo), m.Norm.Hi)
	}
	if contrib == nil {
		contrib = make([]float64, m.Dim)
	}
	if m.Kind == KindSingle {
		return reconErr(m.Single, xc, xn, contrib)
	}
	g := make([]float64, len(m.Groups))
	for k, cols := range m.Groups {
		sub, subN := make([]float64, len(cols)), make([]float64, len(cols))
		for j, c := range cols {
			sub[j], subN[j] = xc[c], xn[c]
		}
		sq := make([]float64, len(cols))
		g[k] = reconErr(m.Ensemble[k], sub, subN, sq)
		for j, c := range cols {
			contrib[c] = sq[j]
		}
	}
	gn := make([]float64, len(g))
	gc := make([]float64, len(g))
	for i, v := range g {
		gn[i] = (v - m.OutNorm.Offset[i]) * m.OutNorm.Scale[i]
		gc[i] = min(max(gn[i], m.OutNorm.Lo), m.OutNorm.Hi)
	}
	return reconErr(m.Output, gc, gn, nil)
}

// reconErr reconstructs the clipped input xc and measures the RMSE against the unclipped xn.
func reconErr(a *AE, xc, xn, sq []float64) float64 {
	h := make([]float64, a.Hidden)
	y := make([]float64, a.In)
	a.Forward(xc, h, y)
	var s float64
	for i := range y {
		d := y[i] - xn[i]
		if sq != nil {
			sq[i] = d * d
		}
		s += d * d
	}
	return math.Sqrt(s / float64(a.In))
}

// Progress is reported after every epoch of every stage.
type Progress struct {
	Stage  string // "ensemble", "output", "single" or "snap" (Config.SnapEpochs)
	Epoch  int
	Epochs int
	Loss   float64 // mean MSE of the epoch (for the ensemble: mean over its autoencoders)
}

// Config controls Fit.
type Config struct {
	Kind        string  // KindKitNET (default) or KindSingle
	MaxGroup    int     // m: maximum features per ensemble autoencoder (default 10)
	HiddenRatio float64 // hidden units = ceil(ratio·inputs) (default 0.75)
	Norm        string  // NormMinMax (default) or NormZScore
	// MinRange floors every input feature's spread in the normalisation (FitNormRange; 0: no
	// floor). For feature sets whose features are already scaled to [0, 1] (fileactivity/v1).
	MinRange float64
	// OutMinRange floors the spread of every group RMSE in KitNET's output normalisation
	// (OutNorm, FitNormRange; 0: no floor). A group whose RMSE barely varies on the training data
	// (an autoencoder over one feature that is nearly always 0) otherwise gets a scale of 10^4 to
	// 10^5, and the output autoencoder then sees that group's rounding noise, float32 or int8,
	// magnified as much: it decides how the benign rows rank among themselves.
	OutMinRange float64
	// OutAct is the autoencoders' output activation: ActSigmoid or ActLinear (default: sigmoid
	// with NormMinMax, linear with NormZScore).
	OutAct        string
	ClusterSample int // rows used for the correlation clustering (default 10000)
	Train         TrainConfig
	OutputEpochs  int // epochs of the KitNET output autoencoder (default Train.Epochs)
	// SnapEpochs, if > 0, trains for an int8 encoder (quantization-aware fine-tuning): after
	// Train.Epochs, every encoder's weights (the single autoencoder's, or each ensemble
	// autoencoder's) are rounded to the SnapBits-bit grid that models/export quantizes them to
	// (AE.SnapEncoder), and SnapEpochs more epochs train the other parameters (encoder biases,
	// decoder) with those weights fixed. KitNET's output autoencoder then trains on the
	// snapped ensemble. The float model is then the one the int8 model computes, up to the
	// rounding of its activations: the int8 encoder's weights carry no error of their own.
	// 0 (default) trains exactly as before.
	SnapEpochs int
	// SnapBits is the weights' grid for SnapEpochs: 8 (default) or 7, as export's WeightBits.
	SnapBits int
	Workers  int // parallel ensemble trainers (default 2)
	Progress func(Progress)
}

func (c *Config) defaults() {
	if c.Kind == "" {
		c.Kind = KindKitNET
	}
	if c.MaxGroup <= 0 {
		c.MaxGroup = 10
	}
	if c.HiddenRatio <= 0 {
		c.HiddenRatio = 0.75
	}
	if c.Norm == "" {
		c.Norm = NormMinMax
	}
	if c.OutAct == "" {
		c.OutAct = outAct(c.Norm)
	}
	if c.ClusterSample <= 0 {
		c.ClusterSample = 10000
	}
	c.Train.defaults()
	if c.OutputEpochs <= 0 {
		c.OutputEpochs = c.Train.Epochs
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.SnapBits == 0 {
		c.SnapBits = 8
	}
}

func hidden(in int, ratio float64) int { return max(1, int(math.Ceil(ratio*float64(in)-1e-9))) }

func outAct(norm string) string {
	if norm == NormMinMax {
		return ActSigmoid
	}
	return ActLinear
}

// Fit trains a model on the rows of data (raw feature vectors).
func Fit(ctx context.Context, data Matrix, cfg Config) (*Model, error) {
	cfg.defaults()
	if data.Rows < 2 || data.Cols < 1 {
		return nil, fmt.Errorf("fit: need at least 2 rows of ≥1 feature, have %d×%d", data.Rows, data.Cols)
	}
	norm, err := FitNormRange(data, cfg.Norm, cfg.MinRange)
	if err != nil {
		return nil, fmt.Errorf("fit: %w", err)
	}
	xn := normalise(data, &norm)
	m := &Model{Kind: cfg.Kind, Dim: data.Cols, Norm: norm}
	progress := func(p Progress) {
		if cfg.Progress != nil {
			cfg.Progress(p)
		}
	}
	if cfg.OutAct != ActSigmoid && cfg.OutAct != ActLinear {
		return nil, fmt.Errorf("fit: unknown output activation %q", cfg.OutAct)
	}
	if cfg.SnapEpochs < 0 || (cfg.SnapEpochs > 0 && cfg.SnapBits != 7 && cfg.SnapBits != 8) {
		return nil, fmt.Errorf("fit: snap epochs %d at %d bits (want ≥ 0 epochs, 7 or 8 bits)", cfg.SnapEpochs, cfg.SnapBits)
	}
	switch cfg.Kind {
	case KindSingle:
		rng := rand.New(rand.NewPCG(cfg.Train.Seed, 1))
		m.Single = NewAE(data.Cols, hidden(data.Cols, cfg.HiddenRatio), cfg.OutAct, rng)
		tr, err := newTrainer(m.Single, xn, nil, cfg.Train, rng)
		if err != nil {
			return nil, fmt.Errorf("fit: %w", err)
		}
		tr.lo, tr.hi = norm.Lo, norm.Hi
		for ep := 1; ep <= cfg.Train.Epochs; ep++ {
			loss, err := tr.epoch(ctx)
			if err != nil {
				return nil, fmt.Errorf("fit: %w", err)
			}
			progress(Progress{Stage: "single", Epoch: ep, Epochs: cfg.Train.Epochs, Loss: loss})
		}
		if cfg.SnapEpochs > 0 {
			m.Single.SnapEncoder(cfg.SnapBits)
			tr.frozenW1 = true
			for ep := 1; ep <= cfg.SnapEpochs; ep++ {
				loss, err := tr.epoch(ctx)
				if err != nil {
					return nil, fmt.Errorf("fit: %w", err)
				}
				progress(Progress{Stage: "snap", Epoch: ep, Epochs: cfg.SnapEpochs, Loss: loss})
			}
		}
		return m, nil
	case KindKitNET:
	default:
		return nil, fmt.Errorf("fit: unknown model kind %q", cfg.Kind)
	}

	m.Groups = Cluster(sample(xn, cfg.ClusterSample), cfg.MaxGroup)
	trainers := make([]*trainer, len(m.Groups))
	for g, cols := range m.Groups {
		rng := rand.New(rand.NewPCG(cfg.Train.Seed, uint64(g)+2))
		a := NewAE(len(cols), hidden(len(cols), cfg.HiddenRatio), cfg.OutAct, rng)
		m.Ensemble = append(m.Ensemble, a)
		if trainers[g], err = newTrainer(a, xn, cols, cfg.Train, rng); err != nil {
			return nil, fmt.Errorf("fit: %w", err)
		}
		trainers[g].lo, trainers[g].hi = norm.Lo, norm.Hi
	}
	if err := trainEnsemble(ctx, trainers, cfg.Workers, cfg.Train.Epochs, "ensemble", progress); err != nil {
		return nil, err
	}
	if cfg.SnapEpochs > 0 {
		for g, tr := range trainers {
			m.Ensemble[g].SnapEncoder(cfg.SnapBits)
			tr.frozenW1 = true
		}
		if err := trainEnsemble(ctx, trainers, cfg.Workers, cfg.SnapEpochs, "snap", progress); err != nil {
			return nil, err
		}
	}

	// Output layer: the group RMSEs of the training data, normalised, reconstructed.
	k := len(m.Groups)
	rm := Matrix{Data: make([]float32, data.Rows*k), Rows: data.Rows, Cols: k}
	for r := 0; r < data.Rows; r++ {
		row := xn.Row(r)
		for g, cols := range m.Groups {
			sub, subN := make([]float64, len(cols)), make([]float64, len(cols))
			for j, c := range cols {
				subN[j] = float64(row[c])
				sub[j] = min(max(subN[j], norm.Lo), norm.Hi)
			}
			rm.Data[r*k+g] = float32(reconErr(m.Ensemble[g], sub, subN, nil))
		}
	}
	if m.OutNorm, err = FitNormRange(rm, cfg.Norm, cfg.OutMinRange); err != nil {
		return nil, fmt.Errorf("fit output normalisation: %w", err)
	}
	rmn := normalise(rm, &m.OutNorm)
	rng := rand.New(rand.NewPCG(cfg.Train.Seed, 0))
	m.Output = NewAE(k, hidden(k, cfg.HiddenRatio), cfg.OutAct, rng)
	ocfg := cfg.Train
	ocfg.Epochs = cfg.OutputEpochs
	tr, err := newTrainer(m.Output, rmn, nil, ocfg, rng)
	if err != nil {
		return nil, fmt.Errorf("fit output: %w", err)
	}
	tr.lo, tr.hi = m.OutNorm.Lo, m.OutNorm.Hi
	for ep := 1; ep <= ocfg.Epochs; ep++ {
		loss, err := tr.epoch(ctx)
		if err != nil {
			return nil, fmt.Errorf("fit output: %w", err)
		}
		progress(Progress{Stage: "output", Epoch: ep, Epochs: ocfg.Epochs, Loss: loss})
	}
	return m, nil
}

// trainEnsemble runs epochs epochs of every ensemble trainer, workers at a time, and reports
// each epoch's mean loss as stage.
func trainEnsemble(ctx context.Context, trainers []*trainer, workers, epochs int, stage string, progress func(Progress)) error {
	for ep := 1; ep <= epochs; ep++ {
		losses := make([]float64, len(trainers))
		errs := make([]error, len(trainers))
		var wg sync.WaitGroup
		next := make(chan int)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for g := range next {
					losses[g], errs[g] = trainers[g].epoch(ctx)
				}
			}()
		}
		for g := range trainers {
			next <- g
		}
		close(next)
		wg.Wait()
		var mean float64
		for g := range trainers {
			if errs[g] != nil {
				return fmt.Errorf("fit group %d: %w", g, errs[g])
			}
			mean += losses[g]
		}
		progress(Progress{Stage: stage, Epoch: ep, Epochs: epochs, Loss: mean / float64(len(trainers))})
	}
	return nil
}

func normalise(data Matrix, n *Norm) Matrix {
	out := Matrix{Data: make([]float32, len(data.Data)), Rows: data.Rows, Cols: data.Cols}
	for r := 0; r < data.Rows; r++ {
		src, dst := data.Row(r), out.Row(r)
		for i, v := range src {
			dst[i] = float32((float64(v) - n.Offset[i]) * n.Scale[i])
		}
	}
	return out
}

// sample takes up to n rows evenly spaced over data (deterministic).
func sample(data Matrix, n int) Matrix {
	if data.Rows <= n {
		return data
	}
	out := Matrix{Data: make([]float32, 0, n*data.Cols), Rows: n, Cols: data.Cols}
	for i := 0; i < n; i++ {
		out.Data = append(out.Data, data.Row(int(int64(i)*int64(data.Rows)/int64(n)))...)
	}
	return out
}

// Cluster groups the columns of data into clusters of at most maxSize, as KitNET's feature mapper:
// correlation distance 1 − r between features, agglomerative clustering, and the dendrogram cut
// recursively until every cluster has at most maxSize leaves. Kitsune's code uses single linkage;
// Vigil uses average linkage, whose balanced dendrogram cuts into fewer, fuller groups (single
// linkage chains, and cutting a chain yields many groups of one or two features). Ties are broken by
// the lowest indices, so the result is deterministic. Groups come out sorted.
func Cluster(data Matrix, maxSize int) [][]int {
	d := data.Cols
	if d <= maxSize {
		all := make([]int, d)
		for i := range all {
			all[i] = i
		}
		return [][]int{all}
	}
	dist := correlationDistance(data)
	// Agglomerative single linkage; node ids: 0..d-1 leaves, d.. merges.
	type node struct{ left, right, size int }
	nodes := make([]node, d, 2*d-1)
	for i := range nodes {
		nodes[i] = node{-1, -1, 1}
	}
	active := make([]int, d) // active cluster ids
	for i := range active {
		active[i] = i
	}
	cd := make([][]float64, d) // distances between active slots
	for i := range cd {
		cd[i] = append([]float64(nil), dist[i]...)
	}
	slots := d
	alive := make([]bool, d)
	for i := range alive {
		alive[i] = true
	}
	for merges := 0; merges < d-1; merges++ {
		bi, bj, best := -1, -1, math.Inf(1)
		for i := 0; i < slots; i++ {
			if !alive[i] {
				continue
			}
			for j := i + 1; j < slots; j++ {
				if alive[j] && cd[i][j] < best {
					bi, bj, best = i, j, cd[i][j]
				}
			}
		}
		id := len(nodes)
		l, r := active[bi], active[bj]
		if l > r {
			l, r = r, l
		}
		nodes = append(nodes, node{l, r, nodes[l].size + nodes[r].size})
		// Slot bi becomes the merged cluster; slot bj dies. Average linkage (UPGMA):
		// Lance-Williams d(i∪j, k) = (n_i·d(i,k) + n_j·d(j,k)) / (n_i + n_j).
		ni, nj := float64(nodes[active[bi]].size), float64(nodes[active[bj]].size)
		active[bi] = id
		alive[bj] = false
		for k := 0; k < slots; k++ {
			if alive[k] && k != bi {
				v := (ni*cd[bi][k] + nj*cd[bj][k]) / (ni + nj)
				cd[bi][k], cd[k][bi] = v, v
			}
		}
	}
	var leaves func(n int, out []int) []int
	leaves = func(n int, out []int) []int {
		if nodes[n].left < 0 {
			return append(out, n)
		}
		return leaves(nodes[n].right, leaves(nodes[n].left, out))
	}
	var groups [][]int
	var cut func(n int)
	cut = func(n int) {
		if nodes[n].size <= maxSize {
			g := leaves(n, nil)
			sort.Ints(g)
			groups = append(groups, g)
			return
		}
		cut(nodes[n].left)
		cut(nodes[n].right)
	}
	cut(len(nodes) - 1)
	return groups
}

// correlationDistance returns 1 − Pearson r for every pair of columns (r = 0 for a constant column).
func correlationDistance(data Matrix) [][]float64 {
	d, n := data.Cols, data.Rows
	mean := make([]float64, d)
	for r := 0; r < n; r++ {
		for i, v := range data.Row(r) {
			mean[i] += float64(v)
		}
	}
	for i := range mean {
		mean[i] /= float64(n)
	}
	cov := make([]float64, d*d)
	c := make([]float64, d)
	for r := 0; r < n; r++ {
		for i, v := range data.Row(r) {
			c[i] = float64(v) - mean[i]
		}
		for i := 0; i < d; i++ {
			ci := c[i]
			if ci == 0 {
				continue
			}
			row := cov[i*d : (i+1)*d]
			for j := i; j < d; j++ {
				row[j] += ci * c[j]
			}
		}
	}
	dist := make([][]float64, d)
	for i := range dist {
		dist[i] = make([]float64, d)
	}
	for i := 0; i < d; i++ {
		for j := i + 1; j < d; j++ {
			den := math.Sqrt(cov[i*d+i] * cov[j*d+j])
			r := 0.0
			if den > 0 {
				r = cov[i*d+j] / den
			}
			dist[i][j], dist[j][i] = 1-r, 1-r
		}
	}
	return dist
}
