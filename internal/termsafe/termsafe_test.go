package termsafe

import "testing"

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain/path.txt", "plain/path.txt"},
		{"x\u202egpj.exe", `x\u{202e}gpj.exe`},
		{"a\x1b[31mb", `a\x1b[31mb`},
		{"c\u009b2J", `c\x9b2J`},
		{"line\u2028sep\ttab\n", `line\u{2028}sep\x09tab\x0a`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"été ünïcode", "été ünïcode"},
	} {
		if got := Text(tc.in); got != tc.want {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
