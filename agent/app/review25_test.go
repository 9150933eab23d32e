package app

import (
	"strings"
	"testing"
)

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
