package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/test/filework"
)

// traceScan is `vigil-agent scan --trace --json`'s output.
type traceScan struct {
	Summary struct {
		Events    uint64 `json:"events"`
		Findings  int    `json:"findings"`
		Anomalies uint64 `json:"anomalies"`
		Lost      uint64 `json:"events_lost"`
	} `json:"summary"`
	Findings []struct {
		Severity string `json:"severity"`
		Count    uint64 `json:"count"`
		Summary  string `json:"summary"`
	} `json:"findings"`
}

// TestFileactivityScanTrace replays the committed traces of the shipped
// fileactivity model through the real agent and plugin (`vigil-agent scan
// --trace`): the agent's finding rules on the held-out benign sessions give
// nothing, the ransomware, the overwriting wiper and the dropped files give their findings, and a
// file that is not a trace gets a clear error.
func TestFileactivityScanTrace(t *testing.T) {
	in := fileactivityInstall(t)
	traces := filepath.Join(nfRepoRoot(t), "models", "baseline", "fileactivity")
	scan := func(trace string) traceScan {
		t.Helper()
		out, err := exec.Command(in.Agent, "scan", "--trace", trace, "--bundle", in.Inst.Bundle.Path, "--json").Output()
		if err != nil {
			t.Fatalf("scan --trace %s: %v\n%s", filepath.Base(trace), err, exitStderr(err))
		}
		var r traceScan
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if r.Summary.Lost != 0 {
			t.Errorf("%s: %d events not scored", filepath.Base(trace), r.Summary.Lost)
		}
		return r
	}
	hold, _ := filepath.Glob(filepath.Join(traces, "*-holdout.vft.gz"))
	if len(hold) != 6 {
		t.Fatalf("held-out traces: %v", hold)
	}
	for _, h := range hold {
		if r := scan(h); r.Summary.Events < 1000 || r.Summary.Findings != 0 {
			t.Errorf("held-out benign session %s: %d events, %d findings: %+v", filepath.Base(h), r.Summary.Events, r.Summary.Findings, r.Findings)
		}
	}
	attack := func(name string) string {
		t.Helper()
		p, err := filework.FindTrace(traces, "attack", name)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	r := scan(attack("ransomware"))
	if r.Summary.Findings != 1 || r.Findings[0].Count < 400 || r.Findings[0].Severity != "critical" || !strings.Contains(r.Findings[0].Summary, ".locked") {
		t.Errorf("ransomware trace: %+v", r)
	}
	r = scan(attack("overwrite"))
	if r.Summary.Findings != 1 || r.Findings[0].Count < 300 || !strings.Contains(r.Findings[0].Summary, "overwritten with constant bytes") {
		t.Errorf("overwrite wiper trace: %+v", r)
	}
	r = scan(attack("dropped files"))
	if r.Summary.Findings != 3 {
		t.Errorf("dropped files trace: want the packed ELF, the base64 script and the gzexe script: %+v", r)
	}

	pcap := filepath.Join(t.TempDir(), "x.vft")
	if err := os.WriteFile(pcap, []byte("\xd4\xc3\xb2\xa1\x02\x00\x04\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"scan", "--trace", pcap, "--bundle", in.Inst.Bundle.Path}, "not a file-event trace"},
		{[]string{"scan", "--trace", pcap, "--dir", traces}, "give one of --pcap FILE, --dir DIR or --trace FILE"},
	} {
		out, err := exec.Command(in.Agent, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: %v, %s; want %q", tc.args, err, out, tc.want)
		}
	}
}
