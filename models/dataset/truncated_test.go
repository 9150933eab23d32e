package dataset

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/models/features/fileactivity"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

// TestExtractTruncated: a capture cut at --max-packets is marked (Truncated,
// TruncatedNote) so that trainers and evaluators can say so; one read to
// its end is not, even when it holds exactly the bound (it used to say
// "stopped at N packets" then), and a trace cut inside a frame is not
// "truncated" (it is partial for another reason).
func TestExtractTruncated(t *testing.T) {
	dir := t.TempDir()
	pcap := filepath.Join(dir, "b.pcap")
	var pb bytes.Buffer
	info, err := trafficgen.Write(&pb, trafficgen.Config{Seed: 3, Sessions: 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pcap, pb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	evs := traceEvents(300)
	trace := filepath.Join(dir, "t.vft")
	writeTraceFile(t, trace, evs, false)
	var plain bytes.Buffer
	writeTraceTo(t, &plain, evs)
	cut := filepath.Join(dir, "cut.vft")
	if err := os.WriteFile(cut, plain.Bytes()[:plain.Len()-10], 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err := Lookup(fileactivity.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		path      string
		sets      []FeatureSet
		max       int
		n         int
		truncated int
		note      string
	}{
		{"pcap cut", pcap, Sets()[:1], 100, 100, 100, "truncated at 100 packets"},
		{"pcap exactly at the bound", pcap, Sets()[:1], info.Packets, info.Packets, 0, ""},
		{"pcap under the bound", pcap, Sets()[:1], info.Packets + 1, info.Packets, 0, ""},
		{"trace cut", trace, []FeatureSet{fs}, 100, 100, 100, "truncated at 100 file events"},
		{"trace exactly at the bound", trace, []FeatureSet{fs}, 300, 300, 0, ""},
		{"trace cut inside a frame", cut, []FeatureSet{fs}, 0, 150, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Extract(context.Background(), tc.path, tc.sets, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			if c.N != tc.n || c.Truncated != tc.truncated || c.TruncatedNote() != tc.note {
				t.Fatalf("%d rows, truncated %d (%q), reason %q; want %d rows, truncated %d (%q)",
					c.N, c.Truncated, c.TruncatedNote(), c.Reason, tc.n, tc.truncated, tc.note)
			}
			if tc.truncated == 0 && tc.name != "trace cut inside a frame" && c.Reason != "" {
				t.Errorf("reason %q for a capture read to its end", c.Reason)
			}
		})
	}
}
