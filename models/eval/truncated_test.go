package eval

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestTruncatedReported: a capture cut at --max-packets was evaluated on
// its first packets without a word; the report now lists it (eval.json
// "truncated", the attack's "truncated_at", eval.md "truncated at N
// packets"), and a report without one is unchanged.
func TestTruncatedReported(t *testing.T) {
	ramp := func(n int, base float32) ([]float32, []int64) {
		s, ts := make([]float32, n), make([]int64, n)
		for i := range s {
			s[i], ts[i] = base+float32(i)/float32(n), int64(i)*1e6
		}
		return s, ts
	}
	benign, _ := ramp(1000, 0)
	attack, ts := ramp(100, 0.5)
	for _, tc := range []struct {
		name                    string
		benignCut, attackCut    int
		wantJSON, wantMD, noKey []string
	}{
		{"none", 0, 0, nil, nil, []string{`"truncated"`, `"truncated_at"`, "truncated at", "Truncated captures"}},
		{"benign", 1000, 0,
			[]string{`"truncated": [`, `"file": "b.pcap"`, `"kind": "benign"`, `"at": 1000`},
			[]string{"## Truncated captures", "- b.pcap (benign): truncated at 1000 packets"}, []string{`"truncated_at"`}},
		{"attack", 0, 100,
			[]string{`"kind": "attack"`, `"truncated_at": 100`, `"at": 100`},
			[]string{"- a.pcap (attack): truncated at 100 packets", "| a.pcap | scan |  | 100 (truncated) |"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Evaluate(Input{Model: ModelInfo{Name: "m", Version: 1, FeatureSet: "netflow/v1", Threshold: 0.99},
				Benign:  []Benign{{Name: "b.pcap", Scores: benign, Truncated: tc.benignCut}},
				Attacks: []Attack{{Name: "a.pcap", What: "scan", Scores: attack, TS: ts, Truncated: tc.attackCut}}})
			if err != nil {
				t.Fatal(err)
			}
			var js, md bytes.Buffer
			if err := r.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			if err := r.WriteMarkdown(&md); err != nil {
				t.Fatal(err)
			}
			var back Report
			if err := json.Unmarshal(js.Bytes(), &back); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.wantJSON {
				if !strings.Contains(js.String(), w) {
					t.Errorf("eval.json lacks %s:\n%s", w, js.String())
				}
			}
			for _, w := range tc.wantMD {
				if !strings.Contains(md.String(), w) {
					t.Errorf("eval.md lacks %q:\n%s", w, md.String())
				}
			}
			for _, k := range tc.noKey {
				if strings.Contains(js.String(), k) || strings.Contains(md.String(), k) {
					t.Errorf("report mentions %s", k)
				}
			}
		})
	}
}
