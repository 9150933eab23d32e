package coverage

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/dataset"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

const scanOK = `{"summary": {"packets": 10, "findings": 2}, "findings": [
 {"first_seen": "2026-01-01T00:00:10Z", "last_seen": "2026-01-01T00:00:20Z", "severity": "high",
  "model": {"name": "nethost", "version": 9, "digest": "sha256:ab"},
  "context": {"src_ip": "10.99.0.7"}, "lead_in": {"since": "2026-01-01T00:00:04Z", "packets": 3, "bytes": 180}},
 {"first_seen": "2026-01-01T00:00:30Z", "last_seen": "2026-01-01T00:00:31Z", "severity": "medium",
  "context": {"src_ip": "", "src_mac": "02:00:0a:63:00:42"}}]}`

func at(s float64) int64 {
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano() + int64(s*1e9)
}

// TestParseScan reads scan output and refuses what would count wrongly.
func TestParseScan(t *testing.T) {
	spans, err := ParseScan(strings.NewReader(scanOK))
	if err != nil {
		t.Fatal(err)
	}
	if len(spans) != 2 || spans[0].Src != netip.MustParseAddr("10.99.0.7") || spans[0].First != at(10) || spans[0].Last != at(20) ||
		spans[0].LeadSince != at(4) || spans[0].Model != "nethost-9 sha256:ab" || spans[1].Src.IsValid() || spans[1].MAC != "02:00:0a:63:00:42" ||
		spans[1].LeadSince != 0 {
		t.Fatalf("spans %+v", spans)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"empty", ``, "parse scan output"},
		{"not JSON", `findings: none`, "parse scan output"},
		{"truncated", scanOK[:len(scanOK)/2], "parse scan output"},
		{"count mismatch", `{"summary": {"findings": 3}, "findings": []}`, "summary says 3 findings, 0 listed"},
		{"bad source", `{"summary": {"findings": 1}, "findings": [{"first_seen": "2026-01-01T00:00:10Z", "last_seen": "2026-01-01T00:00:10Z", "context": {"src_ip": "10.99.0"}}]}`, "source \"10.99.0\""},
		{"times reversed", `{"summary": {"findings": 1}, "findings": [{"first_seen": "2026-01-01T00:00:10Z", "last_seen": "2026-01-01T00:00:09Z", "context": {"src_ip": "10.99.0.1"}}]}`, "before first_seen"},
		{"lead-in after first_seen", `{"summary": {"findings": 1}, "findings": [{"first_seen": "2026-01-01T00:00:10Z", "last_seen": "2026-01-01T00:00:12Z", "context": {"src_ip": "10.99.0.1"}, "lead_in": {"since": "2026-01-01T00:00:11Z"}}]}`, "lead-in from"},
		{"bad time", `{"summary": {"findings": 1}, "findings": [{"first_seen": "yesterday"}]}`, "parse scan output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseScan(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	big := bytes.Repeat([]byte(" "), MaxScanOutput+1)
	if _, err := ParseScan(bytes.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized output: %v", err)
	}
}

// TestCovered: a packet is covered by a finding of its own source (address,
// or MAC without one) from first_seen, or from the lead-in's start, to
// last_seen, bounds included.
func TestCovered(t *testing.T) {
	spans, err := ParseScan(strings.NewReader(scanOK))
	if err != nil {
		t.Fatal(err)
	}
	x := NewIndex(spans)
	src := netip.MustParseAddr("10.99.0.7")
	mac := [6]byte{2, 0, 0x0a, 0x63, 0, 0x42}
	for _, tc := range []struct {
		name       string
		p          Packet
		span, lead bool
	}{
		{"inside", Packet{Src: src, TS: at(15)}, true, true},
		{"at first_seen", Packet{Src: src, TS: at(10)}, true, true},
		{"at last_seen", Packet{Src: src, TS: at(20)}, true, true},
		{"after", Packet{Src: src, TS: at(20.001)}, false, false},
		{"in the lead-in", Packet{Src: src, TS: at(5)}, false, true},
		{"at the lead-in's start", Packet{Src: src, TS: at(4)}, false, true},
		{"before the lead-in", Packet{Src: src, TS: at(3.9)}, false, false},
		{"another source", Packet{Src: netip.MustParseAddr("10.99.0.8"), TS: at(15)}, false, false},
		{"by MAC", Packet{MAC: mac, TS: at(30.5)}, true, true},
		{"another MAC", Packet{MAC: [6]byte{2}, TS: at(30.5)}, false, false},
		{"an IP packet from that MAC", Packet{Src: netip.MustParseAddr("10.99.0.9"), MAC: mac, TS: at(30.5)}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := x.Covered(tc.p, false); got != tc.span {
				t.Errorf("span: %v, want %v", got, tc.span)
			}
			if got := x.Covered(tc.p, true); got != tc.lead {
				t.Errorf("with lead-in: %v, want %v", got, tc.lead)
			}
		})
	}
}

