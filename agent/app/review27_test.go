package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
)

// TestUpdateCommandValidatesConfig: `vigil-agent update --config` loaded the
// file without validating it, so the checks `run` makes were skipped where
// they matter most: with `plugin_dirs: [plugins]` the update, run by an
// admin from a shell, searched ./plugins and started the
// vigil-detector-netflow found in whatever directory the admin was in.
func TestUpdateCommandValidatesConfig(t *testing.T) {
	state, cwd := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(cwd, "plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(cwd, "plugins", "vigil-detector-netflow")
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	signer := signtest.NewSigner(t, sign.AlgEd25519)
	if err := signtest.Policy(t, 1, signer).WriteFile(filepath.Join(state, update.TrustFile)); err != nil {
		t.Fatal(err)
	}
	b := signtest.WriteBundle(t, t.TempDir(), []byte("model"), signtest.Manifest("nf", 2, time.Now()), signer)
	for _, tt := range []struct{ name, cfg, want string }{
		{"relative plugin dir", "plugin_dirs: [plugins]\n", "plugin_dirs"},
		{"relative trust seed", "update:\n  trust_seed: trust.json\n", "update.trust_seed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(cfgPath, []byte("state_dir: "+state+"\n"+tt.cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Chdir(cwd)
			code, stdout, stderr := runCLI(t, "update", "--config", cfgPath, "--bundle", b, "--json")
			if code == 0 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("update with an invalid config: code %d\nstdout %s\nstderr %s", code, stdout, stderr)
			}
		})
	}
}
