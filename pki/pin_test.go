package pki

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestSPKIPin(t *testing.T) {
	ca := newTestCA(t)
	pin := SPKIPin(ca.Root)
	sum := sha256.Sum256(ca.Root.RawSubjectPublicKeyInfo)
	if want := "sha256:" + hex.EncodeToString(sum[:]); pin != want {
		t.Fatalf("SPKIPin = %s, want %s", pin, want)
	}
	b, err := ParsePin(pin)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(sum[:]) {
		t.Fatal("ParsePin does not invert SPKIPin")
	}
	if SPKIPin(ca.Issuing) == pin {
		t.Fatal("root and issuing pins are equal")
	}
}

func TestParsePin(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		in string
		ok bool
	}{
		{"sha256:" + hex64, true},
		{"sha256:" + strings.ToUpper(hex64), false},
		{"SHA256:" + hex64, false},
		{"sha1:" + hex64, false},
		{hex64, false},
		{"sha256:" + hex64[:63], false},
		{"sha256:" + hex64 + "0", false},
		{"sha256:" + hex64[:62] + "0g", false},
		{"sha256: " + hex64[1:], false},
		{"sha256:" + hex64 + "\n", false},
		{"sha256:", false},
		{"", false},
	}
	for _, tt := range tests {
		b, err := ParsePin(tt.in)
		if tt.ok {
			if err != nil || len(b) != 32 {
				t.Errorf("ParsePin(%q) = %x, %v", tt.in, b, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrBadPin) {
			t.Errorf("ParsePin(%q) = %x, %v; want ErrBadPin", tt.in, b, err)
		}
	}
}

func FuzzParsePin(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("ab", 32))
	f.Add("sha256:")
	f.Add("sha256:" + strings.Repeat("AB", 32))
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParsePin(s)
		if err != nil {
			return
		}
		if len(b) != 32 || "sha256:"+hex.EncodeToString(b) != s {
			t.Fatalf("accepted non-canonical pin %q", s)
		}
	})
}
