package ctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/internal/termsafe"
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

// TestProgressEscapes: the progress lines escape the text they are given
// themselves (file names, warnings), on a terminal and piped, so that a
// caller that forgets termsafe cannot hand a capture's name to the terminal.
func TestProgressEscapes(t *testing.T) {
	const hostile = "x\x1b]0;pwned\x07\u009b2J\u202egpj\x7f\nfake line.pcap"
	for _, tty := range []bool{false, true} {
		var b bytes.Buffer
		p := &progress{w: &b, tty: tty}
		p.step("reading captures", 1, 2, hostile)
		p.warn(hostile + ": truncated")
		p.step("reading captures", 2, 2, hostile)
		p.done()
		// Our own redraw sequence (terminal only) and line ends are the only controls.
		out := strings.ReplaceAll(b.String(), "\r\x1b[K", "")
		if strings.ContainsFunc(out, func(r rune) bool { return r != '\n' && termsafe.Unsafe(r) }) {
			t.Errorf("tty %v: raw control characters in %q", tty, b.String())
		}
		if !strings.Contains(out, `x\x1b]0;pwned`) {
			t.Errorf("tty %v: name not shown escaped in %q", tty, b.String())
		}
	}
}

// TestCaptureListRoundTrip: `model train` writes the held-out captures to
// NAME-VERSION.holdout.txt for `model eval --benign @FILE`, one path a line.
// A capture named with a line break was written as two lines: eval then
// failed, or read a path chosen by whoever named the file (a training
// capture, making the held-out figures a test on training data). White
// space at either end, a leading '#' (a comment) and controls (raw on
// `cat`) did not read back either. Such paths are written Go-quoted now.
func TestCaptureListRoundTrip(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // relative paths, as --benign gives them: a line may start with the name
	names := []string{"plain.pcap", "nl\nfake.pcap", "cr\rx.pcap", " lead.pcap", "trail.pcap ", "#hash.pcap",
		`"q".pcap`, "esc\x1b[31m.pcap", "bidi\u202egpj.pcap", "c1\u009b2J.pcap", "bad\xffutf8.pcap", "été.pcap"}
	for _, n := range names {
		if err := os.WriteFile(n, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := captureList(names)
	if strings.ContainsFunc(string(data), func(r rune) bool { return r != '\n' && termsafe.Unsafe(r) }) {
		t.Errorf("raw control characters in the list %q", data)
	}
	if !strings.Contains(string(data), "plain.pcap\n") || !strings.Contains(string(data), "été.pcap\n") {
		t.Errorf("plain names not written as they are: %q", data)
	}
	if err := os.WriteFile("list.txt", data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := listWithAt([]string{"@list.txt"})
	want := slices.Clone(names)
	slices.Sort(want)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("read back %q, %v; want %q (list %q)", got, err, want, data)
	}
	// A hand-written line that starts with a quote but is no Go string is the path as written.
	if err := os.WriteFile(`"odd.pcap`, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("list2.txt", []byte("\"odd.pcap\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := listWithAt([]string{"@list2.txt"}); err != nil || len(got) != 1 || got[0] != `"odd.pcap` {
		t.Errorf(`"odd.pcap: got %q, %v`, got, err)
	}
}
