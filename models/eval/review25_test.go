package eval

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestReportOddNames: capture names and ground-truth text come from the
// file system and from label files. A name with a control character or
// bytes that are not UTF-8 (a Latin-1 file name) made roc.svg ill-formed
// XML, which browsers refuse to draw at all; a carriage return in a truth
// description ended eval.md's table row (CommonMark ends a line at a lone
// CR as at LF).
func TestReportOddNames(t *testing.T) {
	in := synthetic()
	in.Attacks[0].Name = "caf\xe9-\x1b[31mscan.pcap"
	in.Attacks[0].What = "hping3 -S victim\r| tee log"
	r, err := Evaluate(in)
	if err != nil {
		t.Fatal(err)
	}
	var svg bytes.Buffer
	if err := r.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&svg)
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("roc.svg is not well-formed XML: %v", err)
		}
	}
	var md bytes.Buffer
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.FieldsFunc(md.String(), func(r rune) bool { return r == '\n' || r == '\r' }) {
		if strings.HasPrefix(line, "| ") && strings.Contains(line, "scan.pcap") {
			if n := strings.Count(line, "|") - strings.Count(line, `\|`); n != 13 {
				t.Errorf("attack row has %d cell separators, want 13: %q", n, line)
			}
			return
		}
	}
	t.Errorf("no table row for the capture in eval.md:\n%s", md.String())
}
