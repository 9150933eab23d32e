package main

import (
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models/bundle/bundletest"
	"github.com/vigil-edge/vigil/models/runtime/runtimetest"
)

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-benign", "b", "-out", "o"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// The shipped recipe is the default (`make models` passes only the data and -out).
	if cfg.Benign != "b" || cfg.Out != "o" || cfg.Seed != 1 || cfg.HostSeed != 1 || cfg.Version != 9 || cfg.Epochs != 10 ||
		cfg.SnapEpochs != 0 || cfg.OutMinRange != 0 || cfg.Ship != "nethost/v7" || cfg.Created.Format("2006-01-02") != "2026-01-01" {
		t.Errorf("defaults: %+v", cfg)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-bogus"}, "flag provided but not defined"},
		{[]string{"-created", "2026-13-01"}, "-created"},
		{[]string{"-seed", "-1"}, "invalid value"},
		{[]string{"-out", "o", "extra"}, "unexpected arguments"},
	} {
		if _, err := parseFlags(c.args, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.args, err, c.want)
		}
	}
}

// TestShippedBundlesReproducible: `make models`' command for the netflow
// detector's models, run on the shared captures and the committed lab
// baseline, writes the committed nethost and experimental netflow bundles
// (bundletest.Same). It reads the whole shared data set and trains both
// models (about half a minute), so it runs with VIGIL_E2E=1 (make test).
func TestShippedBundlesReproducible(t *testing.T) {
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("trains the shipped models from the shared data: set VIGIL_E2E=1 (make test does)")
	}
	lib := runtimetest.Library(t)
	data := os.Getenv("VIGIL_SHARED_DATA")
	if data == "" {
		data = filepath.Join("..", "..", "..", "..", "shared", "data")
	}
	if fi, err := os.Stat(filepath.Join(data, "benign")); err != nil || !fi.IsDir() {
		t.Skipf("shared data not found at %s (set VIGIL_SHARED_DATA): skipping", data)
	}
	base := filepath.Join("..", "..", "baseline")
	shipped, _ := filepath.Glob(filepath.Join(base, "nethost-*.vgb"))
	exp, _ := filepath.Glob(filepath.Join(base, "experimental", "netflow-*.vgb"))
	if len(shipped) != 1 || len(exp) != 1 {
		t.Fatalf("committed bundles: %v and %v, want one of each", shipped, exp)
	}
	out := t.TempDir()
	lab := filepath.Join(out, "lab-24.pcap")
	gunzip(t, filepath.Join(base, "lab", "lab-24.pcap.gz"), lab)
	cfg, err := parseFlags([]string{"-benign", filepath.Join(data, "benign"), "-attacks", filepath.Join(data, "attacks"),
		"-manifest", filepath.Join(data, "MANIFEST.csv"), "-out", out, "-lab", lab, "-ort", lib}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	bundletest.Same(t, shipped[0], filepath.Join(out, filepath.Base(shipped[0])))
	bundletest.Same(t, exp[0], filepath.Join(out, "experimental", filepath.Base(exp[0])))
}

// gunzip writes the decompressed file src to dst.
func gunzip(t *testing.T, src, dst string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, zr); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
