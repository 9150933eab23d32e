package packaging

import "testing"

// TestServerEnvPrivate: /etc/vigil/server.env is the server unit's only
// EnvironmentFile, so it is where webhook credentials go (export's
// `headers: {Authorization: "env:NAME"}`, "put credentials in headers
// (env:NAME)"). systemd reads it as root: it needs no reader but root, and
// must not be readable by the agent's user or anyone else.
func TestServerEnvPrivate(t *testing.T) {
	s := serverSpec(&Options{}, &inputs{}, t.TempDir())
	found := false
	for _, e := range s.entries {
		if e.dst != "/etc/vigil/server.env" {
			continue
		}
		found = true
		if e.mode.Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600 (it holds the forwarders' secrets)", e.dst, e.mode.Perm())
		}
	}
	if !found {
		t.Fatal("the server package has no /etc/vigil/server.env")
	}
}
