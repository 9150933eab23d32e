package ctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models/dataset"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

// TestReadCapturesEscapesAndWarns: `model train` printed capture file names
// raw in its progress lines (a hostile name drove the operator's terminal),
// and used a capture cut at --max-packets without a word.
func TestReadCapturesEscapesAndWarns(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x\x1b]0;pwned\x07\u009b2J\u202egpj.pcap")
	var pb bytes.Buffer
	if _, err := trafficgen.Write(&pb, trafficgen.Config{Seed: 3, Sessions: 5}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, pb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err := dataset.Lookup("nethost/v1")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	caps, skipped, err := readCaptures(context.Background(), []string{p}, []dataset.FeatureSet{fs}, 10, newProgress(&out))
	if err != nil || len(caps) != 1 || len(skipped) != 0 {
		t.Fatalf("readCaptures: %d captures, skipped %v, %v", len(caps), skipped, err)
	}
	if strings.ContainsAny(out.String(), "\x1b\x07\u009b\u202e") {
		t.Errorf("raw control characters in the progress output: %q", out.String())
	}
	if !strings.Contains(out.String(), "warning: ") || !strings.Contains(out.String(), "truncated at 10 packets") {
		t.Errorf("no truncation warning in %q", out.String())
	}
}
