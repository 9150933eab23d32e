// Package export turns a trained models/ae.Model into a self-contained ONNX graph (opset 17) with
// Vigil's graph contract: input "features" float32 [N, D] (N dynamic), normalisation inside the
// graph, outputs "score" [N] and "contrib" [N, D] (per-feature squared reconstruction error of the
// first layer, in normalised space).
//
// A KitNET ensemble is exported as two block-sparse dense layers (every group autoencoder's weights
// placed in its rows and columns of one matrix, zeros elsewhere), so ONNX Runtime runs two MatMuls
// instead of two per group; a fixed matrix then averages the squared errors per group, and the
// output autoencoder runs on the normalised group RMSEs.
//
// int8 variants (never weight-only DequantizeLinear, which ONNX Runtime would dequantize on every
// run):
//   - dynamic: DynamicQuantizeLinear on the activation, MatMulInteger with int8 weights, Cast and a
//     scale Mul, then the bias Add, the exact pattern ONNX Runtime fuses into MatMulIntegerToFloat
//     and then DynamicQuantizeMatMul;
//   - static QDQ: QuantizeLinear/DequantizeLinear on the activation with a calibrated scale and
//     DequantizeLinear on the int8 weight around each MatMul, which ONNX Runtime's QDQ transformer
//     turns into a fused integer MatMul.
package export

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/onnx"
)

// Graph names and versions of the contract.
const (
	InputName   = "features"
	ScoreName   = "score"
	ContribName = "contrib"
	Opset       = 17
	Producer    = "vigil-models"
)

// Options select the numeric format of the exported graph.
type Options struct {
	// Quant is bundle.QuantNone (float32), bundle.QuantInt8Dyn or bundle.QuantInt8Static.
	Quant string
	// Calibration holds raw feature rows used to fix the static activation ranges (QDQ). Without
	// it the theoretical ranges are used (the encoder input's clip interval, [0, 1] after sigmoid).
	Calibration ae.Matrix
	// WeightBits is 8 (default) or 7. Seven-bit weights ("reduce range") avoid the int16
	// saturation of u8×s8 products on x86 CPUs without VNNI.
	WeightBits int
	// QuantizeOutput also quantizes KitNET's output autoencoder. By default it stays float32: it
	// decides the final score, and quantizing it measurably hurt the int8/float rank agreement
	// (Spearman 0.968 instead of 0.9997 on the synthetic test data), for a few kilobytes.
	QuantizeOutput bool
	// QuantizeHidden (static QDQ only) also quantizes the encoders' pre-activations, so ONNX
	// Runtime runs QGemm with uint8 output followed by QLinearSigmoid (a 256-entry lookup table)
	// instead of a float Sigmoid and a QuantizeLinear on the hidden layer: faster, at the cost of
	// an 8-bit pre-activation (calibrated on Calibration).
	QuantizeHidden bool
	// FloatDecoder keeps the main decoder (hidden → reconstruction) in float32 and quantizes only
	// the encoder: the reconstruction then carries no 8-bit rounding of the hidden activations,
	// which decides how int8 scores rank against the float model's on benign data.
	FloatDecoder bool
	// PadHidden, if > 1, pads the main encoder's hidden width up to a multiple of PadHidden with
	// inert units (zero weights in and out), which suits ONNX Runtime's int8 GEMM kernels.
	PadHidden int
	// ActRange chooses how the static activation ranges (QDQ) are taken from Calibration:
	// RangeMinMax (default: smallest and largest value), RangePercentile (the ActPercentile
	// quantiles, outliers clipped) or RangeMSE (the clipping range that minimises the
	// quantization mean squared error over the calibration values).
	ActRange string
	// ActPercentile is the upper quantile for RangePercentile (default 99.99; the lower one is
	// 100 − ActPercentile).
	ActPercentile float64
	// ActType is the activations' integer type for static QDQ: ActUint8 (default, asymmetric
	// with a zero point), ActInt8 (asymmetric) or ActInt8Sym (symmetric, zero point 0).
	ActType string
	// AMXSafe (int8 only) widens every int8 GEMM whose output width N has N mod 32 in 17..31
	// to the next multiple of 32 (zero weight columns; the main encoder gets inert hidden
	// units, other layers a Slice back to N). ONNX Runtime 1.24's AMX int8 kernel
	// (MlasGemmU8S8 on CPUs with AMX) computes the 32nd row of every full 32-row block wrong for
	// exactly those widths, so a model scored in runs of 32 rows or more then gets every 32nd
	// score wrong; with AMXSafe the scores do not depend on the run length, and they equal
	// the default layout's single-row scores (per-column weight scales and the calibrated
	// activation ranges do not change).
	AMXSafe bool
	// Lean (static QDQ) stores the int8 layers' constants compactly without changing a score:
	// the weights' zero points (all 0) are an Expand and the bias scales (activation scale ×
	// weight scale) a Mul, the biases' zero points are left out (0 is the default), and
	// AMXSafe's widened weights, scales and biases are stored at their real width and widened
	// by Pad. ONNX Runtime folds these constants when it loads the model, before its QDQ
	// fusion, so the optimised graph is the same (the same fused QGemms) and the file smaller.
	Lean bool
	// SplitInput (static QDQ, with or without Lean) quantizes the encoder's input in two uint8
	// passes: the input on its calibrated grid, then the rounding residual (input minus its
	// dequantized value, at most half a step) on a grid 255 times finer. Both passes multiply
	// the same int8 weights (two fused QGemms; the weights are stored once) and their outputs are
	// added, so the encoder sees the input at about 16-bit precision while every GEMM stays an
	// int8 kernel. The 8-bit input rounding is what reorders benign rows whose float scores
	// differ by less than one step (docs/models.md, sections 4 and 16).
	SplitInput bool
	// SplitWeights (static QDQ, not Lean) stores the main encoder's weights in two int8 parts:
	// the weights rounded to their per-column grid, and the rounding residual on a grid 127
	// times finer (its own per-column scales). Both multiply the same uint8 input (two fused
	// QGemms on one QuantizeLinear) and their outputs are added, so the encoder computes with
	// weights of about 15 bits while every GEMM stays an int8 kernel. Where the int8 rank error
	// is the weights' rather than the input's (fileactivity/v1, docs/models.md section 20) it
	// removes most of it for one GEMM and one Add more, against SplitInput's five nodes.
	SplitWeights bool
	// SplitHidden (static QDQ, int8 decoder: not with FloatDecoder) does the same for the main
	// decoder's input, the hidden activations: the reconstruction then carries no 8-bit
	// rounding of the hidden layer either, and the decoder's weights stay int8.
	SplitHidden bool
	// FitRounding (int8, with Calibration) chooses each int8 weight's rounding, up or down, to
	// minimise the layer's output error on the calibration rows (as the int8 model sees them;
	// for a sigmoid layer the pre-activation error weighted by the sigmoid's squared slope)
	// instead of rounding each weight to the nearest step, then corrects the bias for the mean
	// error left: post-training rounding in the manner of AdaRound (Nagel et al., 2020) and bias
	// correction (Nagel et al., 2019). The graph, its size and its speed do not change.
	FitRounding bool
	// InputGain (static QDQ with uint8 activations and Calibration; not with SplitInput), if
	// > 0, gives each input feature of the main encoder its own quantization step, in the manner
	// of SmoothQuant (Xiao et al., 2023): feature i is multiplied by g_i before the encoder's
	// QuantizeLinear (one Mul node; a per-axis QuantizeLinear would do the same without it, but
	// ONNX Runtime 1.24 runs that 6 times slower than the whole model) and row i of the
	// encoder's weights is divided by g_i, so the product is unchanged and the GEMM stays one
	// fused QGemm; in effect feature i is quantized at step s/g_i. With a_i the larger magnitude of feature i's InputGainPercentile
	// quantiles on the calibration rows and A the largest a_i, g_i = (A/a_i)^InputGain, at least
	// 1 and at most InputGainMax (1 for a feature that is 0 on those rows). The grid covers every
	// feature's quantiles times its gain, so a feature saturates at its own quantile when
	// InputGain is 1, above it when smaller. Features whose values sit far below the largest
	// feature's (most of a sparse, heavy-tailed set) then keep bits that one shared 8-bit grid
	// rounds away; the price is a coarser weight grid relative to those features' rows.
	InputGain float64
	// InputGainPercentile is the upper quantile for InputGain (default 99.9; the lower one is
	// 100 − InputGainPercentile).
	InputGainPercentile float64
	// InputGainMax bounds every gain (default 64).
	InputGainMax float64
	// Version is written as the ONNX model_version.
	Version int64
}

