//go:build !cgo

package ctl

import (
	"errors"

	"github.com/vigil-edge/vigil/models/train"
)

type ortScorer interface {
	train.Scorer
	Close() error
}

// openScorer: this vigilctl was built without cgo, so it cannot load ONNX
// Runtime (model train and model eval score with the exported model).
func openScorer(string, []byte, int, int) (ortScorer, error) {
	return nil, errNoCgo
}

// loadORT: see openScorer.
func loadORT(string) error { return errNoCgo }

var errNoCgo = errors.New("this vigilctl was built with CGO_ENABLED=0 and cannot load ONNX Runtime; rebuild it with CGO_ENABLED=1 for model train and model eval")
