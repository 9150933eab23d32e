package train

import (
	"context"
	"os"
	"testing"

	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/ae/aetest"
)

// TestTrainingCost trains netflow-sized models (D = 115) on 100k synthetic vectors and logs time
// and peak memory. Slow: runs only with VIGIL_E2E=1.
func TestTrainingCost(t *testing.T) {
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("set VIGIL_E2E=1 to measure training cost on 100k×115 vectors")
	}
	data := aetest.Data(100000, 115, 1, false)
	for _, kind := range []string{ae.KindKitNET, ae.KindSingle} {
		res, err := Train(context.Background(), &SliceSource{Vectors: rows(data)}, Config{Dim: 115, Model: ae.Config{
			Kind: kind, Train: ae.TrainConfig{Epochs: 5, Seed: 1},
		}})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d rows × 5 epochs in %v, peak heap %.1f MiB, sys %.1f MiB, final loss %.5f",
			kind, res.Rows, res.Duration.Round(1e6), float64(res.PeakHeap)/(1<<20), float64(res.PeakSys)/(1<<20), res.FinalLoss)
	}
}