// amxBadWidth reports whether ONNX Runtime 1.24's AMX int8 GEMM miscomputes outputs of width n
// (see Options.AMXSafe), and the width to use instead.
func amxBadWidth(n int) (bool, int) {
	if r := n % 32; r > 16 {
		return true, n - r + 32
	}
	return false, n
}

// Activation range methods and types (Options.ActRange, Options.ActType).
const (
	RangeMinMax     = "minmax"
	RangePercentile = "percentile"
	RangeMSE        = "mse"
	ActUint8        = "uint8"
	ActInt8         = "int8"
	ActInt8Sym      = "int8sym"
)

// pad widens enc (In×H) and dec (H×Out) to H' = H rounded up to a multiple of mult. The new
// units have zero input weights and zero output weights: they change no output.
func pad(enc, dec *layer, mult int) {
	if mult <= 1 || enc.Out%mult == 0 {
		return
	}
	h := enc.Out
	h2 := (h + mult - 1) / mult * mult
	w := make([]float64, enc.In*h2)
	for i := 0; i < enc.In; i++ {
		copy(w[i*h2:i*h2+h], enc.W[i*h:(i+1)*h])
	}
	enc.W, enc.Out = w, h2
	enc.B = append(append([]float64(nil), enc.B...), make([]float64, h2-h)...)
	dec.W = append(append([]float64(nil), dec.W...), make([]float64, (h2-h)*dec.Out)...)
	dec.In = h2
}

// layer is a dense layer y = act(x·W + B), W row-major In×Out.
type layer struct {
	In, Out int
	W, B    []float64
	Act     string
	// Split, if set, names the tensor whose rounding residual the layer's second int8 pass
	// takes (Options.SplitInput, Options.SplitHidden): the layer's input, or for the encoder its
	// unclipped copy.
	Split string
	// Gain, if set, holds per-input gains (Options.InputGain): the layer's input is the
	// normalised features times Gain (one Mul), and W's row i is already divided by Gain[i].
	Gain []float64
	// SplitW adds the int8 pass of the weights' rounding residual (Options.SplitWeights).
	SplitW bool
}

func encoder(a *ae.AE) layer {
	return layer{In: a.In, Out: a.Hidden, W: a.W1, B: a.B1, Act: ae.ActSigmoid}
}

func decoder(a *ae.AE) layer {
	return layer{In: a.Hidden, Out: a.In, W: a.W2, B: a.B2, Act: a.OutAct}
}

// blockLayers assembles a KitNET ensemble into one encoder and one decoder over all D features.
func blockLayers(m *ae.Model) (enc, dec layer) {
	hs := 0
	for _, a := range m.Ensemble {
		hs += a.Hidden
	}
	d := m.Dim
	enc = layer{In: d, Out: hs, W: make([]float64, d*hs), B: make([]float64, hs), Act: ae.ActSigmoid}
	dec = layer{In: hs, Out: d, W: make([]float64, hs*d), B: make([]float64, d), Act: m.Ensemble[0].OutAct}
	off := 0
	for g, cols := range m.Groups {
		a := m.Ensemble[g]
		for i, c := range cols {
			for j := 0; j < a.Hidden; j++ {
				enc.W[c*hs+off+j] = a.W1[i*a.Hidden+j]
				dec.W[(off+j)*d+c] = a.W2[j*a.In+i]
			}
			dec.B[c] = a.B2[i]
		}
		copy(enc.B[off:], a.B1)
		off += a.Hidden
	}
	return enc, dec
}

func f32(xs []float64) []float32 {
	out := make([]float32, len(xs))
	for i, v := range xs {
		out[i] = float32(v)
	}
	return out
}

type exporter struct {
	b      *onnx.Builder
	opt    Options
	ranges map[*layer][2]float64 // static input ranges per layer
	zrange map[*layer][2]float64 // static pre-activation ranges (QuantizeHidden)
	calX   map[*layer]calRows    // calibration inputs per layer (FitRounding)
}

// calRows are a layer's calibration inputs: rows of in values.
type calRows struct {
	in int
	x  []float64
}

