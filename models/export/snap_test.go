package export

import (
	"context"
	"testing"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/ae/aetest"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/models/runtime/runtimetest"
)

// flags turns synthetic rows into 0/1 features (above or below the feature's value in row 0), so
// that the int8 model's input grid holds every input exactly.
func flags(m ae.Matrix) ae.Matrix {
	out := ae.Matrix{Data: make([]float32, len(m.Data)), Rows: m.Rows, Cols: m.Cols}
	ref := m.Row(0)
	for r := 0; r < m.Rows; r++ {
		for i, v := range m.Row(r) {
			if v > ref[i] {
				out.Row(r)[i] = 1
			}
		}
	}
	return out
}

// snapModels trains both model kinds on 0/1 rows, without and with ae.Config.SnapEpochs.
func snapModels(t *testing.T, train ae.Matrix) map[string][2]*ae.Model {
	t.Helper()
	out := map[string][2]*ae.Model{}
	for _, kind := range []string{ae.KindKitNET, ae.KindSingle} {
		var pair [2]*ae.Model
		for k, snap := range []int{0, 1} {
			m, err := ae.Fit(context.Background(), train, ae.Config{Kind: kind, Train: ae.TrainConfig{Epochs: 4, Seed: 3}, SnapEpochs: snap})
			if err != nil {
				t.Fatal(err)
			}
			pair[k] = m
		}
		out[kind] = pair
	}
	return out
}

// TestSnapEpochsExact: a model trained with ae.Config.SnapEpochs has encoder weights that the
// export's int8 quantization holds exactly (scale × int8 = the float weight, bit for bit in
// float64), for the single autoencoder and for KitNET's block encoder; without it, it does not.
func TestSnapEpochsExact(t *testing.T) {
	for kind, pair := range snapModels(t, flags(aetest.Data(1500, 40, 1, false))) {
		for k, m := range pair {
			var enc layer
			if kind == ae.KindSingle {
				enc = encoder(m.Single)
			} else {
				enc, _ = blockLayers(m)
			}
			q, s := quantizeWeights(&enc, 8)
			off := 0
			for i, w := range enc.W {
				if float64(s[i%enc.Out])*float64(q[i]) != w {
					off++
				}
			}
			if k == 1 && off != 0 {
				t.Errorf("%s with SnapEpochs: %d of %d encoder weights are not held exactly by their int8 form", kind, off, len(enc.W))
			}
			if k == 0 && off == 0 {
				t.Errorf("%s without SnapEpochs: every weight already on its grid; the test shows nothing", kind)
			}
		}
	}
}

// TestSnapEpochsScores: on 0/1 rows, which the int8 input grid holds exactly, the int8 model
// of a snapped model scores like its float model up to the int32 bias and float32 arithmetic,
// far closer than the int8 model of the same training without the snap epochs.
func TestSnapEpochsScores(t *testing.T) {
	lib := runtimetest.Library(t)
	if err := runtime.Init(lib); err != nil {
		t.Fatal(err)
	}
	train := flags(aetest.Data(1500, 40, 1, false))
	val := flags(aetest.Data(1000, 40, 2, false))
	for kind, pair := range snapModels(t, train) {
		var e [2]float64
		for k, m := range pair {
			q := Options{Quant: bundle.QuantInt8Static, Calibration: val, FloatDecoder: true, AMXSafe: true}
			e[k] = meanAbsDiff(exportScores(t, m, q, val), exportScores(t, m, Options{Quant: bundle.QuantNone}, val))
		}
		t.Logf("%s: mean |int8 - float| %.3g, with SnapEpochs %.3g", kind, e[0], e[1])
		if !(e[1] < e[0]/10) {
			t.Errorf("%s: SnapEpochs leaves mean |int8 - float| at %.3g (without: %.3g), want under a tenth", kind, e[1], e[0])
		}
	}
}
