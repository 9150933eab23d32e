package ctl

import (
	"strings"
	"testing"
)

// TestClientRefusesPlainHTTPToRemote: every request carries the bearer
// token, so a plain http:// server URL (a typo in VIGIL_SERVER) would send
// it over the network in clear. Plain http is for loopback only (a local
// TLS-terminating proxy), as for webhooks.
func TestClientRefusesPlainHTTPToRemote(t *testing.T) {
	const tok = "vgu_0000000000.AAAA"
	for _, tc := range []struct {
		server string
		ok     bool
	}{
		{"https://vigil.example:8443", true},
		{"https://192.0.2.1:8443", true},
		{"http://127.0.0.1:8443", true},
		{"http://[::1]:8443", true},
		{"http://localhost:8443", true},
		{"http://vigil.example:8443", false},
		{"http://192.0.2.1:8443", false},
		{"http://127.0.0.1.example:8443", false},
	} {
		_, err := NewClient(tc.server, tok, "")
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.server, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "https://")) {
			t.Errorf("%s: err %v, want a refusal (the token would cross the network in clear)", tc.server, err)
		}
	}
}