// Build returns the ONNX model for m.
func Build(m *ae.Model, opt Options) (*onnx.ModelProto, error) {
	if opt.Quant == "" {
		opt.Quant = bundle.QuantNone
	}
	switch opt.Quant {
	case bundle.QuantNone, bundle.QuantInt8Dyn, bundle.QuantInt8Static:
	default:
		return nil, fmt.Errorf("export: unknown quantization %q", opt.Quant)
	}
	if opt.WeightBits == 0 {
		opt.WeightBits = 8
	}
	if opt.WeightBits != 7 && opt.WeightBits != 8 {
		return nil, fmt.Errorf("export: weight bits %d (want 7 or 8)", opt.WeightBits)
	}
	if m == nil || m.Dim <= 0 || len(m.Norm.Offset) != m.Dim {
		return nil, errors.New("export: model is empty or inconsistent")
	}
	if opt.InputGain > 0 && (opt.Quant != bundle.QuantInt8Static || opt.SplitInput || (opt.ActType != "" && opt.ActType != ActUint8) || opt.Calibration.Rows == 0) {
		return nil, errors.New("export: InputGain needs static QDQ with uint8 activations and calibration rows, and not SplitInput")
	}
	if opt.SplitWeights && (opt.Quant != bundle.QuantInt8Static || opt.Lean) {
		return nil, errors.New("export: SplitWeights needs static QDQ, not Lean")
	}
	e := &exporter{b: onnx.NewBuilder("vigil_" + m.Kind), opt: opt, ranges: map[*layer][2]float64{}, zrange: map[*layer][2]float64{}, calX: map[*layer]calRows{}}
	b := e.b
	d := int64(m.Dim)

	var enc, dec layer
	switch m.Kind {
	case ae.KindSingle:
		enc, dec = encoder(m.Single), decoder(m.Single)
	case ae.KindKitNET:
		if len(m.Groups) == 0 || len(m.Groups) != len(m.Ensemble) || m.Output == nil {
			return nil, errors.New("export: KitNET model is incomplete")
		}
		enc, dec = blockLayers(m)
	default:
		return nil, fmt.Errorf("export: unknown model kind %q", m.Kind)
	}
	pad(&enc, &dec, opt.PadHidden)
	quant := opt.Quant != bundle.QuantNone
	if opt.Quant == bundle.QuantInt8Static {
		if err := e.calibrate(m, &enc, &dec); err != nil {
			return nil, err
		}
	}
	if bad, _ := amxBadWidth(enc.Out); quant && opt.AMXSafe && bad {
		// After the calibration, so that the inert units' constant activations do not
		// enter the activation ranges.
		pad(&enc, &dec, 32)
	}
	x := b.Input(InputName, onnx.Float, onnx.Param("N"), onnx.Fixed(d))
	xn := e.normalise(x, &m.Norm, "norm")
	xc := xn
	if enc.Gain == nil || !e.gainClips(&enc, m.Norm.Lo, m.Norm.Hi) {
		xc = e.clip(xn, &m.Norm, "norm")
	}
	if enc.Gain != nil {
		xc = b.Op("Mul", xc, b.Float32("input_gain", f32(enc.Gain), len(enc.Gain)))
	}
	if opt.SplitInput && opt.Quant == bundle.QuantInt8Static {
		enc.Split = xn
	}
	enc.SplitW = opt.SplitWeights
	h := e.dense(xc, &enc, quant)
	if opt.SplitHidden && opt.Quant == bundle.QuantInt8Static {
		dec.Split = h
	}
	y := e.dense(h, &dec, quant && !opt.FloatDecoder)
	diff := b.Op("Sub", y, xn)
	sq := b.Op("Mul", diff, diff)
	b.Output(sq, ContribName, onnx.Float, onnx.Param("N"), onnx.Fixed(d))

	var score string
	if m.Kind == ae.KindSingle {
		score = b.Op("Sqrt", b.OpA("ReduceMean", []string{sq}, onnx.AttrInts("axes", 1), onnx.AttrInt("keepdims", 0)))
	} else {
		if quant && opt.QuantizeOutput {
			score = e.headRows(m, sq)
		} else {
			score = e.headColumns(m, sq)
		}
	}
	b.Output(score, ScoreName, onnx.Float, onnx.Param("N"))

	// Only default-domain operators are written; ONNX Runtime adds com.microsoft nodes itself
	// when it fuses the int8 patterns.
	model := b.Model(Producer, "1", onnx.Opset("", Opset))
	model.ModelVersion = opt.Version
	model.DocString = fmt.Sprintf("Vigil %s autoencoder, dim %d, quantization %s", m.Kind, m.Dim, opt.Quant)
	model.MetadataProps = []*onnx.StringStringEntryProto{
		{Key: "vigil.kind", Value: m.Kind}, {Key: "vigil.dim", Value: fmt.Sprint(m.Dim)}, {Key: "vigil.quantization", Value: opt.Quant},
	}
	return model, nil
}

// Export returns the serialised ONNX model for m.
func Export(m *ae.Model, opt Options) ([]byte, error) {
	model, err := Build(m, opt)
	if err != nil {
		return nil, err
	}
	return onnx.Marshal(model)
}

// groupWeights returns, per KitNET group g, s_g²/|g| and −o_g·s_g, with s and o the output
// normalisation's scale (positive) and offset, and the group of every feature: then the normalised
// group RMSE is (sqrt(Σ_{c∈g} sq_c / |g|) − o_g)·s_g = sqrt(Σ_{c∈g} sq_c·s_g²/|g|) − o_g·s_g.
func groupWeights(m *ae.Model) (idx []int64, w, bias []float32) {
	k := len(m.Groups)
	idx = make([]int64, m.Dim)
	w = make([]float32, k)
	bias = make([]float32, k)
	for g, cols := range m.Groups {
		for _, c := range cols {
			idx[c] = int64(g)
		}
		sg := m.OutNorm.Scale[g]
		w[g] = float32(sg * sg / float64(len(cols)))
		bias[g] = float32(-m.OutNorm.Offset[g] * sg)
	}
	return idx, w, bias
}

