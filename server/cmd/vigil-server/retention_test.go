package main

import (
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/app"
)

func TestParseRetention(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"off", 0, true},
		{"365d", 365 * day, true},
		{" 30d ", 30 * day, true},
		{"1d", day, true},
		{"8760h", 365 * day, true},
		{"36h", 36 * time.Hour, true},
		{"36500d", 36500 * day, true},
		{"36501d", 0, false},
		{"0d", 0, false}, // "0d" is not taken for off: say 0
		{"12h", 0, false},
		{"30m", 0, false},
		{"-5d", 0, false},
		{"+5d", 0, false},
		{"1.5d", 0, false},
		{"d", 0, false},
		{"", 0, false},
		{"365", 0, false},
		{"99999999999999999999d", 0, false},
		{"1y", 0, false},
	} {
		got, err := parseRetention(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseRetention(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzParseRetention: any input is refused or gives 0 or a retention the
// server accepts, which formats back to itself.
func FuzzParseRetention(f *testing.F) {
	for _, s := range []string{"0", "off", "365d", "8760h", "1d", "12h", "-1d", "9223372036854775807d", "1e9h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseRetention(s)
		if err != nil {
			return
		}
		if d != 0 && (d < app.MinRetention || d > maxRetention) {
			t.Fatalf("parseRetention(%q) = %v, out of range", s, d)
		}
		back, err := parseRetention(formatRetention(d))
		if err != nil || back != d {
			t.Fatalf("parseRetention(%q) = %v, formatted %q, parsed back %v, %v", s, d, formatRetention(d), back, err)
		}
	})
}
