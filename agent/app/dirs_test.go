package app

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
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

// TestUpdateCommandConfig: `vigil-agent update --config F` takes its state directory and the
// plugin search from the agent's configuration, as the running agent does, so an air-gapped
// update on a sensor whose plugins live in plugin_dirs finds them.
func TestUpdateCommandConfig(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	plugin := filepath.Join(plugins, "vigil-detector-netflow")
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	signer := signtest.NewSigner(t, sign.AlgEd25519)
	if err := signtest.Policy(t, 1, signer).WriteFile(filepath.Join(state, update.TrustFile)); err != nil {
		t.Fatal(err)
	}
	b := signtest.WriteBundle(t, t.TempDir(), []byte("model"), signtest.Manifest("nf", 2, time.Now()), signer)
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
	cfg := fmt.Sprintf("state_dir: %s\nplugin_dirs: [%s]\nmetrics:\n  listen: \"off\"\n", state, plugins)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "update", "--config", cfgPath, "--bundle", b, "--json")
	if code == 0 {
		t.Fatalf("a plugin that exits at once activated the bundle: %s", stdout)
	}
	// The configured plugin was started (and failed): the search used plugin_dirs.
	if !strings.Contains(stdout+stderr, plugin) || strings.Contains(stdout+stderr, "plugin found") {
		t.Fatalf("update --config did not use plugin_dirs:\nstdout %s\nstderr %s", stdout, stderr)
	}
	code, _, stderr = runCLI(t, "update", "--config", filepath.Join(t.TempDir(), "none.yaml"), "--bundle", b)
	if code == 0 || !strings.Contains(stderr, "none.yaml") {
		t.Fatalf("missing config: code %d, stderr %s", code, stderr)
	}
}