// headColumns emits KitNET's output stage (normalised group RMSEs, output autoencoder, score) in
// float32 on the transposed activations [k, N]: every operator then runs over rows of N values
// (broadcasts of a [k, 1] bias along them), where the [N, k] layout made ONNX Runtime loop over N
// rows of only k values per elementwise operator, which cost more than the GEMMs themselves. The
// k×D group matrix is the transposed OneHot of the feature groups times the per-group weights;
// ONNX Runtime folds these constants into one matrix when it loads the model.
func (e *exporter) headColumns(m *ae.Model, sq string) string {
	b := e.b
	k := len(m.Groups)
	idx, wg, bias := groupWeights(m)
	onehot := b.OpA("OneHot", []string{b.Int64("group_of", idx, m.Dim), b.Int64("groups", []int64{int64(k)}, 1), b.Float32("onehot_values", []float32{0, 1}, 2)}, onnx.AttrInt("axis", -1))
	mt := b.Op("Transpose", b.Op("Mul", onehot, b.Float32("group_weight", wg, k)))
	gsum := b.OpA("Gemm", []string{mt, sq}, onnx.AttrInt("transB", 1)) // [k, N]
	gn := b.Op("Add", b.Op("Sqrt", gsum), b.Float32("out_norm_bias", bias, k, 1))
	gc := b.Op("Clip", gn, b.Float32("out_norm_lo", []float32{float32(m.OutNorm.Lo)}), b.Float32("out_norm_hi", []float32{float32(m.OutNorm.Hi)}))
	y := e.denseT(e.denseT(gc, encoder(m.Output)), decoder(m.Output))
	d := b.Op("Sub", y, gn)
	return b.Op("Sqrt", b.OpA("ReduceMean", []string{b.Op("Mul", d, d)}, onnx.AttrInts("axes", 0), onnx.AttrInt("keepdims", 0)))
}

// denseT emits act(Wᵀ·xT + B) on transposed activations xT [In, N] (float32).
func (e *exporter) denseT(xT string, l layer) string {
	b := e.b
	wt := make([]float32, l.In*l.Out)
	for i := 0; i < l.In; i++ {
		for j := 0; j < l.Out; j++ {
			wt[j*l.In+i] = float32(l.W[i*l.Out+j])
		}
	}
	z := b.OpA("Gemm", []string{b.Float32("wt", wt, l.Out, l.In), xT, b.Float32("bt", f32(l.B), l.Out, 1)}, onnx.AttrFloat("alpha", 1), onnx.AttrFloat("beta", 1))
	if l.Act == ae.ActSigmoid {
		return b.Op("Sigmoid", z)
	}
	return z
}

// headRows emits KitNET's output stage on [N, k] activations, with the output autoencoder
// quantized like the ensemble (Options.QuantizeOutput).
func (e *exporter) headRows(m *ae.Model, sq string) string {
	b := e.b
	k := len(m.Groups)
	idx, wg, bias := groupWeights(m)
	onehot := b.OpA("OneHot", []string{b.Int64("group_of", idx, m.Dim), b.Int64("groups", []int64{int64(k)}, 1), b.Float32("onehot_values", []float32{0, 1}, 2)}, onnx.AttrInt("axis", -1))
	mg := b.Op("Mul", onehot, b.Float32("group_weight", wg, k))
	gn := b.Op("Add", b.Op("Sqrt", b.Op("MatMul", sq, mg)), b.Float32("out_norm_bias", bias, k))
	gc := b.Op("Clip", gn, b.Float32("out_norm_lo", []float32{float32(m.OutNorm.Lo)}), b.Float32("out_norm_hi", []float32{float32(m.OutNorm.Hi)}))
	oenc, odec := encoder(m.Output), decoder(m.Output)
	if e.opt.Quant == bundle.QuantInt8Static {
		e.ranges[&oenc] = [2]float64{m.OutNorm.Lo, m.OutNorm.Hi}
		e.ranges[&odec] = [2]float64{0, 1}
	}
	y2 := e.dense(e.dense(gc, &oenc, true), &odec, true)
	d2 := b.Op("Sub", y2, gn)
	return b.Op("Sqrt", b.OpA("ReduceMean", []string{b.Op("Mul", d2, d2)}, onnx.AttrInts("axes", 1), onnx.AttrInt("keepdims", 0)))
}

// normalise emits xn = x·scale + bias.
func (e *exporter) normalise(x string, n *ae.Norm, name string) string {
	b := e.b
	scale := f32(n.Scale)
	bias := make([]float32, len(n.Offset))
	for i := range bias {
		bias[i] = float32(-n.Offset[i] * n.Scale[i])
	}
	d := len(scale)
	return b.Op("Add", b.Op("Mul", x, b.Float32(name+"_scale", scale, d)), b.Float32(name+"_bias", bias, d))
}

// clip emits xn clipped to the normalisation's interval [n.Lo, n.Hi].
func (e *exporter) clip(xn string, n *ae.Norm, name string) string {
	b := e.b
	return b.Op("Clip", xn, b.Float32(name+"_lo", []float32{float32(n.Lo)}), b.Float32(name+"_hi", []float32{float32(n.Hi)}))
}

// gainClips reports whether the input quantization of l with its gains (Options.InputGain)
// saturates every feature inside [lo, hi], so that a Clip to [lo, hi] before the gains changes
// nothing and is left out.
func (e *exporter) gainClips(l *layer, lo, hi float64) bool {
	r := e.ranges[l]
	s, zp := qparams(r[0], r[1])
	glo, ghi := -float64(zp)*s, (255-float64(zp))*s
	margin := 1e-6 * (hi - lo)
	for _, g := range l.Gain {
		if glo/g < lo+margin || ghi/g > hi-margin {
			return false
		}
	}
	return true
}

// quantize returns l's int8 weights, their per-column scales and the bias to quantize with them:
// each weight rounded to the nearest step and l's bias, or with Options.FitRounding (and
// calibration rows for l) the rounding fitted on those rows and the bias corrected for the mean
// error left (fitRounding).
func (e *exporter) quantize(l *layer) ([]int8, []float32, []float64) {
	q, scales := quantizeWeights(l, e.opt.WeightBits)
	c, ok := e.calX[l]
	if !e.opt.FitRounding || !ok || c.in != l.In || len(c.x) < l.In {
		// No rows, or rows of another width (PadHidden or AMXSafe widened the decoder's input).
		return q, scales, l.B
	}
	seen := func(v float64) float64 { return v } // dynamic quantization, SplitInput: ≈ exact
	if e.opt.Quant == bundle.QuantInt8Static && l.Split == "" {
		r := e.ranges[l]
		s, zp, lo, hi := e.actGrid(r[0], r[1])
		seen = func(v float64) float64 { return s * (min(max(math.RoundToEven(v/s)+zp, lo), hi) - zp) }
	}
	return q, scales, fitRounding(l, q, scales, c.x, seen, e.opt.WeightBits)
}

