package dataset

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models/features/fileactivity"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

// traceEvents is a small ransomware-like sequence in one tree: writes of
// high-entropy content, renames to .locked, a few removes.
func traceEvents(n int) []event.File {
	evs := make([]event.File, 0, n)
	for i := range n {
		ev := event.File{TimeNs: 1_700_000_000_000_000_000 + int64(i)*3_000_000, Size: 4096 + int64(i), Mode: 0o644,
			Op: event.FileWrite, Flags: event.FileFlagSampled, SampleLen: 4096, Magic: event.MagicUnknown,
			ExtMagic: event.MagicPDF, Entropy: 7.98, HighFrac: 0.5, PrintableFrac: 0.37, ChiSquare: 240,
			Root: "/srv/share", Path: "/srv/share/doc" + strings.Repeat("x", i%7) + ".pdf"}
		switch i % 3 {
		case 1:
			ev.Op, ev.OldPath, ev.Path = event.FileRename, ev.Path, ev.Path+".locked"
		case 2:
			ev.Op, ev.Flags = event.FileRemove, 0
		}
		evs = append(evs, ev)
	}
	return evs
}

// writeTraceTo writes evs to w as a trace of two frames.
func writeTraceTo(t *testing.T, w io.Writer, evs []event.File) {
	t.Helper()
	tw := event.NewTraceWriter(w)
	if err := tw.Write(evs[:len(evs)/2]); err != nil {
		t.Fatal(err)
	}
	if err := tw.Write(evs[len(evs)/2:]); err != nil {
		t.Fatal(err)
	}
}

func writeTraceFile(t *testing.T, path string, evs []event.File, compress bool) {
	t.Helper()
	var b bytes.Buffer
	if compress {
		zw := gzip.NewWriter(&b)
		writeTraceTo(t, zw, evs)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	} else {
		writeTraceTo(t, &b, evs)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestExtractTrace(t *testing.T) {
	dir := t.TempDir()
	evs := traceEvents(300)
	want := make([]float32, len(evs)*fileactivity.Dim)
	x := fileactivity.NewExtractor()
	for i := range evs {
		x.Extract(&evs[i], want[i*fileactivity.Dim:(i+1)*fileactivity.Dim])
	}
	fs, err := Lookup(fileactivity.Name)
	if err != nil || !fs.Files() || fs.Detector != "fileactivity" || fs.Dim != fileactivity.Dim {
		t.Fatalf("Lookup(%s) = %+v, %v", fileactivity.Name, fs, err)
	}
	for _, gz := range []bool{false, true} {
		p := filepath.Join(dir, "t.vft")
		writeTraceFile(t, p, evs, gz)
		c, err := Extract(context.Background(), p, []FeatureSet{fs}, 0)
		if err != nil {
			t.Fatalf("gzip %v: %v", gz, err)
		}
		if c.N != len(evs) || c.Reason != "" || !equal(c.Feats[0], want) || c.TS[7] != evs[7].TimeNs || len(c.Src) != c.N {
			t.Fatalf("gzip %v: %d events, reason %q, features equal %v", gz, c.N, c.Reason, equal(c.Feats[0], want))
		}
		// The split keeps whole events and their features.
		tr, ho := SplitTail([]*Capture{c}, 0.2)
		if tr[0].N != 240 || ho[0].N != 60 || !equal(ho[0].Feats[0], want[240*fileactivity.Dim:]) {
			t.Fatalf("split %d/%d", tr[0].N, ho[0].N)
		}
	}
	p := filepath.Join(dir, "t.vft")
	// Bounded: the first events, and why it stopped.
	c, err := Extract(context.Background(), p, []FeatureSet{fs}, 100)
	if err != nil || c.N != 100 || !strings.Contains(c.Reason, "longer than the limit") || !equal(c.Feats[0], want[:100*fileactivity.Dim]) {
		t.Fatalf("bounded: %v, %d events, reason %q", err, c.N, c.Reason)
	}
	// A recorder killed mid-frame: the complete frame is kept.
	var plain bytes.Buffer
	writeTraceTo(t, &plain, evs)
	cut := filepath.Join(dir, "cut.vft")
	if err := os.WriteFile(cut, plain.Bytes()[:plain.Len()-10], 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = Extract(context.Background(), cut, []FeatureSet{fs}, 0)
	if err != nil || c.N != 150 || !strings.Contains(c.Reason, "unexpected EOF") {
		t.Fatalf("cut trace: %v, %d events, reason %q", err, c.N, c.Reason)
	}

	// Wrong inputs get clear errors.
	pcap := filepath.Join(dir, "b.pcap")
	var pb bytes.Buffer
	if _, err := trafficgen.Write(&pb, trafficgen.Config{Seed: 3, Sessions: 5}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pcap, pb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Extract(context.Background(), pcap, []FeatureSet{fs}, 0); !errors.Is(err, event.ErrTraceBadMagic) || !strings.Contains(err.Error(), "b.pcap") {
		t.Errorf("pcap as a trace: %v", err)
	}
	if _, err := Extract(context.Background(), p, Sets()[:1], 0); err == nil {
		t.Error("a trace read as a pcap gave no error")
	}
	if _, err := Extract(context.Background(), p, append(Sets()[:1:1], fs), 0); err == nil || !strings.Contains(err.Error(), "mixed") {
		t.Errorf("mixed sets: %v", err)
	}
	if _, err := ExtractTrace(context.Background(), p, Sets()[:1], 0); err == nil {
		t.Error("ExtractTrace with a packet set gave no error")
	}
	if _, err := Extract(context.Background(), filepath.Join(dir, "missing.vft"), []FeatureSet{fs}, 0); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing trace: %v", err)
	}
}
