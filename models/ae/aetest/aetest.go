// Package aetest makes synthetic feature data for tests of the model pipeline: benign rows driven by
// a few latent factors (so features correlate in groups, as real traffic statistics do) and
// anomalous rows that break those correlations.
package aetest

import (
	"math/rand/v2"

	"github.com/vigil-edge/vigil/models/ae"
)

// Data returns rows×d synthetic vectors. With anomalous set, every fourth feature is replaced by
// independent noise of the same scale.
func Data(rows, d int, seed uint64, anomalous bool) ae.Matrix {
	rng := rand.New(rand.NewPCG(seed, 99))
	m := ae.Matrix{Data: make([]float32, rows*d), Rows: rows, Cols: d}
	const factors = 7
	for r := 0; r < rows; r++ {
		var f [factors]float64
		for i := range f {
			f[i] = rng.Float64()
		}
		row := m.Row(r)
		for i := range row {
			scale := float64(1 + i%5)
			v := f[i%factors]*scale + 0.02*scale*rng.NormFloat64()
			if i%11 == 3 {
				v = f[i%factors] * f[(i+1)%factors] * 100 // a product feature on another scale
			}
			if anomalous && i%4 == 0 {
				v = rng.Float64() * scale
			}
			row[i] = float32(v)
		}
	}
	return m
}