// actGrid is the activation grid of actQuant for the range [lo, hi]: scale, zero point and the
// integer range, so that a value v is seen as s·(clamp(round(v/s) + zp) − zp).
func (e *exporter) actGrid(lo, hi float64) (s, zp, qlo, qhi float64) {
	switch e.opt.ActType {
	case ActInt8:
		s, z := qparams(lo, hi)
		return s, float64(int(z) - 128), -128, 127
	case ActInt8Sym:
		s := max(math.Abs(lo), math.Abs(hi)) / 127
		if s == 0 {
			s = 1
		}
		return s, 0, -128, 127
	default:
		s, z := qparams(lo, hi)
		return s, float64(z), 0, 255
	}
}

// fitRounding chooses, column by column, the integer weights q (scales s, start: rounded to
// nearest) that minimise the squared difference between the float layer's output and the int8
// layer's on the calibration inputs x (rows of l.In), the int8 layer seeing them as the int8
// model does (seen). For a sigmoid layer each row's pre-activation difference is weighted by the
// sigmoid's squared slope there (a saturated unit's rounding hardly matters); for a linear layer
// the weight is 1. The search is coordinate descent over steps of ±1 (at most 64 passes; each
// accepted step lowers the error, so it ends). Weights that are 0 in float stay 0 (KitNET's block
// structure, AMXSafe's inert units). It returns l's bias corrected for the (weighted) mean
// difference left.
func fitRounding(l *layer, q []int8, s []float32, x []float64, seen func(float64) float64, bits int) []float64 {
	n, in := len(x)/l.In, l.In
	qmax := int(1)<<(bits-1) - 1
	xh := make([]float64, n*in)
	for i, v := range x[:n*in] {
		xh[i] = seen(v)
	}
	bias := append([]float64(nil), l.B...)
	wt := make([]float64, n)
	var act []int
	for j := 0; j < l.Out; j++ {
		act = act[:0]
		for i := range in {
			if l.W[i*l.Out+j] != 0 {
				act = append(act, i)
			}
		}
		k := len(act)
		if k == 0 {
			continue
		}
		sj := float64(s[j])
		// Row weights, and the column's G = Σ wt·x̂x̂ᵀ and H = Σ wt·x̂xᵀ over its active inputs.
		var wsum float64
		for r := range n {
			w := 1.0
			if l.Act == ae.ActSigmoid {
				z := l.B[j]
				for _, i := range act {
					z += x[r*in+i] * l.W[i*l.Out+j]
				}
				sg := 1 / (1 + math.Exp(-z))
				w = sg * (1 - sg) * sg * (1 - sg)
			}
			wt[r] = w
			wsum += w
		}
		if wsum == 0 {
			continue
		}
		g := make([]float64, k*k)
		h := make([]float64, k*k)
		for r := range n {
			w := wt[r] / wsum
			row, rowh := x[r*in:(r+1)*in], xh[r*in:(r+1)*in]
			for a, i := range act {
				if rowh[i] == 0 {
					continue
				}
				wa := w * rowh[i]
				ga, ha := g[a*k:(a+1)*k], h[a*k:(a+1)*k]
				for b, i2 := range act {
					ga[b] += wa * rowh[i2]
					ha[b] += wa * row[i2]
				}
			}
		}
		hw := make([]float64, k)
		cq := make([]int8, k)
		for a, i := range act {
			cq[a] = q[i*l.Out+j]
			for b, i2 := range act {
				hw[a] += h[a*k+b] * l.W[i2*l.Out+j]
			}
		}
		fitColumn(cq, sj, g, hw, make([]float64, k), qmax)
		for a, i := range act {
			q[i*l.Out+j] = cq[a]
		}
		// Bias correction: the weighted mean pre-activation difference left.
		var mean float64
		for r := range n {
			var d float64
			for _, i := range act {
				d += x[r*in+i]*l.W[i*l.Out+j] - xh[r*in+i]*sj*float64(q[i*l.Out+j])
			}
			mean += wt[r] / wsum * d
		}
		bias[j] += mean
	}
	return bias
}

// fitColumn fits the integer weights q of one column (scale sc; start: the given q) by coordinate
// descent over steps of ±1 on the quadratic error E(ŵ) = ŵᵀGŵ − 2ŵᵀ·hw with ŵ = sc·q (G is k×k,
// hw = H·w), using res as scratch: at most 64 passes, each accepted step lowering E.
func fitColumn(q []int8, sc float64, g, hw, res []float64, qmax int) {
	k := len(q)
	for a := range k {
		var v float64
		for b := range k {
			v += g[a*k+b] * sc * float64(q[b])
		}
		res[a] = v - hw[a]
	}
	for range 64 {
		changed := false
		for a := range k {
			qa := int(q[a])
			best, bestD := 0.0, 0
			for _, d := range [2]int{1, -1} {
				if qa+d > qmax || qa+d < -qmax {
					continue
				}
				delta := float64(d) * sc
				if de := 2*delta*res[a] + delta*delta*g[a*k+a]; de < best-1e-18 {
					best, bestD = de, d
				}
			}
			if bestD == 0 {
				continue
			}
			q[a] = int8(qa + bestD)
			delta := float64(bestD) * sc
			for b := range k {
				res[b] += delta * g[b*k+a]
			}
			changed = true
		}
		if !changed {
			break
		}
	}
}

// quantizeWeights quantizes W (In×Out) symmetrically per output column.
func quantizeWeights(l *layer, bits int) ([]int8, []float32) {
	qmax := float64(int(1)<<(bits-1) - 1)
	scales := make([]float32, l.Out)
	q := make([]int8, len(l.W))
	for j := 0; j < l.Out; j++ {
		var amax float64
		for i := 0; i < l.In; i++ {
			amax = max(amax, math.Abs(l.W[i*l.Out+j]))
		}
		scales[j] = ae.WeightScale(amax, bits)
		for i := 0; i < l.In; i++ {
			v := math.Round(l.W[i*l.Out+j] / float64(scales[j]))
			q[i*l.Out+j] = int8(max(-qmax, min(qmax, v)))
		}
	}
	return q, scales
}

