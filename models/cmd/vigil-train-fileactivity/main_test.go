package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/bundle/bundletest"
	"github.com/vigil-edge/vigil/models/runtime/runtimetest"
)

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-traces", "tr", "-version", "4", "-out", "o"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// The shipped recipe is the default (docs/models.md section 21).
	if cfg.Traces != "tr" || cfg.Version != 4 || cfg.Out != "o" || cfg.Seed != 1 || cfg.Epochs != 40 || cfg.SnapEpochs != 1 ||
		cfg.OutMinRange != 0.001 || cfg.MaxGroup != 16 || cfg.MinRange != 0.2 || cfg.Created.Format("2006-01-02") != "2026-01-01" {
		t.Errorf("defaults: %+v", cfg)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-bogus"}, "flag provided but not defined"},
		{[]string{"-created", "yesterday"}, "-created"},
		{[]string{"-epochs", "x"}, "invalid value"},
		{[]string{"-out", "o", "extra"}, "unexpected arguments"},
	} {
		if _, err := parseFlags(c.args, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.args, err, c.want)
		}
	}
}

// TestShippedBundleReproducible: `make models`' command for the fileactivity
// model, run on the committed traces, writes the committed bundle (bundletest.Same;
// on this machine type byte for byte), and the Makefile's FA_VERSION is that
// bundle's version. A change to
// training, export or calibration that would silently give the shipped model
// other weights fails here, not at the next `make models`.
func TestShippedBundleReproducible(t *testing.T) {
	lib := runtimetest.Library(t)
	shipped, _ := filepath.Glob(filepath.Join("..", "..", "baseline", "fileactivity-*.vgb"))
	if len(shipped) != 1 {
		t.Fatalf("committed fileactivity bundles: %v, want one", shipped)
	}
	b, err := bundle.Read(shipped[0], bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile(filepath.Join("..", "..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^FA_VERSION := (\d+)$`).FindSubmatch(mk); m == nil || string(m[1]) != fmt.Sprint(b.Manifest.Version) {
		t.Errorf("Makefile FA_VERSION %q, committed bundle version %d", m, b.Manifest.Version)
	}
	out := t.TempDir()
	cfg, err := parseFlags([]string{"-traces", filepath.Join("..", "..", "baseline", "fileactivity"),
		"-version", fmt.Sprint(b.Manifest.Version), "-out", out, "-ort", lib}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	bundletest.Same(t, shipped[0], filepath.Join(out, filepath.Base(shipped[0])))
}
