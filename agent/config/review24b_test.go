package config

import (
	"strings"
	"testing"
)

// TestValidateServerAddress: a server override without a host or with a
// port outside 1-65535 passed Validate, and the uplink then failed every
// connection attempt (state.SplitServer or the dial) for as long as the
// agent ran, instead of `run` refusing the configuration.
func TestValidateServerAddress(t *testing.T) {
	for _, tt := range []struct {
		server string
		ok     bool
	}{
		{"vigil.example:4433", true},
		{"[2001:db8::1]:4433", true},
		{"10.0.0.1:443", true},
		{"vigil.example:", false},
		{":4433", false},
		{"vigil.example:0", false},
		{"vigil.example:65536", false},
		{"vigil.example:quic", false},
		{"vigil.example:-1", false},
		{"vigil.example/x:4433", false},
	} {
		t.Run(tt.server, func(t *testing.T) {
			c := Default()
			c.Server = tt.server
			err := c.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "server") {
				t.Fatalf("error %v does not name the server", err)
			}
		})
	}
}

// TestParseRefusesTrailingDocuments: the YAML decoder read only the first
// document, so the settings (unknown keys too) of a second one were silently
// ignored; the JSON check missed trailing data that starts with ']' or '}'.
func TestParseRefusesTrailingDocuments(t *testing.T) {
	for _, tt := range []struct{ name, format, in string }{
		{"second yaml document", "yaml", "state_dir: /x\n---\nmetrics:\n  listen: 127.0.0.1:1\n"},
		{"unknown key in second yaml document", "yaml", "state_dir: /x\n---\nbogus: 1\n"},
		{"json trailing bracket", "json", `{"state_dir":"/x"} ]`},
		{"json trailing brace", "json", `{"state_dir":"/x"}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := Parse([]byte(tt.in), tt.format); err == nil {
				t.Fatalf("accepted: %+v", c)
			}
		})
	}
	// Empty documents and markers around one document stay fine.
	for _, in := range []string{"---\nstate_dir: /x\n", "state_dir: /x\n...\n", "state_dir: /x\n---\n", "state_dir: /x\n--- ~\n# end\n"} {
		c, err := Parse([]byte(in), "yaml")
		if err != nil || c.StateDir != "/x" {
			t.Errorf("%q: %+v, %v", in, c, err)
		}
	}
	if c, err := Parse([]byte("{\"state_dir\":\"/x\"}\n\n"), "json"); err != nil || c.StateDir != "/x" {
		t.Errorf("json with trailing space: %v", err)
	}
}
