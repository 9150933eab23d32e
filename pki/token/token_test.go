package token

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		plain, id, hash, err := New("vge")
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != IDLen || seen[id] {
			t.Fatalf("id %q (len %d, seen %v)", id, len(id), seen[id])
		}
		seen[id] = true
		if !strings.HasPrefix(plain, "vge_"+id+".") || len(plain) != len("vge_")+IDLen+1+43 {
			t.Fatalf("plaintext %q", plain)
		}
		gotID, secret, err := Parse(plain, "vge")
		if err != nil {
			t.Fatal(err)
		}
		if gotID != id || len(secret) != SecretLen {
			t.Fatalf("Parse = %q, %d bytes", gotID, len(secret))
		}
		if !Verify(hash, secret) || !bytes.Equal(Hash(secret), hash) {
			t.Fatal("Verify refuses the token's own secret")
		}
	}
	for _, p := range []string{"", "Vge", "1ab", "a_b", "a.b", "abcdefghijklmnopq"} {
		if _, _, _, err := New(p); err == nil {
			t.Errorf("New(%q) succeeded", p)
		}
	}
}

func TestParse(t *testing.T) {
	plain, id, _, err := New("vge")
	if err != nil {
		t.Fatal(err)
	}
	secret := plain[len(plain)-43:]
	sub := func(i int, c string) string { return plain[:i] + c + plain[i+1:] }
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"ok", plain, true},
		{"empty", "", false},
		{"other prefix", "vga_" + id + "." + secret, false},
		{"upper prefix", "VGE_" + id + "." + secret, false},
		{"no underscore", "vge-" + id + "." + secret, false},
		{"upper id", sub(4, "A"), false},
		{"short id", "vge_" + id[1:] + "." + secret + "A", false},
		{"id with dash", sub(4, "-"), false},
		{"no dot", sub(4+IDLen, "_"), false},
		{"short secret", plain[:len(plain)-1], false},
		{"long secret", plain + "A", false},
		{"padded", plain[:len(plain)-1] + "=", false},
		{"std base64", sub(len(plain)-5, "+"), false},
		{"newline in secret", sub(len(plain)-5, "\n"), false},
		{"trailing newline", plain + "\n", false},
		{"leading space", " " + plain, false},
		{"non-canonical last char", plain[:len(plain)-1] + nonCanonical(plain[len(plain)-1]), false},
		{"huge", strings.Repeat("a", 1<<16), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotID, sec, err := Parse(tt.in, "vge")
			if tt.ok {
				if err != nil || gotID != id || len(sec) != SecretLen {
					t.Fatalf("Parse = %q, %x, %v", gotID, sec, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%q) succeeded", tt.in)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatal("error contains the secret")
			}
		})
	}
	if _, _, err := Parse(plain, "Bad"); err == nil {
		t.Fatal("Parse with invalid prefix succeeded")
	}
}

// nonCanonical returns a base64url character with the same top 2 bits of
// value as c but non-zero low 4 bits, so it decodes only without Strict.
func nonCanonical(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	v := strings.IndexByte(alphabet, c)
	return string(alphabet[(v&^0xf)|1])
}

func TestVerify(t *testing.T) {
	_, _, hash, err := New("vga")
	if err != nil {
		t.Fatal(err)
	}
	other := make([]byte, SecretLen)
	tests := []struct {
		name   string
		hash   []byte
		secret []byte
	}{
		{"wrong secret", hash, other},
		{"nil secret", hash, nil},
		{"nil hash", nil, other},
		{"short hash", hash[:31], other},
		{"hash of nothing vs nil hash", nil, nil},
	}
	for _, tt := range tests {
		if Verify(tt.hash, tt.secret) {
			t.Errorf("%s: Verify = true", tt.name)
		}
	}
	if !Verify(Hash(other), other) {
		t.Error("Verify(Hash(s), s) = false")
	}
}

func FuzzTokenParse(f *testing.F) {
	plain, _, _, err := New("vge")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(plain)
	f.Add("")
	f.Add("vge_")
	f.Add("vge_abcdefghij.")
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := Parse(s, "vge")
		if err != nil {
			return
		}
		if len(id) != IDLen || len(secret) != SecretLen {
			t.Fatalf("accepted %q: id %q, %d secret bytes", s, id, len(secret))
		}
		if s != "vge_"+id+"."+secretEncoding.EncodeToString(secret) {
			t.Fatalf("accepted non-canonical %q", s)
		}
	})
}
