package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-edge/vigil/server/registry"
	"github.com/vigil-edge/vigil/server/store"
)

// registryFixture is newFixture's deployment served as vigil-server serves it: the registry's
// routes in front of the API (server/app), with the catalog of seedCatalog (rollouts r-all,
// r-beta, r-acme).
func registryFixture(t *testing.T) *fixture {
	t.Helper()
	fx := newFixture(t)
	seedCatalog(t, fx)
	dir := t.TempDir()
	reg := registry.New(registry.Config{DB: fx.db, DataDir: dir, BundleDir: filepath.Join(dir, "bundles")})
	h := reg.Handler(New(fx.db, Options{CAPin: testPin, Registry: prometheus.NewRegistry(), Registerer: prometheus.NewRegistry()}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	fx.srv = srv
	return fx
}

// TestRoleMatrixRolloutHalt extends the role matrix to POST /api/v1/rollouts/{id}/halt: only
// the role that creates rollouts (admin) halts one; unknown ids are 404, a second halt 409, a
// bad body 400, a reason too long 422; the halt shows in GET /api/v1/rollouts and
// /api/v1/rollouts/status (state, reason, who) and in the audit log as rollout.halt.
func TestRoleMatrixRolloutHalt(t *testing.T) {
	fx := registryFixture(t)
	has := func(subs ...string) func(*testing.T, string) {
		return func(t *testing.T, body string) {
			for _, s := range subs {
				if !strings.Contains(body, s) {
					t.Errorf("body lacks %q: %.600s", s, body)
				}
			}
		}
	}
	long := strings.Repeat("x", registry.MaxHaltReason+1)
	tests := []struct {
		who, method, path, body string
		want                    int
		check                   func(*testing.T, string)
	}{
		{"", "POST", "/api/v1/rollouts/r-acme/halt", "", 401, nil},
		{"garbage", "POST", "/api/v1/rollouts/r-acme/halt", "", 401, nil},
		{"analyst", "POST", "/api/v1/rollouts/r-acme/halt", "", 403, nil},
		{"ea", "POST", "/api/v1/rollouts/r-acme/halt", "", 403, nil},
		{"eb", "POST", "/api/v1/rollouts/r-beta/halt", "", 403, nil},
		{"admin", "POST", "/api/v1/rollouts/r-nope/halt", "", 404, has("not found")},
		{"admin", "POST", "/api/v1/rollouts/" + strings.Repeat("r", 200) + "/halt", "", 404, nil},
		{"admin", "POST", "/api/v1/rollouts/r-acme/halt", `{"reason":`, 400, nil},
		{"admin", "POST", "/api/v1/rollouts/r-acme/halt", `{"why":"x"}`, 400, nil},
		{"admin", "POST", "/api/v1/rollouts/r-acme/halt", `{"reason":"` + long + `"}`, 422, has("1024")},
		{"admin", "POST", "/api/v1/rollouts/r-acme/halt", `{"reason":"bell\u0007"}`, 422, nil},
		{"admin", "GET", "/api/v1/rollouts/r-acme/halt", "", 405, nil},
		{"admin", "POST", "/api/v1/rollouts/r-acme/halt", `{"reason":"nf@3 floods the SOC"}`, 200,
			has(`"id":"r-acme"`, `"state":"halted"`, `"state_reason":"halted by hand: nf@3 floods the SOC"`, `"state_changed_by":"admin"`, `"withdrawn":[]`)},
		{"admin", "POST", "/api/v1/rollouts/r-acme/halt", `{"reason":"again"}`, 409, has("already halted", "by admin")},
		{"admin", "POST", "/api/v1/rollouts/r-all/halt", "", 200, has(`"state_reason":"halted by hand"`)},
		{"admin", "GET", "/api/v1/rollouts", "", 200, has(`"state":"halted"`, `"state_reason":"halted by hand: nf@3 floods the SOC"`, `"state_changed_by":"admin"`)},
		{"ea", "GET", "/api/v1/rollouts/status?id=r-acme", "", 200, has(`"state":"halted"`, `"state_reason":"halted by hand: nf@3 floods the SOC"`, `"state_changed_by":"admin"`)},
		{"admin", "GET", "/api/v1/audit", "", 200, has(`"action":"rollout.halt"`, `"target":"r-acme"`, `"detail":"halted by hand: nf@3 floods the SOC"`)},
		{"ea", "GET", "/api/v1/audit", "", 200, has(`"action":"rollout.halt"`, `"target":"r-acme"`)},
	}
	for _, tc := range tests {
		name := fmt.Sprintf("%s %s %.60s %.20s", tc.who, tc.method, tc.path, tc.body)
		t.Run(name, func(t *testing.T) {
			code, body := fx.do(t, tc.who, tc.method, tc.path, tc.body)
			if code != tc.want {
				t.Fatalf("status %d, want %d; body %.300s", code, tc.want, body)
			}
			if tc.check != nil {
				tc.check(t, body)
			}
		})
	}
	// An entity-admin sees that the deployment-wide r-all was halted, not by whom (as it is
	// not shown who created it).
	_, body := fx.do(t, "ea", "GET", "/api/v1/rollouts", "")
	var list struct{ Rollouts []store.Rollout }
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	for _, r := range list.Rollouts {
		if r.ID == "r-all" && (r.State != "halted" || r.StateReason != "halted by hand" || r.StateChangedBy != "" || r.StateChangedAt.IsZero()) {
			t.Errorf("r-all as seen by ea: %+v", r)
		}
	}
	// r-beta was never halted.
	if ro, err := fx.db.RolloutByID(context.Background(), "r-beta"); err != nil || ro.State != "active" {
		t.Errorf("r-beta: %s %v", ro.State, err)
	}
	if n, err := fx.db.VerifyAudit(context.Background()); err != nil || n == 0 {
		t.Errorf("audit chain: %d %v", n, err)
	}
}

// TestRegistryRoutesServed: each route of registryRoutes is served by server/registry (not the
// API's "no such endpoint"), so that the list the OpenAPI tests compare with is the real one.
func TestRegistryRoutesServed(t *testing.T) {
	fx := registryFixture(t)
	for _, r := range registryRoutes {
		method, path, _ := strings.Cut(r, " ")
		path = strings.ReplaceAll(path, "{id}", "r-none")
		code, body := fx.do(t, "analyst", method, path, "")
		if strings.Contains(body, "no such endpoint") || code == 405 {
			t.Errorf("%s: %d %s: not served by the registry", r, code, body)
		}
	}
}
