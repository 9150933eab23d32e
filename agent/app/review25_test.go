package app

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/plugins/example"
	"github.com/vigil-edge/vigil/plugins/sdk/sdktest"
)

// TestUpdateCommandKeepsBaselineFloor: `vigil-agent update --bundle` (an
// updater with no running pipeline, whose plugin starts for the update
// only) refuses a signed bundle older than the installed baseline without a
// rollback instruction, as the running agent does. It was activated: the
// agent's next start ran the older model in place of the installed one.
// Builds and starts the example plugin.
func TestUpdateCommandKeepsBaselineFloor(t *testing.T) {
	state := t.TempDir()
	signer := signtest.NewSigner(t, sign.AlgEd25519)
	if err := signtest.Policy(t, 1, signer).WriteFile(filepath.Join(state, update.TrustFile)); err != nil {
		t.Fatal(err)
	}
	plugin := sdktest.BuildPlugin(t, "github.com/vigil-edge/vigil/plugins/example/cmd/vigil-detector-example")
	now := time.Now()
	m := signtest.Manifest("ex", 5, now)
	m.Detector, m.FeatureSet, m.Dim = "example", example.FeatureSet, 1
	installed := filepath.Join(state, update.ModelsDir) // where the pipelines take baselines from
	if err := os.MkdirAll(installed, 0o750); err != nil {
		t.Fatal(err)
	}
	signtest.WriteBundle(t, installed, []byte("baseline 5"), m, signer)
	old := m
	old.Version = 3
	older := signtest.WriteBundle(t, t.TempDir(), []byte("old 3"), old, signer)

	a, err := newUpdater(state, "", dirsOf([]string{filepath.Dir(plugin)}, nil), nil, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = a.u.Install(ctx, update.Request{Path: older})
	var rej *update.Rejection
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "installed baseline version 5") {
		t.Fatalf("install of version 3 below the installed baseline 5: %v, want refused as below the baseline", err)
	}
}

// TestScanTablesEscapeControls: the tables of `scan` print file paths and
// summaries that come from the scanned folder, trace or capture. C1
// controls (U+009B is CSI in 8-bit terminals) and bidi controls (U+202E
// shows "x\u202egpj.exe" as "xexe.jpg") in a file name reached the
// analyst's terminal as they were; they are printed as visible escapes, as
// vigilctl does.
func TestScanTablesEscapeControls(t *testing.T) {
	evil := "/srv/share/x\u202egpj.exe\u009b31m\u2028"
	f := FindingJSON{Severity: "high", Summary: "renamed " + evil, Context: ContextJSON{Path: evil, SrcIP: "10.0.0.1\u009b2J"},
		Model: ModelJSON{Name: "m\u202e"}, TopFeatures: []FeatureJSON{{Name: "ext\u009b"}}}
	var b strings.Builder
	printFindings(&b, []FindingJSON{f})
	printScan(&b, "cap.pcap", ScanReport{Findings: []FindingJSON{f}})
	out := b.String()
	for _, r := range []rune{'\u202e', '\u009b', '\u2028'} {
		if strings.ContainsRune(out, r) {
			t.Errorf("the table printed U+%04X raw:\n%q", r, out)
		}
	}
	if !strings.Contains(out, `x\u{202e}gpj.exe\x9b31m`) {
		t.Errorf("the path is not shown with visible escapes:\n%s", out)
	}
}
