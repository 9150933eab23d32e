// Package termsafe makes text that others control (sensors, agents, file
// names, bundle manifests) safe to print on an operator's terminal. It is
// shared by the agent's and vigilctl's human-readable output.
package termsafe

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text returns s with control characters (C0 including tab and newline,
// DEL, C1: ESC and CSI sequences, carriage returns, OSC hyperlinks and title
// changes), line and paragraph separators, bidi controls (which reorder what
// the terminal shows: "x\u202egpj.exe" reads "xexe.jpg") and bytes that are
// not UTF-8 as visible escapes: \xNN for a byte or a code point below 0x100,
// \u{NNNN} above. Text without any of them is returned as it is.
func Text(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, Unsafe) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case Unsafe(r) && r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case Unsafe(r):
			fmt.Fprintf(&b, `\u{%04x}`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Unsafe reports whether Text escapes r.
func Unsafe(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r)
}
