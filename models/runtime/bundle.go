package runtime

import (
	"fmt"
	"math"
	"os"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
)

// ReadBundle reads a model bundle for a detector plugin: a regular file,
// read strictly (models/bundle), with a positive, finite threshold and not
// expired. The plugin still checks the detector, feature set and dimension.
func ReadBundle(path string) (*bundle.Bundle, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load bundle: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("load bundle %s: not a regular file", path)
	}
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		return nil, fmt.Errorf("load bundle %s: %w", path, err)
	}
	man := b.Manifest
	switch {
	case !(man.Threshold > 0) || math.IsInf(man.Threshold, 0):
		return nil, fmt.Errorf("load bundle %s: threshold %v is not a positive number", path, man.Threshold)
	case !man.Expires.IsZero() && time.Now().After(man.Expires):
		return nil, fmt.Errorf("load bundle %s: expired on %s", path, man.Expires.Format(time.RFC3339))
	}
	return b, nil
}

// OpenBundle opens b's model (read from path by ReadBundle) for batches of
// up to maxBatch vectors, checks it by scoring one zero vector (one score and
// Dim contributions), and returns the scorer with the bundle file's digest.
//
// It then fixes the scorer's run size (at most opts.MaxRun, default
// maxBatch) to the largest one at which probe rows score as they do alone,
// within a thousandth of the bundle's threshold (ConsistentRun): on CPUs
// where ONNX Runtime's int8 kernels compute some rows of larger runs
// differently, the scorer runs smaller batches instead of giving a vector a
// score that depends on its neighbours.
func OpenBundle(path string, b *bundle.Bundle, maxBatch int, opts Options) (*Scorer, string, error) {
	digest, err := bundle.Digest(path)
	if err != nil {
		return nil, "", fmt.Errorf("load bundle %s: %w", path, err)
	}
	if err := Init(opts.LibraryPath); err != nil {
		return nil, "", fmt.Errorf("load bundle %s: onnx runtime: %w", path, err)
	}
	dim := b.Manifest.Dim
	sc, err := OpenWith("", b.Model, dim, maxBatch, opts)
	if err != nil {
		return nil, "", fmt.Errorf("load bundle %s: %w", path, err)
	}
	probe := make([]float32, dim)
	if s, c, err := sc.Score(probe, 1); err != nil || len(s) != 1 || len(c) != dim {
		_ = sc.Close()
		if err == nil {
			err = fmt.Errorf("model outputs %d scores and %d contributions for one vector", len(s), len(c))
		}
		return nil, "", fmt.Errorf("load bundle %s: test scoring: %w", path, err)
	}
	if _, err := sc.CheckRuns(1e-3 * b.Manifest.Threshold); err != nil {
		_ = sc.Close()
		return nil, "", fmt.Errorf("load bundle %s: %w", path, err)
	}
	return sc, digest, nil
}
