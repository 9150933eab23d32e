package registry

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// FuzzParseShadowReport: parseShadowReport reads an agent's shadow summary (outside input). It
// must never panic, and what it accepts must be a JSON object whose counts are consistent
// (anomalies <= events <= MaxShadowReportEvents), keep the reported rates, read back the same
// once encoded again, and sum as one agent. The corpus in testdata/fuzz holds summaries encoded
// by the agent's own type (agent/update.ShadowSummary).
func FuzzParseShadowReport(f *testing.F) {
	for _, s := range []string{
		summary(0, 0, 0, 0),
		summary(10000, 10, 10000, 1000),
		summary(math.MaxUint64, math.MaxUint64-99, 1000, 0),
		summary(1e15, 0, 1e15, 0),
		`{"batches":3,"active":{"events":10,"anomalies":1,"max_p99":0.2},"shadow":{"events":9,"anomalies":9}}`,
		`{"active":{"events":1,"anomalies":2},"shadow":{}}`,
		`{}`, `null`, ` null`, `[]`, `{"active":null}`, `{"active":{"events":-1}}`, `{"active":{"events":1e3}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, ok := parseShadowReport(s)
		if !ok {
			return
		}
		if len(s) == 0 || len(s) > 4096 {
			t.Fatalf("accepted %d bytes", len(s))
		}
		if !strings.HasPrefix(strings.TrimLeft(s, " \t\r\n"), "{") {
			t.Fatalf("accepted %q: not a JSON object", s)
		}
		var raw shadowReport // the counts as reported, before the cut
		if err := json.Unmarshal([]byte(s), &raw); err != nil {
			t.Fatalf("accepted %q that does not decode: %v", s, err)
		}
		for _, c := range []struct {
			name     string
			got, rep modelCounts
		}{{"active", r.Active, raw.Active}, {"shadow", r.Shadow, raw.Shadow}} {
			if c.got.Anomalies > c.got.Events || c.got.Events > MaxShadowReportEvents {
				t.Fatalf("%s counts %+v of %q", c.name, c.got, s)
			}
			if c.rep.Events <= MaxShadowReportEvents {
				if c.got != c.rep {
					t.Fatalf("%s counts %+v changed to %+v", c.name, c.rep, c.got)
				}
				continue
			}
			before := float64(c.rep.Anomalies) / float64(c.rep.Events)
			after := float64(c.got.Anomalies) / float64(c.got.Events)
			if math.Abs(before-after) > 1e-6 {
				t.Fatalf("%s rate %g became %g when cut", c.name, before, after)
			}
		}
		b, err := json.Marshal(struct {
			Active struct {
				Events    uint64 `json:"events"`
				Anomalies uint64 `json:"anomalies"`
			} `json:"active"`
			Shadow struct {
				Events    uint64 `json:"events"`
				Anomalies uint64 `json:"anomalies"`
			} `json:"shadow"`
		}{Active: r.Active, Shadow: r.Shadow})
		if err != nil {
			t.Fatal(err)
		}
		r2, ok := parseShadowReport(string(b))
		if !ok || r2 != r {
			t.Fatalf("%q: re-encoded %s reads back as %+v %v, want %+v", s, b, r2, ok, r)
		}
		c := sumReports(map[string]json.RawMessage{"a": json.RawMessage(s)})
		if c.Agents != 1 || c.ActiveEvents != r.Active.Events || c.ActiveAnomalies != r.Active.Anomalies ||
			c.ShadowEvents != r.Shadow.Events || c.ShadowAnomalies != r.Shadow.Anomalies {
			t.Fatalf("%q sums to %+v, parsed %+v", s, c, r)
		}
	})
}
