package api

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestEnrollServerPort: the printed enroll command names the port the QUIC
// endpoint listens on. A server run with `--quic :5555` (no host) passes
// ":5555": the request's host name with that port, not with 4433.
func TestEnrollServerPort(t *testing.T) {
	for _, c := range []struct{ opt, host, want string }{
		{"", "vigil.example.org:8443", "vigil.example.org:4433"},
		{":5555", "vigil.example.org:8443", "vigil.example.org:5555"},
		{":5555", "127.0.0.1:8443", "127.0.0.1:5555"},
		{"vigil.public:4444", "127.0.0.1:8443", "vigil.public:4444"},
		{"[2001:db8::1]:4433", "127.0.0.1:8443", "[2001:db8::1]:4433"},
	} {
		s := &server{opts: Options{EnrollServer: c.opt}}
		r := httptest.NewRequest("POST", "https://"+c.host+"/api/v1/tokens", nil)
		if got := s.enrollServer(r); got != c.want {
			t.Errorf("EnrollServer %q, request host %s: %q, want %q", c.opt, c.host, got, c.want)
		}
	}
}

// registryRoutes are the routes server/registry mounts in front of the API
// (server/registry/http.go, Registry.Handler): publishing, rollouts, their
// progress and halting one, which `vigilctl model publish`, `rollout create`,
// `rollout status` and `rollout halt` call. They are part of the served API,
// so openapi.json describes them too (TestRegistryRoutesServed checks that
// the registry serves each of them).
var registryRoutes = []string{"POST /api/v1/models", "POST /api/v1/rollouts", "GET /api/v1/rollouts/status",
	"POST /api/v1/rollouts/{id}/halt"}

func TestOpenAPICoversRegistryRoutes(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	for _, r := range registryRoutes {
		method, path, _ := strings.Cut(r, " ")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %s (server/registry) is not in openapi.json", r)
		}
	}
}