// residualWeights returns the int8 rounding residual of l's weights after their quantization q
// at per-column scales s (Options.SplitWeights): r = W − s·q, on per-column grids of
// max|r|/127 (a column without residual gets scale 1 and zeros).
func residualWeights(l *layer, q []int8, s []float32) ([]int8, []float32) {
	rq := make([]int8, len(q))
	rs := make([]float32, l.Out)
	r := make([]float64, l.In)
	for j := 0; j < l.Out; j++ {
		var amax float64
		for i := 0; i < l.In; i++ {
			r[i] = l.W[i*l.Out+j] - float64(s[j])*float64(q[i*l.Out+j])
			amax = max(amax, math.Abs(r[i]))
		}
		sc := float32(amax / 127)
		if sc == 0 {
			rs[j] = 1
			continue
		}
		rs[j] = sc
		for i := 0; i < l.In; i++ {
			rq[i*l.Out+j] = int8(max(-127, min(127, math.Round(r[i]/float64(sc)))))
		}
	}
	return rq, rs
}

// dense emits act(x·W + B), quantized or not.
func (e *exporter) dense(x string, l *layer, quant bool) string {
	if quant {
		bad, n2 := amxBadWidth(l.Out)
		switch {
		case bad && e.opt.AMXSafe && e.opt.Lean && e.opt.Quant == bundle.QuantInt8Static && !hasRange(e.zrange, l):
			return e.denseQuantPad(x, l, n2)
		case bad && e.opt.AMXSafe:
			return e.denseWide(x, l, n2)
		}
		return e.denseQuant(x, l)
	}
	b := e.b
	z := b.Op("Add", b.Op("MatMul", x, b.Float32("w", f32(l.W), l.In, l.Out)), b.Float32("b", f32(l.B), l.Out))
	if l.Act == ae.ActSigmoid {
		return b.Op("Sigmoid", z)
	}
	return z
}

// denseWide emits the quantized layer l with its output widened to n2 columns (zero weights
// and biases) and sliced back to l.Out columns before the activation (Options.AMXSafe).
func (e *exporter) denseWide(x string, l *layer, n2 int) string {
	b := e.b
	w := &layer{In: l.In, Out: n2, W: make([]float64, l.In*n2), B: make([]float64, n2), Act: ae.ActLinear, Split: l.Split, Gain: l.Gain, SplitW: l.SplitW}
	for i := 0; i < l.In; i++ {
		copy(w.W[i*n2:i*n2+l.Out], l.W[i*l.Out:(i+1)*l.Out])
	}
	copy(w.B, l.B)
	if r, ok := e.ranges[l]; ok {
		e.ranges[w] = r
	}
	if x, ok := e.calX[l]; ok {
		e.calX[w] = x
	}
	z := e.denseQuant(x, w)
	z = b.Op("Slice", z, b.Int64("slice_start", []int64{0}, 1), b.Int64("slice_end", []int64{int64(l.Out)}, 1), b.Int64("slice_axis", []int64{1}, 1))
	if l.Act == ae.ActSigmoid {
		return b.Op("Sigmoid", z)
	}
	return z
}

// denseQuant emits act(x·W + B) in int8 (dynamic or static QDQ, by Options.Quant).
func (e *exporter) denseQuant(x string, l *layer) string {
	b := e.b
	var mm string
	switch {
	case e.opt.Quant == bundle.QuantInt8Dyn:
		wq, ws, bias := e.quantize(l)
		dq := b.Node("", "DynamicQuantizeLinear", []string{x}, 3)
		mi := b.Op("MatMulInteger", dq[0], b.Int8("wq", wq, l.In, l.Out), dq[2])
		cast := b.OpA("Cast", []string{mi}, onnx.AttrInt("to", int64(onnx.Float)))
		scale := b.Op("Mul", dq[1], b.Float32("ws", ws, l.Out))
		mm = b.Op("Add", b.Op("Mul", cast, scale), b.Float32("b", f32(bias), l.Out))
	default: // static QDQ
		wq, ws, bias := e.quantize(l)
		r := e.ranges[l]
		s, as, az := e.actQuant(r[0], r[1], "a")
		if e.opt.Lean && !hasRange(e.zrange, l) {
			return e.qgemmLean(x, l, wq, ws, bias, s, as, az, l.Out)
		}
		xq := b.Op("QuantizeLinear", x, as, az)
		xd := b.Op("DequantizeLinear", xq, as, az)
		wz := b.Int8("wz", make([]int8, l.Out), l.Out)
		wqn, wsn := b.Int8("wq", wq, l.In, l.Out), b.Float32("ws", ws, l.Out)
		wd := b.OpA("DequantizeLinear", []string{wqn, wsn, wz}, onnx.AttrInt("axis", 1))
		// The bias is int32 at scale a_scale·w_scale (per column), as QGemm expects, and the
		// layer is one explicit Gemm: a MatMul followed by a float Add would be fused into a
		// float Gemm before the QDQ transformer sees it.
		bq := make([]int32, l.Out)
		bs := make([]float32, l.Out)
		for j := range bq {
			bs[j] = float32(s) * ws[j]
			bq[j] = int32(math.Round(bias[j] / float64(bs[j])))
		}
		bd := b.OpA("DequantizeLinear", []string{b.Int32("bq", bq, l.Out), b.Float32("bs", bs, l.Out), b.Int32("bz", make([]int32, l.Out), l.Out)}, onnx.AttrInt("axis", 0))
		z := b.OpA("Gemm", []string{xd, wd, bd}, onnx.AttrFloat("alpha", 1), onnx.AttrFloat("beta", 1))
		if l.Split != "" {
			z = b.Op("Add", z, e.residualGemm(l.Split, xd, s, func() string {
				return b.OpA("DequantizeLinear", []string{wqn, wsn, wz}, onnx.AttrInt("axis", 1))
			}))
		}
		if l.SplitW {
			// The weights' rounding residual, on its own finer grid, times the same
			// quantized input (its own DequantizeLinear, so that each QGemm has one).
			rq, rs := residualWeights(l, wq, ws)
			rd := b.OpA("DequantizeLinear", []string{b.Int8("wr", rq, l.In, l.Out), b.Float32("wrs", rs, l.Out), wz}, onnx.AttrInt("axis", 1))
			z = b.Op("Add", z, b.OpA("Gemm", []string{b.Op("DequantizeLinear", xq, as, az), rd}, onnx.AttrFloat("alpha", 1), onnx.AttrFloat("beta", 1)))
		}
		if zr, ok := e.zrange[l]; ok && l.Act == ae.ActSigmoid {
			// Gemm→Q becomes QGemm with uint8 output, DQ→Sigmoid→Q (the next layer's input
			// quantization) QLinearSigmoid.
			_, zsn, zzn := e.actQuant(zr[0], zr[1], "z")
			z = b.Op("DequantizeLinear", b.Op("QuantizeLinear", z, zsn, zzn), zsn, zzn)
		}
		if l.Act == ae.ActSigmoid {
			return b.Op("Sigmoid", z)
		}
		return z
	}
	if l.Act == ae.ActSigmoid {
		return b.Op("Sigmoid", mm)
	}
	return mm
}

