//go:build cgo

package ctl

import (
	"os"
	"path/filepath"

	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/models/train"
)

// ortScorer is a model open in ONNX Runtime.
type ortScorer interface {
	train.Scorer
	Close() error
}

// openScorer loads model bytes in ONNX Runtime (library from --ort,
// $ONNXRUNTIME_LIB, or lib/libonnxruntime.so next to the binary as `make`
// installs it), one intra-op thread as the plugin runs it.
func openScorer(lib string, model []byte, dim, maxBatch int) (ortScorer, error) {
	if err := loadORT(lib); err != nil {
		return nil, err
	}
	return runtime.OpenWith("", model, dim, maxBatch, runtime.Options{})
}

// loadORT loads ONNX Runtime as openScorer does, so that a command can
// fail on a missing library before its long work rather than after it.
func loadORT(lib string) error {
	if lib == "" && os.Getenv("ONNXRUNTIME_LIB") == "" {
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "lib", "libonnxruntime.so"); fileExists(p) {
				lib = p
			}
		}
	}
	return runtime.Init(lib)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
