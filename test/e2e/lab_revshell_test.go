package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/test/lab"
)

// TestLabRevshell runs the lab for 30 s with a real reverse shell (bash's
// /dev/tcp from the web server host to the attacker's listener; root,
// VIGIL_E2E=1) and scans the capture with the shipped bundle: the shell is
// reported, as a finding whose source is the victim serving it and whose
// leading feature is nethost/v4's host_cmd_shell (and whose summary says
// so), inside the attack's span; the benign clients raise nothing. The nethost/v3 model before it
// saw nothing in such a capture (docs/models.md, section 12).
func TestLabRevshell(t *testing.T) {
	in := netflowInstall(t)
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces)")
	}
	dir := t.TempDir()
	cfg := lab.Config{Duration: 30 * time.Second, Out: filepath.Join(dir, "lab.pcap"), Attacks: []string{"revshell"},
		Clients: 3, Seed: 31, Snaplen: 256}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	truth, err := lab.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(truth.Attacks) != 1 || truth.Attacks[0].Skipped != "" {
		t.Fatalf("attacks: %+v", truth.Attacks)
	}
	att := truth.Attacks[0]
	res, raw := runScan(t, in, "--pcap", cfg.Out)
	var shell int
	for _, f := range res.Findings {
		ctx, _ := f["context"].(map[string]any)
		src, _ := ctx["src_ip"].(string)
		if src != att.Victim {
			t.Errorf("finding from %s (only the victim %s serves the shell): %v", src, att.Victim, f)
			continue
		}
		shell++
		tf, _ := f["top_features"].([]any)
		if len(tf) == 0 {
			t.Fatalf("finding without top features: %v", f)
		}
		if name, _ := tf[0].(map[string]any)["name"].(string); name != "host_cmd_shell" {
			t.Errorf("leading feature %q, want host_cmd_shell: %v", name, f)
		}
		first, err := time.Parse(time.RFC3339Nano, f["first_seen"].(string))
		if err != nil || first.Before(att.Start.Add(-time.Second)) || first.After(att.End) {
			t.Errorf("first seen %v (%v), attack %s..%s", f["first_seen"], err, att.Start, att.End)
		}
		if s, _ := f["summary"].(string); !strings.HasPrefix(s, "Command shell served: ") {
			t.Errorf("summary %q", s)
		}
		if sev, _ := f["severity"].(string); sev != "high" && sev != "critical" {
			t.Errorf("severity %q, want high or critical", sev)
		}
	}
	if shell == 0 {
		t.Fatalf("no finding for the reverse shell from %s:\n%s", att.Victim, raw)
	}
	if !strings.Contains(att.Command, "/dev/tcp/") {
		t.Errorf("truth command %q", att.Command)
	}
}
