package pki

import (
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"a", true},
		{"0", true},
		{"acme", true},
		{"a-0123456789ab", true},
		{"site.paris_2-b", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-a", false},
		{".a", false},
		{"_a", false},
		{"..", false},
		{"Acme", false},
		{"a b", false},
		{"a/b", false},
		{"a%2f", false},
		{"é", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		if got := ValidName(tt.in); got != tt.want {
			t.Errorf("ValidName(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestValidTrustDomain(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"vigil.test", true},
		{"example", true},
		{"a-b.c0.d", true},
		{strings.Repeat("a", 63) + ".x", true},
		{strings.Repeat("a", 64) + ".x", false},
		{strings.Repeat("a.", 127), false},
		{"", false},
		{".x", false},
		{"x.", false},
		{"x..y", false},
		{"-x.y", false},
		{"x-.y", false},
		{"X.y", false},
		{"x_y", false},
		{"x:443", false},
		{"x/y", false},
	}
	for _, tt := range tests {
		if got := ValidTrustDomain(tt.in); got != tt.want {
			t.Errorf("ValidTrustDomain(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseAgentURI(t *testing.T) {
	const td = "vigil.test"
	tests := []struct {
		name string
		in   string
		want Identity // zero: error expected
	}{
		{"ok", "spiffe://vigil.test/entity/acme/agent/a-0123456789ab", Identity{td, "acme", "a-0123456789ab"}},
		{"ok dots", "spiffe://vigil.test/entity/site.1/agent/x_y", Identity{td, "site.1", "x_y"}},
		{"wrong scheme", "https://vigil.test/entity/acme/agent/a1", Identity{}},
		{"upper scheme", "SPIFFE://vigil.test/entity/acme/agent/a1", Identity{}},
		{"wrong trust domain", "spiffe://other.test/entity/acme/agent/a1", Identity{}},
		{"suffix trust domain", "spiffe://evil.vigil.test/entity/acme/agent/a1", Identity{}},
		{"upper host", "spiffe://VIGIL.test/entity/acme/agent/a1", Identity{}},
		{"port", "spiffe://vigil.test:443/entity/acme/agent/a1", Identity{}},
		{"user", "spiffe://u@vigil.test/entity/acme/agent/a1", Identity{}},
		{"query", "spiffe://vigil.test/entity/acme/agent/a1?x=1", Identity{}},
		{"empty query", "spiffe://vigil.test/entity/acme/agent/a1?", Identity{}},
		{"fragment", "spiffe://vigil.test/entity/acme/agent/a1#f", Identity{}},
		{"escaped", "spiffe://vigil.test/entity/ac%6De/agent/a1", Identity{}},
		{"escaped slash", "spiffe://vigil.test/entity/a%2Fb/agent/a1", Identity{}},
		{"trailing slash", "spiffe://vigil.test/entity/acme/agent/a1/", Identity{}},
		{"extra segment", "spiffe://vigil.test/entity/acme/agent/a1/x", Identity{}},
		{"double slash", "spiffe://vigil.test//entity/acme/agent/a1", Identity{}},
		{"dot segment", "spiffe://vigil.test/entity/acme/../agent/a1", Identity{}},
		{"swapped", "spiffe://vigil.test/agent/a1/entity/acme", Identity{}},
		{"no agent", "spiffe://vigil.test/entity/acme", Identity{}},
		{"empty entity", "spiffe://vigil.test/entity//agent/a1", Identity{}},
		{"empty agent", "spiffe://vigil.test/entity/acme/agent/", Identity{}},
		{"upper entity", "spiffe://vigil.test/entity/Acme/agent/a1", Identity{}},
		{"dotdot entity", "spiffe://vigil.test/entity/../agent/a1", Identity{}},
		{"opaque", "spiffe:vigil.test/entity/acme/agent/a1", Identity{}},
		{"no host", "spiffe:///entity/acme/agent/a1", Identity{}},
		{"empty", "", Identity{}},
		{"garbage", "%zz", Identity{}},
		{"space", " spiffe://vigil.test/entity/acme/agent/a1", Identity{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAgentURI(tt.in, td)
			if tt.want == (Identity{}) {
				if err == nil {
					t.Fatalf("ParseAgentURI(%q) = %+v, want error", tt.in, got)
				}
				if !errors.Is(err, ErrBadIdentity) {
					t.Fatalf("error %v does not wrap ErrBadIdentity", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAgentURI(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseAgentURI(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
	if _, err := ParseAgentURI("spiffe://Bad_TD/entity/a/agent/b", "Bad_TD"); err == nil {
		t.Fatal("invalid expected trust domain accepted")
	}
}

func TestIdentityFromCert(t *testing.T) {
	const td = "vigil.test"
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	good := AgentURI(td, "acme", "a1")
	tests := []struct {
		name    string
		cert    *x509.Certificate
		wantErr bool
	}{
		{"ok", &x509.Certificate{URIs: []*url.URL{mustURL(good)}}, false},
		{"ok with dns", &x509.Certificate{URIs: []*url.URL{mustURL(good)}, DNSNames: []string{"x"}}, false},
		{"nil cert", nil, true},
		{"no URI", &x509.Certificate{}, true},
		{"nil URI", &x509.Certificate{URIs: []*url.URL{nil}}, true},
		{"two URIs", &x509.Certificate{URIs: []*url.URL{mustURL(good), mustURL(AgentURI(td, "acme", "a2"))}}, true},
		{"same URI twice", &x509.Certificate{URIs: []*url.URL{mustURL(good), mustURL(good)}}, true},
		{"wrong trust domain", &x509.Certificate{URIs: []*url.URL{mustURL(AgentURI("other.test", "acme", "a1"))}}, true},
		{"wrong path", &x509.Certificate{URIs: []*url.URL{mustURL("spiffe://vigil.test/agent/a1")}}, true},
		{"trust domain only", &x509.Certificate{URIs: []*url.URL{mustURL("spiffe://vigil.test")}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := IdentityFromCert(tt.cert, td)
			if tt.wantErr {
				if err == nil || !errors.Is(err, ErrBadIdentity) {
					t.Fatalf("IdentityFromCert = %+v, %v; want ErrBadIdentity", id, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := (Identity{td, "acme", "a1"}); id != want {
				t.Fatalf("got %+v, want %+v", id, want)
			}
		})
	}
}

func FuzzIdentityFromURI(f *testing.F) {
	const td = "vigil.test"
	for _, s := range []string{
		AgentURI(td, "acme", "a-0123456789ab"),
		"spiffe://vigil.test/entity/acme/agent/a1/",
		"spiffe://vigil.test:1/entity/acme/agent/a1",
		"spiffe://vigil.test/entity/a%2Fb/agent/a1",
		"spiffe://u@vigil.test/entity/acme/agent/a1?q#f",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseAgentURI(s, td)
		if err != nil {
			return
		}
		// Whatever is accepted is canonical and valid.
		if id.String() != s || id.TrustDomain != td || !ValidName(id.Entity) || !ValidName(id.AgentID) {
			t.Fatalf("accepted %q as %+v", s, id)
		}
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("accepted unparsable %q", s)
		}
		id2, err := IdentityFromCert(&x509.Certificate{URIs: []*url.URL{u}}, td)
		if err != nil || id2 != id {
			t.Fatalf("IdentityFromCert disagrees on %q: %+v, %v", s, id2, err)
		}
	})
}
