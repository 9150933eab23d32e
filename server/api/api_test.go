package api

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

const testPin = "sha256:" + "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"

type fixture struct {
	db      *store.DB
	srv     *httptest.Server
	tok     map[string]string // role name → bearer token
	fidA    int64             // a finding of acme
	fidB    int64             // a finding of beta
	revoked []string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "api.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	fx := &fixture{db: db, tok: map[string]string{}}
	for _, u := range []struct{ name, role, entity string }{
		{"admin", store.RoleAdmin, ""}, {"analyst", store.RoleAnalyst, ""},
		{"ea", store.RoleEntityAdmin, "acme"}, {"eb", store.RoleEntityAdmin, "beta"},
	} {
		tok, err := db.CreateUser(ctx, u.name, u.role, u.entity, "test")
		if err != nil {
			t.Fatal(err)
		}
		fx.tok[u.name] = tok
	}
	for _, a := range []store.Agent{{ID: "a-1", Entity: "acme"}, {ID: "a-2", Entity: "acme"}, {ID: "b-1", Entity: "beta"}, {ID: "b-2", Entity: "beta"}} {
		a.Hostname, a.CertSerial, a.CertNotAfter = "host-"+a.ID, "01"+a.ID, time.Now().Add(time.Hour)
		if err := db.RegisterAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []struct{ id, entity, det string }{{"a-1", "acme", "netflow"}, {"b-1", "beta", "fileactivity"}} {
		var fs []*wirev1.Finding
		for i := range 5 {
			fs = append(fs, &wirev1.Finding{Seq: uint64(i + 1), Detector: a.det, TimeUnixNano: time.Now().UnixNano(),
				Severity: wirev1.Severity_SEVERITY_HIGH, Score: 2, Threshold: 1, Summary: a.entity + " finding",
				TopFeatures: []*wirev1.FeatureContribution{{Name: "f1", Contribution: 1}}})
		}
		if _, err := db.InsertFindings(ctx, a.id, a.entity, fs); err != nil {
			t.Fatal(err)
		}
	}
	fa, _ := db.ListFindings(ctx, store.FindingFilter{Entity: "acme", Limit: 1})
	fb, _ := db.ListFindings(ctx, store.FindingFilter{Entity: "beta", Limit: 1})
	fx.fidA, fx.fidB = fa[0].ID, fb[0].ID

	reg := prometheus.NewRegistry()
	h := New(db, Options{CAPin: testPin, EnrollServer: "vigil.example:4433", Registry: reg, Registerer: reg,
		OnRevoke: func(id string) { fx.revoked = append(fx.revoked, id) }})
	fx.srv = httptest.NewServer(h)
	t.Cleanup(fx.srv.Close)
	return fx
}

func (fx *fixture) do(t *testing.T, who, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, fx.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if who != "" {
		tok := fx.tok[who]
		if tok == "" {
			tok = who // a literal bad token
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNoContent {
		return resp.StatusCode, string(b)
	}
	if ct := resp.Header.Get("Content-Type"); path != "/metrics" && !strings.HasPrefix(ct, "application/json") &&
		!(resp.StatusCode == 200 && strings.HasPrefix(path, "/api/v1/findings/export")) {
		t.Errorf("%s %s: content type %q", method, path, ct)
	}
	if resp.StatusCode >= 400 && path != "/metrics" {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			t.Errorf("%s %s: error body %q is not {\"error\": ...}", method, path, b)
		}
	}
	return resp.StatusCode, string(b)
}

func TestRoleMatrix(t *testing.T) {
	fx := newFixture(t)
	fa, fb := fmt.Sprint(fx.fidA), fmt.Sprint(fx.fidB)
	// noBeta/noAcme: the body must not mention the other entity.
	type check func(t *testing.T, body string)
	noBeta := func(t *testing.T, body string) {
		if strings.Contains(body, "beta") || strings.Contains(body, "b-1") {
			t.Errorf("beta data leaked: %s", body)
		}
	}
	has := func(subs ...string) check {
		return func(t *testing.T, body string) {
			for _, s := range subs {
				if !strings.Contains(body, s) {
					t.Errorf("body lacks %q: %s", s, body)
				}
			}
		}
	}
	tests := []struct {
		who, method, path, body string
		want                    int
		check                   check
	}{
		// healthz: no auth.
		{"", "GET", "/api/v1/healthz", "", 200, has(`"ok"`)},
		// Authentication.
		{"", "GET", "/api/v1/agents", "", 401, nil},
		{"vgu_0000000000." + strings.Repeat("A", 43), "GET", "/api/v1/agents", "", 401, nil},
		{"garbage", "GET", "/api/v1/findings", "", 401, nil},
		{"", "POST", "/api/v1/tokens", `{"entity":"acme"}`, 401, nil},
		{"", "GET", "/metrics", "", 401, nil},

		// Agents list.
		{"admin", "GET", "/api/v1/agents", "", 200, has("a-1", "b-1")},
		{"analyst", "GET", "/api/v1/agents", "", 200, has("a-1", "b-1")},
		{"ea", "GET", "/api/v1/agents", "", 200, func(t *testing.T, b string) { has("a-1", "a-2")(t, b); noBeta(t, b) }},
		{"ea", "GET", "/api/v1/agents?entity=beta", "", 403, noBeta},
		{"ea", "GET", "/api/v1/agents?entity=acme", "", 200, noBeta},
		{"ea", "GET", "/api/v1/agents/a-1", "", 200, has("a-1")},
		{"ea", "GET", "/api/v1/agents/b-1", "", 404, noBeta},
		{"ea", "GET", "/api/v1/agents/nope", "", 404, nil},
		{"eb", "GET", "/api/v1/agents/b-1", "", 200, has("b-1")},

		// Findings.
		{"admin", "GET", "/api/v1/findings", "", 200, has("acme", "beta")},
		{"analyst", "GET", "/api/v1/findings?entity=beta", "", 200, has("beta")},
		{"ea", "GET", "/api/v1/findings", "", 200, func(t *testing.T, b string) { has("acme")(t, b); noBeta(t, b) }},
		{"ea", "GET", "/api/v1/findings?entity=beta", "", 403, noBeta},
		{"ea", "GET", "/api/v1/findings?agent=b-1", "", 200, func(t *testing.T, b string) { has(`"findings":[]`)(t, b); noBeta(t, b) }},
		{"ea", "GET", "/api/v1/findings?detector=fileactivity", "", 200, has(`"findings":[]`)},
		{"ea", "GET", "/api/v1/findings/" + fa, "", 200, has("acme finding", "top_features")},
		{"ea", "GET", "/api/v1/findings/" + fb, "", 404, noBeta},
		{"analyst", "GET", "/api/v1/findings/" + fb, "", 200, has("beta finding")},
		{"ea", "GET", "/api/v1/findings/999999", "", 404, nil},
		{"ea", "GET", "/api/v1/findings/abc", "", 404, nil},

		// Tokens.
		{"analyst", "POST", "/api/v1/tokens", `{"entity":"acme"}`, 403, nil},
		{"ea", "POST", "/api/v1/tokens", `{"entity":"beta"}`, 403, nil},
		{"ea", "POST", "/api/v1/tokens", `{}`, 201, has(`"entity":"acme"`, "vigil-agent enroll --server vigil.example:4433 --token vge_", "--ca-pin "+testPin)},
		{"admin", "POST", "/api/v1/tokens", `{"entity":"gamma","ttl":"1h"}`, 201, has(`"ca_pin":"` + testPin)},
		{"admin", "POST", "/api/v1/tokens", `{}`, 400, nil},
		{"admin", "POST", "/api/v1/tokens", `{"entity":"acme","ttl":"forever"}`, 400, nil},
		{"admin", "POST", "/api/v1/tokens", `{"entity":"acme","ttl":"-1h"}`, 400, nil},
		{"admin", "POST", "/api/v1/tokens", `{"entity":"Not Valid"}`, 400, nil},
		{"ea", "GET", "/api/v1/tokens", "", 200, noBeta},
		{"analyst", "GET", "/api/v1/tokens", "", 403, nil},
		{"", "DELETE", "/api/v1/tokens/zzzzzzzzzz", "", 401, nil},
		{"analyst", "DELETE", "/api/v1/tokens/zzzzzzzzzz", "", 403, nil},
		{"ea", "DELETE", "/api/v1/tokens/zzzzzzzzzz", "", 404, nil},
		{"admin", "DELETE", "/api/v1/tokens/zzzzzzzzzz", "", 404, nil}, // more in TestRevokeEnrollTokenRoute

		// Revocation.
		{"analyst", "POST", "/api/v1/agents/a-2/revoke", "", 403, nil},
		{"ea", "POST", "/api/v1/agents/b-2/revoke", "", 404, noBeta},
		{"ea", "POST", "/api/v1/agents/a-2/revoke", "", 200, has(`"revoked_at"`)},
		{"admin", "POST", "/api/v1/agents/b-2/revoke", "", 200, has(`"revoked_at"`)},
		{"admin", "POST", "/api/v1/agents/zz/revoke", "", 404, nil},

		// Users.
		{"ea", "POST", "/api/v1/users", `{"name":"x","role":"admin"}`, 403, nil},
		{"analyst", "POST", "/api/v1/users", `{"name":"x","role":"analyst"}`, 403, nil},
		{"admin", "POST", "/api/v1/users", `{"name":"carol","role":"entity-admin","entity":"acme"}`, 201, has(`"token":"vgu_`)},
		{"admin", "POST", "/api/v1/users", `{"name":"carol","role":"analyst"}`, 409, nil},
		{"admin", "POST", "/api/v1/users", `{"name":"dave","role":"root"}`, 400, nil},
		{"admin", "POST", "/api/v1/users", `{"name":"dave","role":"entity-admin"}`, 400, nil},
		{"admin", "POST", "/api/v1/users", `{"name":"dave","role":"analyst","entity":"acme"}`, 400, nil},
		{"admin", "GET", "/api/v1/users", "", 200, has("carol", "ea")},
		{"ea", "GET", "/api/v1/users", "", 403, nil},

		// Audit: the writes above are there, with actor and remote.
		{"admin", "GET", "/api/v1/audit", "", 200, has(`"action":"agent.revoke"`, `"actor":"ea"`, `"remote":"127.0.0.1:`, `"action":"user.create"`)},
		{"analyst", "GET", "/api/v1/audit", "", 200, nil},
		{"ea", "GET", "/api/v1/audit", "", 200, func(t *testing.T, b string) { has(`"target":"a-2"`)(t, b); noBeta(t, b) }},
		{"ea", "GET", "/api/v1/audit?entity=beta", "", 403, nil},

		// Metrics: admin only.
		{"admin", "GET", "/metrics", "", 200, has("vigil_api_requests_total")},
		{"analyst", "GET", "/metrics", "", 403, nil},
		{"ea", "GET", "/metrics", "", 403, nil},

		// Unknown routes and methods.
		{"admin", "GET", "/api/v1/nope", "", 404, nil},
		{"admin", "DELETE", "/api/v1/agents", "", 405, nil}, // a route, not this method: 405 (TestWrongMethod405)
	}
	for _, tc := range tests {
		name := fmt.Sprintf("%s %s %s", tc.who, tc.method, tc.path)
		if len(tc.who) > 10 {
			name = fmt.Sprintf("badtoken %s %s", tc.method, tc.path)
		}
		t.Run(name, func(t *testing.T) {
			code, body := fx.do(t, tc.who, tc.method, tc.path, tc.body)
			if code != tc.want {
				t.Fatalf("status %d, want %d; body %s", code, tc.want, body)
			}
			if tc.check != nil {
				tc.check(t, body)
			}
		})
	}
	if strings.Join(fx.revoked, ",") != "a-2,b-2" {
		t.Errorf("OnRevoke calls: %v", fx.revoked)
	}
	if n, err := fx.db.VerifyAudit(context.Background()); err != nil || n == 0 {
		t.Errorf("audit chain: %d %v", n, err)
	}
}

func TestBadRequests(t *testing.T) {
	fx := newFixture(t)
	huge := `{"entity":"acme","ttl":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"malformed json", "POST", "/api/v1/tokens", `{"entity":`, 400},
		{"not an object", "POST", "/api/v1/tokens", `[1,2]`, 400},
		{"unknown field", "POST", "/api/v1/tokens", `{"entity":"acme","admin":true}`, 400},
		{"trailing data", "POST", "/api/v1/tokens", `{"entity":"acme"} {"entity":"beta"}`, 400},
		{"empty body", "POST", "/api/v1/users", ``, 400},
		{"oversized", "POST", "/api/v1/tokens", huge, 413},
		{"unknown filter", "GET", "/api/v1/findings?entitty=acme", "", 400},
		{"repeated filter", "GET", "/api/v1/findings?entity=acme&entity=beta", "", 400},
		{"bad since", "GET", "/api/v1/findings?since=yesterday", "", 400},
		{"bad severity", "GET", "/api/v1/findings?severity=9", "", 400},
		{"bad limit", "GET", "/api/v1/findings?limit=0", "", 400},
		{"huge limit", "GET", "/api/v1/findings?limit=100000", "", 400},
		{"bad cursor", "GET", "/api/v1/findings?cursor=-3", "", 400},
		{"sql injection", "GET", "/api/v1/findings?entity=acme%27%20OR%201%3D1--", "", 200},
		{"traversal", "GET", "/api/v1/agents/..%2F..%2Fetc%2Fpasswd", "", 404},
		{"good since", "GET", "/api/v1/findings?since=1h&severity=high&limit=2", "", 200},
		{"rfc3339 since", "GET", "/api/v1/findings?since=2020-01-01T00:00:00Z&until=2100-01-01T00:00:00Z", "", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := fx.do(t, "admin", tc.method, tc.path, tc.body)
			if code != tc.want {
				t.Fatalf("status %d, want %d; body %.200s", code, tc.want, body)
			}
		})
	}
	// The injection attempt matched nothing.
	_, body := fx.do(t, "admin", "GET", "/api/v1/findings?entity=acme%27%20OR%201%3D1--", "")
	if !strings.Contains(body, `"findings":[]`) {
		t.Errorf("injection returned data: %s", body)
	}
}

func TestFindingsPaging(t *testing.T) {
	fx := newFixture(t)
	ids := pageIDs(t, fx, "/api/v1/findings?limit=3", "findings")
	if len(ids) != 10 || len(slices.Compact(slices.Sorted(slices.Values(ids)))) != 10 {
		t.Fatalf("paged through findings %v, want 10 distinct", ids)
	}
}

// pageIDs follows next_cursor from path (a list with limit) and returns the ids of the items
// under key on every page, in order.
func pageIDs(t *testing.T, fx *fixture, path, key string) []int64 {
	t.Helper()
	var ids []int64
	cursor := ""
	for range 20 {
		p := path
		if cursor != "" {
			p += "&cursor=" + cursor
		}
		code, body := fx.do(t, "admin", "GET", p, "")
		if code != 200 {
			t.Fatalf("GET %s: %d %s", p, code, body)
		}
		var resp map[string]json.RawMessage
		var items []struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(resp[key], &items); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		for _, it := range items {
			ids = append(ids, it.ID)
		}
		cursor = ""
		if c, ok := resp["next_cursor"]; ok {
			if err := json.Unmarshal(c, &cursor); err != nil {
				t.Fatal(err)
			}
		}
		if cursor == "" {
			return ids
		}
	}
	t.Fatalf("more than 20 pages of %s", path)
	return nil
}

func TestFindingJSONNames(t *testing.T) {
	fx := newFixture(t)
	_, body := fx.do(t, "admin", "GET", fmt.Sprintf("/api/v1/findings/%d", fx.fidA), "")
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatal(err)
	}
	// DESIGN.md section 11.
	for _, k := range []string{"id", "agent_id", "entity", "detector", "time", "first_seen", "last_seen", "count",
		"severity", "score", "threshold", "model", "context", "top_features", "summary"} {
		if _, ok := m[k]; !ok {
			t.Errorf("finding JSON lacks %q: %s", k, body)
		}
	}
	if m["severity"] != "high" {
		t.Errorf("severity %v", m["severity"])
	}
}

// TestSuppressionsPaging: suppressions are listed newest first in pages; next_cursor leads to
// the next page until every one was seen once, so an entity with more active suppressions
// than one page can still see (and lift) its oldest.
func TestSuppressionsPaging(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	var fs []*wirev1.Finding
	for i := range 7 {
		fs = append(fs, &wirev1.Finding{Seq: uint64(100 + i), Detector: "netflow", TimeUnixNano: time.Now().UnixNano(),
			Severity: wirev1.Severity_SEVERITY_HIGH, Score: 2, Threshold: 1, Summary: "backup job",
			Context: &wirev1.FindingContext{SrcIp: fmt.Sprintf("10.99.0.%d", 10+i), DstPort: 22, Proto: "tcp"}})
	}
	if _, err := fx.db.InsertFindings(ctx, "a-1", "acme", fs); err != nil {
		t.Fatal(err)
	}
	listed, err := fx.db.ListFindings(ctx, store.FindingFilter{Entity: "acme", Limit: 7})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range listed {
		if code, body := fx.do(t, "admin", "POST", fmt.Sprintf("/api/v1/findings/%d/triage", f.ID), `{"status":"false_positive"}`); code != 200 {
			t.Fatalf("triage %d: %d %s", f.ID, code, body)
		}
	}
	ids := pageIDs(t, fx, "/api/v1/suppressions?limit=3", "suppressions")
	strictlyNewestFirst := slices.IsSortedFunc(ids, func(a, b int64) int { return cmp.Compare(b, a) }) && len(slices.Compact(slices.Clone(ids))) == len(ids)
	if len(ids) != 7 || !strictlyNewestFirst {
		t.Fatalf("paged suppression ids %v: want 7 distinct, newest first", ids)
	}
	if code, body := fx.do(t, "admin", "GET", "/api/v1/suppressions?cursor=-1", ""); code != 400 {
		t.Fatalf("negative cursor: %d %s", code, body)
	}
}
