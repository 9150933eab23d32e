package export

import (
	"testing"

	"github.com/vigil-edge/vigil/server/store"
)

// TestOCSFFileNameOfEscapedPath: paths reach the server escaped by the agent
// (event.SafePath: a backslash, a control character or a byte that is not
// UTF-8 is written as a Go escape such as \\, \n or \xe9), and the sensors
// are Linux, where '/' alone separates names. file.name was cut at the last
// backslash too: "Rechnung_M\xe4rz.pdf" became "xe4rz.pdf", and a file
// named "a.locked\b.txt" was exported as "b.txt".
func TestOCSFFileNameOfEscapedPath(t *testing.T) {
	for _, tc := range []struct{ path, name string }{
		{"/srv/share/report.pdf", "report.pdf"},
		{`/srv/share/Rechnung_M\xe4rz.pdf`, `Rechnung_M\xe4rz.pdf`},
		{`/srv/share/a.locked\\b.txt`, `a.locked\\b.txt`},
		{`/srv/share/x\nname`, `x\nname`},
		{"plain", "plain"},
	} {
		o := ToOCSF(store.Finding{ID: 1, AgentID: "a-1", Detector: "fileactivity", Context: store.FindingContext{Path: tc.path}})
		if len(o.Evidences) != 1 || o.Evidences[0].File == nil {
			t.Fatalf("%s: no file evidence", tc.path)
		}
		if f := o.Evidences[0].File; f.Name != tc.name || f.Path != tc.path {
			t.Errorf("path %s: file name %q path %q, want %q %q", tc.path, f.Name, f.Path, tc.name, tc.path)
		}
	}
}
