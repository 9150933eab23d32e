package app

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode"
)

// TestWriteJSONEscapesControls: encoding/json escapes C0 only, so a file
// name or payload with a C1 CSI (U+009B) or a bidi override (U+202E)
// reached the terminal of an operator reading `scan --json` raw. They are
// written as \uXXXX now, and the document decodes to the same data.
func TestWriteJSONEscapesControls(t *testing.T) {
	for _, in := range []string{
		"plain", "c1 \u009b2J csi", "bidi x\u202egpj.exe \u2066\u2069 \u200e\u061c", "é ü 日本 \u00a0nbsp", "c0 \x1b[31m \x07",
	} {
		var b bytes.Buffer
		if err := writeJSON(&b, map[string]string{"v": in}); err != nil {
			t.Fatal(err)
		}
		if strings.ContainsFunc(b.String(), func(r rune) bool {
			return r >= 0x80 && r <= 0x9f || unicode.Is(unicode.Bidi_Control, r) || r < 0x20 && r != '\n'
		}) {
			t.Errorf("%q: raw control in %q", in, b.String())
		}
		var back map[string]string
		if err := json.Unmarshal(b.Bytes(), &back); err != nil || back["v"] != in {
			t.Errorf("%q reads back as %q, %v", in, back["v"], err)
		}
	}
}