// hasRange reports whether m holds a range for l (QuantizeHidden layers keep the non-lean form).
func hasRange(m map[*layer][2]float64, l *layer) bool {
	_, ok := m[l]
	return ok
}

// denseQuantPad is denseWide for Options.Lean: the weights, their scales and the bias are
// stored for the l.Out real columns and padded to n2 columns at load time (zero weights and
// bias, weight scale 1: the same values denseWide stores), then sliced back to l.Out.
func (e *exporter) denseQuantPad(x string, l *layer, n2 int) string {
	wq, ws, bias := e.quantize(l)
	r := e.ranges[l]
	s, as, az := e.actQuant(r[0], r[1], "a")
	z := e.qgemmLean(x, l, wq, ws, bias, s, as, az, n2)
	b := e.b
	z = b.Op("Slice", z, b.Int64("slice_start", []int64{0}, 1), b.Int64("slice_end", []int64{int64(l.Out)}, 1), b.Int64("slice_axis", []int64{1}, 1))
	if l.Act == ae.ActSigmoid {
		return b.Op("Sigmoid", z)
	}
	return z
}

// qgemmLean emits the static-QDQ Gemm of layer l (weights wq, per-column scales ws, activation
// scale s with initialisers as, az) in the Options.Lean form, its output widened to n ≥ l.Out
// columns by Pad, and applies no activation when n > l.Out (the caller slices first).
func (e *exporter) qgemmLean(x string, l *layer, wq []int8, ws []float32, bias []float64, s float64, as, az string, n int) string {
	b := e.b
	xq := b.Op("QuantizeLinear", x, as, az)
	xd := b.Op("DequantizeLinear", xq, as, az)
	bq := make([]int32, l.Out)
	for j := range bq {
		bq[j] = int32(math.Round(bias[j] / float64(float32(s)*ws[j])))
	}
	w, sc, bn := b.Int8("wq", wq, l.In, l.Out), b.Float32("ws", ws, l.Out), b.Int32("bq", bq, l.Out)
	if n > l.Out {
		k := int64(n - l.Out)
		pc := b.Int64("pad_c", []int64{0, k}, 2)
		w = b.Op("Pad", w, b.Int64("pad_w", []int64{0, 0, 0, k}, 4))
		sc = b.Op("Pad", sc, pc, b.Float32("one", []float32{1}))
		bn = b.Op("Pad", bn, pc)
	}
	// QGemm needs the weights' zero points (all 0): expanded at load time.
	wz := b.Op("Expand", b.Int8("wz0", []int8{0}, 1), b.Int64("wz_dim", []int64{int64(n)}, 1))
	wd := b.OpA("DequantizeLinear", []string{w, sc, wz}, onnx.AttrInt("axis", 1))
	// float32(s)·ws[j] in float32, as denseQuant computes the bias scale.
	bd := b.OpA("DequantizeLinear", []string{bn, b.Op("Mul", as, sc)}, onnx.AttrInt("axis", 0))
	z := b.OpA("Gemm", []string{xd, wd, bd}, onnx.AttrFloat("alpha", 1), onnx.AttrFloat("beta", 1))
	if l.Split != "" {
		z = b.Op("Add", z, e.residualGemm(l.Split, xd, s, func() string {
			return b.OpA("DequantizeLinear", []string{w, sc, wz}, onnx.AttrInt("axis", 1))
		}))
	}
	if l.Act == ae.ActSigmoid && n == l.Out {
		return b.Op("Sigmoid", z)
	}
	return z
}

// residualGemm emits the second pass of Options.SplitInput and SplitHidden: the rounding
// residual x − xd of the input quantized at scale s (xd its dequantized value), quantized to
// uint8 at scale s/255 around zero, times the layer's int8 weights (a second DequantizeLinear of
// the same weight initialiser, from weights, so that each QGemm has its own weight node) without
// a bias.
//
// For the encoder, x is the unclipped input, so that the Clip before the first pass has
// no other consumer and ONNX Runtime folds it into that pass's QuantizeLinear (which saturates
// at the same range): one node less per run. Outside the clip range the residual saturates at
// half a step, so such a value enters the encoder as the range end ± s/2 instead of the range
// end: half a first-pass step, the rounding error every input has without SplitInput.
func (e *exporter) residualGemm(x, xd string, s float64, weights func() string) string {
	b := e.b
	_, rs, rz := e.actQuant(-s/2, s/2, "r")
	rd := b.Op("DequantizeLinear", b.Op("QuantizeLinear", b.Op("Sub", x, xd), rs, rz), rs, rz)
	return b.OpA("Gemm", []string{rd, weights()}, onnx.AttrFloat("alpha", 1), onnx.AttrFloat("beta", 1))
}

// actQuant emits the scale and zero point initialisers of an activation range in the
// configured type (Options.ActType) and returns the scale.
func (e *exporter) actQuant(lo, hi float64, name string) (float64, string, string) {
	b := e.b
	switch e.opt.ActType {
	case ActInt8:
		s, zp := qparams(lo, hi)
		return s, b.Float32(name+"s", []float32{float32(s)}), b.Int8(name+"z", []int8{int8(int(zp) - 128)})
	case ActInt8Sym:
		s := max(math.Abs(lo), math.Abs(hi)) / 127
		if s == 0 {
			s = 1
		}
		return s, b.Float32(name+"s", []float32{float32(s)}), b.Int8(name+"z", []int8{0})
	default:
		s, zp := qparams(lo, hi)
		return s, b.Float32(name+"s", []float32{float32(s)}), b.Uint8(name+"z", []uint8{zp})
	}
}

// qparams returns the uint8 scale and zero point of the range [lo, hi] (widened to contain 0).
func qparams(lo, hi float64) (float64, uint8) {
	lo, hi = min(lo, 0), max(hi, 0)
	s := (hi - lo) / 255
	if s == 0 {
		s = 1
	}
	return s, uint8(max(0, min(255, math.Round(-lo/s))))
}

