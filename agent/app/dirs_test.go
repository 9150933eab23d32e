package app

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pipeline"
)

// TestConfiguredSearchDirs: the config's plugin_dirs and model_dirs are where both detector
// pipelines find their plugin and bundle (they were accepted and then ignored: only the binary's
// directory and the packaged locations were searched), and the updater searches the same plugins.
func TestConfiguredSearchDirs(t *testing.T) {
	plugins, models := t.TempDir(), t.TempDir()
	for _, p := range []string{"vigil-detector-netflow", "vigil-detector-fileactivity"} {
		if err := os.WriteFile(filepath.Join(plugins, p), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{"nethost-9.vgb", "fileactivity-4.vgb"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "models", "baseline", b))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(models, b), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := pipeline.Env{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), StateDir: t.TempDir(),
		Pcaps: []string{filepath.Join(t.TempDir(), "x.pcap")}, Watch: []string{t.TempDir()},
		PluginDirs: []string{plugins}, ModelDirs: []string{models}}
	inst, err := detect.Discover(envDirs(env).search(env.StateDir))
	if err != nil || inst.Plugin != filepath.Join(plugins, "vigil-detector-netflow") || len(inst.Bundles) != 1 ||
		inst.Bundles[0].Path != filepath.Join(models, "nethost-9.vgb") {
		t.Fatalf("packet pipeline's search: %+v %v", inst, err)
	}
	if _, err := newPacketSources(env); err != nil {
		t.Fatalf("packet pipeline with plugin_dirs and model_dirs: %v", err)
	}
	if _, err := newWatchSources(env); err != nil {
		t.Fatalf("file pipeline with plugin_dirs and model_dirs: %v", err)
	}
	if d := dirsOf([]string{plugins}, nil).pluginDirs(); d[len(d)-1] != plugins {
		t.Fatalf("updater's plugin dirs %v: want %s last", d, plugins)
	}
	// Without them: the packaged locations (which hold no plugin here).
	for _, d := range detect.DefaultPluginDirs {
		if _, err := os.Stat(filepath.Join(d, "vigil-detector-netflow")); err == nil {
			t.Skipf("a packaged plugin is installed in %s", d)
		}
	}
	env.PluginDirs, env.ModelDirs = nil, nil
	if _, err := newPacketSources(env); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("packet pipeline without plugin_dirs: %v, want the plugin not found", err)
	}
}
