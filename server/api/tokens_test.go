package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// TestRevokeEnrollTokenRoute: DELETE /api/v1/tokens/{id} revokes an unused
// enrollment token (204), with the permission that creates tokens; another
// entity's token is 404 like an unknown one, a used token 409. The revoked
// token is listed as such, audited, and refused at enrollment.
func TestRevokeEnrollTokenRoute(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	mk := func(entity string) (plain, id string) {
		t.Helper()
		plain, tk, err := fx.db.CreateEnrollTokenInfo(ctx, entity, time.Hour, "admin")
		if err != nil {
			t.Fatal(err)
		}
		return plain, tk.ID
	}
	acmePlain, acme := mk("acme")
	betaPlain, beta := mk("beta")
	usedPlain, used := mk("acme")
	if _, err := fx.db.ConsumeEnrollToken(ctx, usedPlain, time.Now()); err != nil {
		t.Fatal(err)
	}
	noBeta := func(t *testing.T, body string) {
		if strings.Contains(body, "beta") || strings.Contains(body, beta) {
			t.Errorf("beta data leaked: %s", body)
		}
	}
	has := func(subs ...string) func(*testing.T, string) {
		return func(t *testing.T, body string) {
			for _, s := range subs {
				if !strings.Contains(body, s) {
					t.Errorf("body lacks %q: %.400s", s, body)
				}
			}
		}
	}
	empty := func(t *testing.T, body string) {
		if body != "" {
			t.Errorf("204 with body %q", body)
		}
	}
	for _, tc := range []struct {
		who, method, path string
		want              int
		check             func(*testing.T, string)
	}{
		{"", "DELETE", "/api/v1/tokens/" + acme, 401, nil},
		{"analyst", "DELETE", "/api/v1/tokens/" + acme, 403, nil},
		{"ea", "DELETE", "/api/v1/tokens/" + beta, 404, noBeta},
		{"eb", "DELETE", "/api/v1/tokens/" + acme, 404, nil},
		{"ea", "DELETE", "/api/v1/tokens/zzzzzzzzzz", 404, nil},
		{"ea", "DELETE", "/api/v1/tokens/..%2fx", 404, nil},
		{"ea", "DELETE", "/api/v1/tokens/" + used, 409, has("already used")},
		{"admin", "DELETE", "/api/v1/tokens/" + used, 409, nil},
		{"ea", "DELETE", "/api/v1/tokens/" + acme, 204, empty},
		{"ea", "DELETE", "/api/v1/tokens/" + acme, 204, empty}, // idempotent
		{"ea", "GET", "/api/v1/tokens", 200, func(t *testing.T, b string) {
			has(`"id":"`+acme+`"`, `"revoked_at":"`, `"revoked_by":"ea"`)(t, b)
			noBeta(t, b)
		}},
		{"eb", "GET", "/api/v1/tokens", 200, func(t *testing.T, b string) {
			if strings.Contains(b, "revoked") {
				t.Errorf("beta's token revoked by acme's admin: %s", b)
			}
		}},
		{"admin", "DELETE", "/api/v1/tokens/" + beta, 204, empty},
		{"ea", "GET", "/api/v1/audit", 200, has(`"action":"token.revoke"`, `"target":"`+acme+`"`, `"actor":"ea"`)},
		{"admin", "PUT", "/api/v1/tokens/" + acme, 405, nil},
	} {
		t.Run(tc.who+" "+tc.method+" "+tc.path, func(t *testing.T) {
			code, body := fx.do(t, tc.who, tc.method, tc.path, "")
			if code != tc.want {
				t.Fatalf("status %d, want %d; body %s", code, tc.want, body)
			}
			if tc.check != nil {
				tc.check(t, body)
			}
		})
	}
	for _, plain := range []string{acmePlain, betaPlain} {
		if _, err := fx.db.ConsumeEnrollToken(ctx, plain, time.Now()); !errors.Is(err, store.ErrTokenInvalid) {
			t.Errorf("revoked token %s enrolled: %v", plain[:14], err)
		}
	}
	if n, err := fx.db.VerifyAudit(ctx); err != nil || n == 0 {
		t.Errorf("audit chain: %d %v", n, err)
	}
}

// TestHealthzWarnsOfServerCertificate: healthz stays 200 (a liveness probe
// must not restart a server whose renewal fails) but says "warning", with
// the reason, when a health check reports a problem, such as a server
// certificate that expires within 7 days.
func TestHealthzWarnsOfServerCertificate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		problems []string
		want     string
	}{
		{"no hook", nil, `{"status":"ok"}`},
		{"healthy", []string{}, `{"status":"ok"}`},
		{"near expiry", []string{"server certificate expires in 2d"}, `{"status":"warning","problems":["server certificate expires in 2d"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{}
			if tc.problems != nil {
				opts.Health = func() []string { return tc.problems }
			}
			s := newServer(nil, opts)
			rec := httptest.NewRecorder()
			s.handler.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/healthz", nil))
			if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != tc.want {
				t.Fatalf("%d %s, want 200 %s", rec.Code, rec.Body, tc.want)
			}
		})
	}
}
