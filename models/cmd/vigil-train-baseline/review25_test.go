package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models/runtime/runtimetest"
)

// TestOnlyUnknownSet: -only names the one feature set to train. A name that
// is neither trained set (a typo, or a host set other than -host) trained
// nothing after reading every capture, and without -dry-run wrote a
// REPORT.md and report.json without a model over the committed ones. It is
// refused before any capture is read.
func TestOnlyUnknownSet(t *testing.T) {
	lib := runtimetest.Library(t)
	cfg, err := parseFlags([]string{"-benign", t.TempDir(), "-attacks", "", "-out", t.TempDir(), "-ort", lib,
		"-only", "nethost/v6", "-dry-run"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), `-only "nethost/v6"`) {
		t.Fatalf("Run: %v, want -only refused", err)
	}
}