// TestReportTotals checks the summary arithmetic and that the Markdown
// says it.
func TestReportTotals(t *testing.T) {
	r := &Report{Command: "vigil-coverage", Agent: "vigil-agent version test", BenignWhat: "test",
		Attacks: []Attack{
			{Path: "/d/attacks/a.pcap", What: "a | b", Attacker: "10.0.0.1", Findings: 1, Positives: Count{Packets: 10, Span: 9, WithLead: 10}},
			{Path: "/d/attacks/b.pcap", Attacker: "10.0.0.2", Findings: 1, Positives: Count{Packets: 10, Span: 5, WithLead: 9}},
			{Path: "/d/attacks/c.pcap", Attacker: "10.0.0.3", Positives: Count{Packets: 80}},
			{Path: "/d/attacks/d.pcap", Attacker: "10.0.0.4"}, // no attacker packet: not counted
		},
		Benign: Benign{Captures: 2, Findings: 1, Packets: Count{Packets: 2000, Span: 1, WithLead: 2}}}
	tot := r.Totals()
	if tot.Captures != 3 || tot.Detected != 2 || tot.SpanGoal != 1 || tot.LeadGoal != 2 || tot.PooledSpan != 0.14 || tot.PooledLead != 0.19 {
		t.Fatalf("totals %+v", tot)
	}
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{"**1 of 3** by span, **2 of 3** with the lead-in", "| a.pcap | a \\| b | 10.0.0.1 | 10 | 1 | 9 (0.900) | 10 (1.000) |",
		"2000 packets, of which 1 (0.050%) in a finding's span and 2 (0.100%) with the lead-in"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	b.Reset()
	if err := r.WriteJSON(&b); err != nil || !strings.Contains(b.String(), `"in_finding_span_with_lead_in": 10`) {
		t.Fatalf("json %v: %s", err, b.String())
	}
}

// FuzzParseScan: any input gives spans or an error, never a panic, and
// every span it accepts is ordered.
func FuzzParseScan(f *testing.F) {
	f.Add([]byte(scanOK))
	f.Add([]byte(`{"summary": {"findings": 0}, "findings": []}`))
	f.Add([]byte(`{"findings": [{"lead_in": {}}], "summary": {"findings": 1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		spans, err := ParseScan(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, s := range spans {
			if s.Last < s.First || (s.LeadSince != 0 && s.LeadSince > s.First) {
				t.Fatalf("accepted span %+v", s)
			}
		}
	})
}

// TestEvalAttackAgent runs the real agent (VIGIL_E2E, VIGIL_BIN: `make
// test`) on a trafficgen SYN scan among benign sessions: its finding covers
// all of the scanner's packets but the first probes by span, all with the
// lead-in, and none of the benign hosts' packets.
func TestEvalAttackAgent(t *testing.T) {
	bin := os.Getenv("VIGIL_BIN")
	if os.Getenv("VIGIL_E2E") != "1" || bin == "" {
		t.Skip("runs the agent: set VIGIL_E2E=1 and VIGIL_BIN (make test does)")
	}
	path := filepath.Join(t.TempDir(), "scan.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := trafficgen.Config{Seed: 7, Scan: true, ScanPorts: 1000}
	info, err := trafficgen.Write(f, cfg)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	scanner, _ := netip.AddrFromSlice(info.Scanner.To4())
	scan := AgentScanner(filepath.Join(bin, "vigil-agent"))
	ctx := context.Background()
	a, err := EvalAttack(ctx, scan, path, []dataset.Label{{What: "SYN scan", Attacker: scanner}})
	if err != nil {
		t.Fatal(err)
	}
	c := a.Positives
	t.Logf("%d scanner packets: %d in the finding's span, %d with its lead-in; %d findings", c.Packets, c.Span, c.WithLead, a.Findings)
	if c.Packets != cfg.ScanPorts { // one SYN per port
		t.Fatalf("%d scanner packets", c.Packets)
	}
	if a.Findings != 1 || c.WithLead != c.Packets || c.Span >= c.Packets || c.Span < c.Packets-10 {
		t.Fatalf("coverage %+v with %d findings", c, a.Findings)
	}
	b, err := EvalBenign(ctx, scan, []string{path})
	if err != nil {
		t.Fatal(err)
	}
	// As benign data the whole capture: only the scanner's packets are in
	// a finding.
	if b.Captures != 1 || b.Packets.WithLead != c.Packets || b.Packets.Span != c.Span {
		t.Fatalf("benign view %+v", b)
	}
	if _, err := EvalAttack(ctx, scan, filepath.Join(t.TempDir(), "missing.pcap"), nil); err == nil {
		t.Fatal("a missing capture scanned")
	}
}