// calibrate fixes the static activation ranges of the main encoder and decoder inputs (and of
// the encoder's pre-activation with QuantizeHidden) from Options.Calibration by Options.ActRange.
func (e *exporter) calibrate(m *ae.Model, enc, dec *layer) error {
	encR := [2]float64{m.Norm.Lo, m.Norm.Hi}
	decR := [2]float64{0, 1}
	switch e.opt.ActRange {
	case "", RangeMinMax, RangePercentile, RangeMSE:
	default:
		return fmt.Errorf("export: unknown activation range method %q", e.opt.ActRange)
	}
	if c := e.opt.Calibration; c.Rows > 0 {
		if c.Cols != m.Dim {
			return fmt.Errorf("export: calibration data has %d columns, model %d", c.Cols, m.Dim)
		}
		xs := make([]float64, 0, c.Rows*enc.In)
		hs := make([]float64, 0, c.Rows*enc.Out)
		var zs []float64
		xn := make([]float64, m.Dim)
		for r := 0; r < c.Rows; r++ {
			m.Norm.Apply(c.Row(r), xn)
			for i, v := range xn {
				v = min(max(v, m.Norm.Lo), m.Norm.Hi)
				xn[i] = v
				xs = append(xs, v)
			}
			for j := 0; j < enc.Out; j++ {
				z := enc.B[j]
				for i := 0; i < enc.In; i++ {
					z += xn[i] * enc.W[i*enc.Out+j]
				}
				if e.opt.QuantizeHidden {
					zs = append(zs, z)
				}
				hs = append(hs, 1/(1+math.Exp(-z)))
			}
		}
		if e.opt.InputGain > 0 {
			encR = e.applyGain(enc, xs)
		}
		if e.opt.FitRounding {
			// The rows as they are (gained, with InputGain): actRange sorts the values it is given.
			e.calX[enc], e.calX[dec] = calRows{enc.In, slices.Clone(xs)}, calRows{enc.Out, slices.Clone(hs)}
		}
		if e.opt.InputGain <= 0 {
			encR = e.actRange(xs)
		}
		decR = e.actRange(hs)
		if e.opt.QuantizeHidden {
			e.zrange[enc] = e.actRange(zs)
		}
	}
	e.ranges[enc] = encR
	e.ranges[dec] = decR
	return nil
}

// applyGain sets Options.InputGain's per-feature gains of the main encoder l from its
// calibration inputs xs (rows of l.In clipped, normalised values): it divides l's weight rows by
// them (on a copy), multiplies xs by them in place, and returns the input grid's range.
func (e *exporter) applyGain(l *layer, xs []float64) [2]float64 {
	p := e.opt.InputGainPercentile
	if p <= 50 || p > 100 {
		p = 99.9
	}
	gmax := e.opt.InputGainMax
	if gmax < 1 {
		gmax = 64
	}
	in, n := l.In, len(xs)/l.In
	lo, hi := make([]float64, in), make([]float64, in)
	col := make([]float64, n)
	var amax float64
	for i := range in {
		for r := range n {
			col[r] = xs[r*in+i]
		}
		slices.Sort(col)
		q := func(f float64) float64 { return col[min(n-1, max(0, int(math.Round(f*float64(n-1)))))] }
		lo[i], hi[i] = q(1-p/100), q(p/100)
		amax = max(amax, math.Abs(lo[i]), math.Abs(hi[i]))
	}
	gain := make([]float64, in)
	var r [2]float64
	for i := range in {
		gain[i] = 1
		if a := max(math.Abs(lo[i]), math.Abs(hi[i])); a > 0 {
			gain[i] = min(gmax, max(1, math.Pow(amax/a, e.opt.InputGain)))
		}
		r[0], r[1] = min(r[0], lo[i]*gain[i]), max(r[1], hi[i]*gain[i])
	}
	w := make([]float64, len(l.W))
	for i := range in {
		for j := range l.Out {
			w[i*l.Out+j] = l.W[i*l.Out+j] / gain[i]
		}
	}
	for k := range xs {
		xs[k] *= gain[k%in]
	}
	l.W, l.Gain = w, gain
	return r
}

// actRange returns the quantization range of the calibration values vs (sorted in place) by
// Options.ActRange.
func (e *exporter) actRange(vs []float64) [2]float64 {
	slices.Sort(vs)
	lo, hi := vs[0], vs[len(vs)-1]
	switch e.opt.ActRange {
	case RangePercentile:
		p := e.opt.ActPercentile
		if p <= 50 || p > 100 {
			p = 99.99
		}
		q := func(f float64) float64 {
			return vs[min(len(vs)-1, max(0, int(math.Round(f*float64(len(vs)-1)))))]
		}
		return [2]float64{q(1 - p/100), q(p / 100)}
	case RangeMSE:
		return mseRange(vs, e.opt.ActType)
	}
	return [2]float64{lo, hi}
}

// mseRange searches clipping ranges [f·lo, f·hi] (lo ≤ 0 ≤ hi the extremes of the sorted values vs,
// f from 1 down to 0.05 in steps of 0.01) and returns the one whose quantization (uint8
// grid, or the symmetric int8 grid for ActInt8Sym) has the smallest mean squared error over a
// sample of vs.
func mseRange(vs []float64, typ string) [2]float64 {
	const maxSample = 100000
	step := max(1, len(vs)/maxSample)
	sample := make([]float64, 0, len(vs)/step+1)
	for i := 0; i < len(vs); i += step {
		sample = append(sample, vs[i])
	}
	lo, hi := min(vs[0], 0), max(vs[len(vs)-1], 0)
	mse := func(l, h float64) float64 {
		var s, zp, qmin, qmax float64
		if typ == ActInt8Sym {
			s, qmin, qmax = max(-l, h)/127, -127, 127
		} else {
			s8, z8 := qparams(l, h)
			s, zp, qmin, qmax = s8, float64(z8), 0, 255
		}
		if s == 0 {
			return 0
		}
		var sum float64
		for _, v := range sample {
			q := max(qmin, min(qmax, math.Round(v/s)+zp))
			d := (q-zp)*s - v
			sum += d * d
		}
		return sum
	}
	best, bestR := math.Inf(1), [2]float64{lo, hi}
	for a := 0; a <= 95; a++ {
		f := 1 - float64(a)/100
		if v := mse(lo*f, hi*f); v < best {
			best, bestR = v, [2]float64{lo * f, hi * f}
		}
	}
	return bestR
}
