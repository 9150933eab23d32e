package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/test/trafficgen"
)

// writeTrafficgen writes a trafficgen capture into dir.
func writeTrafficgen(t *testing.T, dir, name string, cfg trafficgen.Config) (string, trafficgen.Info) {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	info, err := trafficgen.Write(f, cfg)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return p, info
}

// normalizeScan removes what varies between runs (durations, rates) and
// re-encodes the output for comparison with a golden file.
func normalizeScan(t *testing.T, raw []byte) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if s, ok := doc["summary"].(map[string]any); ok {
		s["seconds"] = 0
		s["packets_per_second"] = 0
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("scan output differs from %s (run with -update after a deliberate change):\n%s", path, got)
	}
}

// TestNetflowScanTrafficgen: `vigil-agent scan` of a synthetic capture with
// a SYN scan inside reports the scanner; a benign-only capture gives no
// finding. Both outputs are compared with golden JSON (-update rewrites).
func TestNetflowScanTrafficgen(t *testing.T) {
	in := netflowInstall(t)
	dir := t.TempDir()
	scanPcap, info := writeTrafficgen(t, dir, "scan.pcap", trafficgen.Config{Seed: 1, Scan: true})
	benignPcap, _ := writeTrafficgen(t, dir, "benign.pcap", trafficgen.Config{Seed: 1})

	t.Run("scan", func(t *testing.T) {
		res, raw := runScan(t, in, "--pcap", scanPcap, "--hash-seed", "1")
		if res.Summary.Packets != uint64(info.Packets) {
			t.Errorf("summary packets %d, capture has %d", res.Summary.Packets, info.Packets)
		}
		var hit map[string]any
		for _, f := range res.Findings {
			if ctx, _ := f["context"].(map[string]any); ctx["src_ip"] == info.Scanner.String() {
				hit = f
			}
		}
		if hit == nil {
			t.Fatalf("no finding names the scanner %s: %s", info.Scanner, raw)
		}
		if c, _ := hit["count"].(float64); c < 100 {
			t.Errorf("scanner finding merges only %v packets", c)
		}
		if s, _ := hit["summary"].(string); !strings.Contains(s, info.Scanner.String()) {
			t.Errorf("summary %q does not name the scanner", s)
		}
		if tf, _ := hit["top_features"].([]any); len(tf) == 0 {
			t.Error("finding without top features")
		}
		checkGolden(t, "netflow_scan_synscan.golden.json", normalizeScan(t, raw))
	})
	t.Run("deterministic", func(t *testing.T) {
		// Without --hash-seed an offline scan uses a fixed default seed
		// (detect.OfflineHashSeed): two runs give the same findings.
		_, a := runScan(t, in, "--pcap", scanPcap)
		_, b := runScan(t, in, "--pcap", scanPcap)
		if na, nb := normalizeScan(t, a), normalizeScan(t, b); !bytes.Equal(na, nb) {
			t.Errorf("two scans without --hash-seed differ:\n%s\n---\n%s", na, nb)
		}
	})
	t.Run("benign", func(t *testing.T) {
		res, raw := runScan(t, in, "--pcap", benignPcap, "--hash-seed", "1")
		if len(res.Findings) != 0 {
			t.Errorf("benign capture gave %d findings:\n%s", len(res.Findings), raw)
		}
		checkGolden(t, "netflow_scan_benign.golden.json", normalizeScan(t, raw))
	})
	t.Run("table", func(t *testing.T) {
		out, err := exec.Command(in.Agent, "scan", "--pcap", scanPcap).CombinedOutput()
		if err != nil {
			t.Fatalf("scan: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "SEVERITY") || !strings.Contains(string(out), info.Scanner.String()) {
			t.Errorf("table output:\n%s", out)
		}
		if strings.Contains(string(out), "\r[") {
			t.Error("progress bar drawn although stderr is not a terminal")
		}
	})
}

// TestNetflowScanParsersSample runs a deterministic sample of the odd real
// captures in ../shared/data/parsers through the whole scan command: each
// ends with exit status 0 (findings or none) or a clear error for an
// unreadable file, never a panic or a hang.
func TestNetflowScanParsersSample(t *testing.T) {
	in := netflowInstall(t)
	data := os.Getenv("VIGIL_SHARED_DATA")
	if data == "" {
		data = filepath.Join(nfRepoRoot(t), "..", "shared", "data")
	}
	root := filepath.Join(data, "parsers")
	if _, err := os.Stat(root); err != nil {
		t.Skipf("shared captures absent (%s): %v", root, err)
	}
	var files []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	const want = 40
	step := max(len(files)/want, 1)
	var ok, clean int
	for i := 0; i < len(files); i += step {
		f := files[i]
		rel, _ := filepath.Rel(root, f)
		cmd := exec.Command(in.Agent, "scan", "--json", "--pcap", f)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s: scan hung", rel)
			continue
		}
		if s := errb.String(); strings.Contains(s, "panic:") || strings.Contains(s, "goroutine ") {
			t.Errorf("%s: crash:\n%s", rel, s)
			continue
		}
		if err != nil {
			if !strings.HasPrefix(errb.String(), "vigil-agent: scan:") {
				t.Errorf("%s: failed without a clear error: %v\n%s", rel, err, errb.String())
			}
			clean++
			continue
		}
		var res scanResult
		if jerr := json.Unmarshal(out.Bytes(), &res); jerr != nil {
			t.Errorf("%s: bad JSON: %v", rel, jerr)
			continue
		}
		ok++
	}
	t.Logf("parsers sample: %d scanned, %d refused with a clear error", ok, clean)
	if ok == 0 {
		t.Error("no capture of the sample scanned")
	}
}

var _ = fmt.Sprintf
