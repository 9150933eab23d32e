package app

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
)

// TestUpdateCommandSeedsTrust: the packages install the release keys'
// policy as /etc/vigil/trust.json, while the updater read only
// <state>/trust.json, which nothing created: on a packaged sensor every
// rollout and `vigil-agent update` was refused ("no usable trust policy").
// The updater now copies the shipped policy (update.trust_seed) into an
// empty state; the update then gets past the signature check to the plugin.
func TestUpdateCommandSeedsTrust(t *testing.T) {
	state, plugins := t.TempDir(), t.TempDir()
	plugin := filepath.Join(plugins, "vigil-detector-netflow")
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	signer := signtest.NewSigner(t, sign.AlgEd25519)
	seed := filepath.Join(t.TempDir(), "trust.json")
	if err := signtest.Policy(t, 1, signer).WriteFile(seed); err != nil {
		t.Fatal(err)
	}
	b := signtest.WriteBundle(t, t.TempDir(), []byte("model"), signtest.Manifest("nf", 2, time.Now()), signer)
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
	cfg := fmt.Sprintf("state_dir: %s\nplugin_dirs: [%s]\nmetrics:\n  listen: \"off\"\nupdate:\n  trust_seed: %s\n", state, plugins, seed)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stdout, stderr := runCLI(t, "update", "--config", cfgPath, "--bundle", b, "--json")
	if strings.Contains(stdout+stderr, "no usable trust policy") || !strings.Contains(stdout+stderr, plugin) {
		t.Fatalf("update with a shipped policy and none in the state did not reach the plugin:\nstdout %s\nstderr %s", stdout, stderr)
	}
	got, err := os.ReadFile(filepath.Join(state, update.TrustFile))
	if err != nil {
		t.Fatalf("no policy in the state after the update: %v", err)
	}
	want, _ := os.ReadFile(seed)
	if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want)) {
		t.Fatalf("state policy differs from the shipped one")
	}
}

// TestScanBeaconIntervalsFlag: scan's --beacon-intervals is checked before
// any work, with the configuration's range.
func TestScanBeaconIntervalsFlag(t *testing.T) {
	for _, v := range []string{"4", "32", "-2"} {
		code, _, stderr := runCLI(t, "scan", "--pcap", "none.pcap", "--beacon-intervals", v)
		if code != 2 || !strings.Contains(stderr, "--beacon-intervals "+v) {
			t.Errorf("--beacon-intervals %s: code %d, stderr %q", v, code, stderr)
		}
	}
	code, _, stderr := runCLI(t, "scan", "--pcap", filepath.Join(t.TempDir(), "none.pcap"), "--beacon-intervals", "-1")
	if code == 2 || strings.Contains(stderr, "beacon") {
		t.Errorf("--beacon-intervals -1: code %d, stderr %q", code, stderr)
	}
}
