package store

import (
	"context"
	"math"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestDetailRoundTrip stores findings through the ingest path and reads them
// back: every detail field survives, strings that are not UTF-8 and numbers
// that are not finite are sanitised as the old JSON columns did.
func TestDetailRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	base := time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC)
	long := string(make([]byte, 300)) // a length prefix of two bytes
	in := []*wirev1.Finding{
		{Seq: 1, Detector: "netflow", TimeUnixNano: base.UnixNano(), FirstSeenUnixNano: base.UnixNano() - 5,
			LastSeenUnixNano: base.UnixNano() + 7, Count: math.MaxUint64, Severity: wirev1.Severity_SEVERITY_HIGH,
			Score: 2.5, Threshold: -0.5,
			Model: &wirev1.ModelRef{Name: "ae", Version: 7, Digest: "sha256:ff", Detector: "netflow"},
			Context: &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", SrcPort: 65535, DstPort: 22,
				Proto: "tcp", Path: long, SrcMac: "02:00:00:00:00:01"},
			TopFeatures: []*wirev1.FeatureContribution{{Name: "a", Contribution: 0.75}, nil, {Name: "b\xffc", Contribution: math.NaN()}},
			Summary:     "scan \"quoted\"\n", Packets: 12, Bytes: 1 << 40,
			LeadInUnixNano: base.UnixNano() - 5 - 4e9, LeadInPackets: 9, LeadInBytes: 540},
		// Only what a query needs: first/last seen default to the time.
		{Seq: 2, Detector: "fileactivity", TimeUnixNano: base.UnixNano(), Score: math.Inf(-1)},
	}
	if n, err := db.InsertFindings(ctx, "a-1", "acme", in); err != nil || n != 2 {
		t.Fatalf("insert: %d %v", n, err)
	}
	got, err := db.ListFindings(ctx, FindingFilter{Ascending: true})
	if err != nil || len(got) != 2 {
		t.Fatalf("list: %d %v", len(got), err)
	}
	g := got[0]
	if g.Seq != 1 || g.Detector != "netflow" || g.Severity != "high" || !g.Time.Equal(base) ||
		!g.FirstSeen.Equal(base.Add(-5)) || !g.LastSeen.Equal(base.Add(7)) || g.Count != math.MaxUint64 ||
		g.Score != 2.5 || g.Threshold != -0.5 || g.Summary != "scan \"quoted\"\n" || g.Packets != 12 || g.Bytes != 1<<40 ||
		g.AgentID != "a-1" || g.Entity != "acme" || g.Status != "new" {
		t.Fatalf("finding 1: %+v", g)
	}
	if want := (ModelRef{Name: "ae", Version: 7, Digest: "sha256:ff"}); g.Model != want {
		t.Errorf("model %+v", g.Model)
	}
	if want := (FindingContext{SrcIP: "10.0.0.1", DstIP: "10.0.0.2", SrcPort: 65535, DstPort: 22, Proto: "tcp", Path: long,
		SrcMAC: "02:00:00:00:00:01"}); g.Context != want {
		t.Errorf("context %+v", g.Context)
	}
	if want := []FeatureContribution{{"a", 0.75}, {"b\ufffdc", 0}}; !reflect.DeepEqual(g.TopFeatures, want) {
		t.Errorf("top features %+v", g.TopFeatures)
	}
	if l := g.LeadIn; l == nil || !l.Since.Equal(base.Add(-5-4*time.Second)) || l.Packets != 9 || l.Bytes != 540 {
		t.Errorf("lead-in %+v", l)
	}
	g = got[1]
	if !g.FirstSeen.Equal(base) || !g.LastSeen.Equal(base) || g.Score != 0 || g.TopFeatures == nil || len(g.TopFeatures) != 0 ||
		g.Model != (ModelRef{}) || g.Context != (FindingContext{}) || g.LeadIn != nil {
		t.Errorf("finding 2: %+v", g)
	}
	one, err := db.GetFinding(ctx, got[0].ID)
	if err != nil || !reflect.DeepEqual(one, got[0]) {
		t.Errorf("get: %v\n%+v\n%+v", err, one, got[0])
	}
}

// TestDetailColumnsBeforeMigration5 reads a row stored the old way (detail
// in its own columns, detail NULL) next to a new one.
func TestDetailColumnsBeforeMigration5(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	_, err := db.w.ExecContext(ctx, `INSERT INTO findings(agent_id, entity, seq, detector, time, first_seen, last_seen,
		count, severity, score, threshold, model_name, model_version, model_digest, src_ip, dst_ip, src_port, dst_port,
		proto, path, src_mac, packets, bytes, top_features, summary, received_at)
		VALUES ('a-1', 'acme', 1, 'netflow', 100, 90, 110, 3, 2, 1.5, 0.5, 'ae', 2, 'sha256:aa', '10.0.0.1', '10.0.0.2',
		1000, 80, 'tcp', '', '', 5, 600, '[{"name":"x","contribution":0.5}]', 'old row', 120)`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.InsertFindings(ctx, "a-1", "acme", mkFindings(2, 1, "netflow")); err != nil {
		t.Fatal(err)
	}
	got, err := db.ListFindings(ctx, FindingFilter{AgentID: "a-1", Ascending: true})
	if err != nil || len(got) != 2 {
		t.Fatalf("list: %d %v", len(got), err)
	}
	o := got[0]
	if o.Count != 3 || o.Score != 1.5 || o.Model.Name != "ae" || o.Context.DstPort != 80 || o.Packets != 5 ||
		o.Summary != "old row" || len(o.TopFeatures) != 1 || o.FirstSeen.UnixNano() != 90 {
		t.Fatalf("old row: %+v", o)
	}
	if n := got[1]; n.Summary != "finding 2" || n.Count != 3 || n.Context.DstPort != 22 || len(n.TopFeatures) != 2 {
		t.Fatalf("new row: %+v", n)
	}
}

// FuzzDetail: decoding any blob returns an error or a finding, never
// panics; encoding any finding decodes back to its sanitised fields.
func FuzzDetail(f *testing.F) {
	f.Add([]byte{detailFormat}, "s", "p", 1.5, uint64(3))
	f.Add(appendDetail(nil, mkFindings(1, 1, "netflow")[0]), "\xff", "", math.NaN(), uint64(1)<<63)
	f.Fuzz(func(t *testing.T, blob []byte, summary, path string, score float64, count uint64) {
		var fi Finding
		_ = decodeDetail(&fi, blob)

		in := &wirev1.Finding{Seq: 1, Detector: "d", TimeUnixNano: 5, Count: count, Score: score, Summary: summary,
			Context:     &wirev1.FindingContext{Path: path},
			TopFeatures: []*wirev1.FeatureContribution{{Name: summary, Contribution: score}}}
		var out Finding
		out.Time = time.Unix(0, 5).UTC()
		if err := decodeDetail(&out, appendDetail(nil, in)); err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if out.Count != count || out.Score != finiteOr0(score) || len(out.TopFeatures) != 1 {
			t.Fatalf("round trip: %+v", out)
		}
		if utf8.ValidString(summary) && (out.Summary != summary || out.TopFeatures[0].Name != summary) {
			t.Fatalf("summary %q came back %q", summary, out.Summary)
		}
		if utf8.ValidString(path) && out.Context.Path != path {
			t.Fatalf("path %q came back %q", path, out.Context.Path)
		}
	})
}
