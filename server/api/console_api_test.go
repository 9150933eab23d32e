package api

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// seedCatalog writes models, rollouts and model status rows straight into
// the database (their writers belong to the rollout code) and reports
// agent states.
func seedCatalog(t *testing.T, fx *fixture) {
	t.Helper()
	ctx := context.Background()
	raw, err := sql.Open("sqlite", "file:"+fx.db.Path()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, q := range []string{
		`INSERT INTO models(id, name, version, digest, signers, created_at, published_by) VALUES
			(1, 'netflow-ae', 3, 'sha256:ab', '[{"key_id":"rel-2026"}]', 1, 'release')`,
		`INSERT INTO rollouts(id, model_id, entity, target, created_at, created_by) VALUES
			('r-all', 1, '', '{"agents":["a-1","b-1"]}', 2, 'admin'), ('r-beta', 1, 'beta', '{}', 3, 'eb'), ('r-acme', 1, 'acme', '{}', 4, 'ea')`,
		`INSERT INTO agent_model_status(agent_id, rollout_id, model_digest, state, time) VALUES
			('a-1', 'r-all', 'sha256:ab', 'active', 1), ('b-1', 'r-all', 'sha256:ab', 'rejected', 1)`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	st := store.AgentState{Version: "0.7.0", Spool: store.SpoolStats{Depth: 3, Dropped: 7, CapacityBytes: 100, Bytes: 10},
		Counters: map[string]uint64{"kernel_drops": 2, "captured": 99}, ActiveModels: []store.ModelRef{{Name: "netflow-ae", Version: 3}}}
	if err := fx.db.TouchAgent(ctx, "b-1", time.Now(), st); err != nil {
		t.Fatal(err)
	}
	if err := fx.db.TouchAgent(ctx, "a-1", time.Now(), store.AgentState{Version: "0.7.0"}); err != nil {
		t.Fatal(err)
	}
}

// TestRoleMatrixIssue7 extends the role matrix to every endpoint added for
// the console, the stream and the exports. An entity-admin of acme must
// never read or change anything of beta.
func TestRoleMatrixIssue7(t *testing.T) {
	fx := newFixture(t)
	seedCatalog(t, fx)
	fa, fb := fmt.Sprint(fx.fidA), fmt.Sprint(fx.fidB)
	noBeta := func(t *testing.T, body string) {
		for _, s := range []string{"beta", "b-1", "b-2", "fileactivity", "r-beta"} {
			if strings.Contains(body, s) {
				t.Errorf("beta data (%q) leaked: %.300s", s, body)
			}
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
	both := func(fs ...func(*testing.T, string)) func(*testing.T, string) {
		return func(t *testing.T, b string) {
			for _, f := range fs {
				f(t, b)
			}
		}
	}
	// The suppression beta's false positive creates.
	tests := []struct {
		who, method, path, body string
		want                    int
		check                   func(*testing.T, string)
	}{
		{"", "GET", "/api/v1/openapi.json", "", 200, has(`"openapi": "3.0.3"`)},
		{"", "GET", "/api/v1/entities", "", 401, nil},
		{"", "GET", "/api/v1/findings/stream", "", 401, nil},
		{"", "GET", "/api/v1/findings/export", "", 401, nil},
		{"", "POST", "/api/v1/findings/" + fa + "/triage", `{"status":"resolved"}`, 401, nil},

		// Entities.
		{"admin", "GET", "/api/v1/entities", "", 200, has("acme", "beta")},
		{"ea", "GET", "/api/v1/entities", "", 200, both(has("acme"), noBeta)},

		// Finding detail: explanation, provenance, notes.
		{"ea", "GET", "/api/v1/findings/" + fa, "", 200, has(`"explanation"`, `"provenance"`, `"notes":[]`, `"status":"new"`)},

		// Triage.
		{"ea", "POST", "/api/v1/findings/" + fb + "/triage", `{"status":"false_positive"}`, 404, noBeta},
		{"ea", "POST", "/api/v1/findings/" + fa + "/triage", `{"status":"acknowledged","assignee":"ann","comment":"looking"}`, 200, has(`"status":"acknowledged"`, `"assignee":"ann"`)},
		{"analyst", "POST", "/api/v1/findings/" + fb + "/triage", `{"status":"false_positive","comment":"backup"}`, 200, has(`"status":"false_positive"`)},
		{"admin", "POST", "/api/v1/findings/" + fa + "/triage", `{"status":"bogus"}`, 400, nil},
		{"admin", "POST", "/api/v1/findings/" + fa + "/triage", `{}`, 400, nil},
		{"admin", "POST", "/api/v1/findings/" + fa + "/triage", `{"status":"new","extra":1}`, 400, nil},
		{"admin", "POST", "/api/v1/findings/999999/triage", `{"status":"new"}`, 404, nil},
		{"admin", "POST", "/api/v1/findings/x/triage", `{"status":"new"}`, 404, nil},
		{"ea", "GET", "/api/v1/findings/" + fa, "", 200, has(`"actor":"ea"`, `"comment":"looking"`)},
		{"ea", "GET", "/api/v1/findings?status=acknowledged", "", 200, both(has(`"assignee":"ann"`), noBeta)},
		{"ea", "GET", "/api/v1/findings?status=false_positive", "", 200, has(`"findings":[]`)},
		{"admin", "GET", "/api/v1/findings?status=false_positive", "", 200, has("beta")},
		{"admin", "GET", "/api/v1/findings?status=closed", "", 400, nil},

		// Suppressions.
		{"admin", "GET", "/api/v1/suppressions", "", 200, has(`"entity":"beta"`, `"detector":"fileactivity"`)},
		{"eb", "GET", "/api/v1/suppressions", "", 200, has(`"entity":"beta"`)},
		{"ea", "GET", "/api/v1/suppressions", "", 200, both(has(`"suppressions":[]`), noBeta)},
		{"ea", "GET", "/api/v1/suppressions?entity=beta", "", 403, noBeta},
		{"ea", "POST", "/api/v1/suppressions/1/lift", "", 404, noBeta},
		{"ea", "GET", "/api/v1/suppressions?active=maybe", "", 400, nil},

		// Stats.
		{"admin", "GET", "/api/v1/findings/stats?since=1h&bucket=1m", "", 200, has("acme", "beta", `"bucket_seconds":60`)},
		{"ea", "GET", "/api/v1/findings/stats", "", 200, both(has("acme"), noBeta)},
		{"ea", "GET", "/api/v1/findings/stats?entity=beta", "", 403, noBeta},
		{"admin", "GET", "/api/v1/findings/stats?since=720h&bucket=1s", "", 400, nil},
		{"admin", "GET", "/api/v1/findings/stats?bucket=fast", "", 400, nil},

		// Agents with health.
		{"admin", "GET", "/api/v1/agents", "", 200, has(`"health"`, `7 findings dropped`, `kernel_drops 2`, `"status":"warning"`, `never connected`)},
		{"ea", "GET", "/api/v1/agents/a-1", "", 200, has(`"health":{"status":"warning"`, "certificate expires in")},
		{"ea", "GET", "/api/v1/agents", "", 200, noBeta},

		// Models and rollouts.
		{"ea", "GET", "/api/v1/models", "", 200, has("netflow-ae", "rel-2026")},
		{"admin", "GET", "/api/v1/rollouts", "", 200, has("r-all", "r-beta", "r-acme", `"rejected":1`, `"b-1"`)},
		{"ea", "GET", "/api/v1/rollouts", "", 200, both(has("r-all", "r-acme", `"active":1`), noBeta)},
		{"ea", "GET", "/api/v1/rollouts?entity=beta", "", 403, nil},
		{"eb", "GET", "/api/v1/rollouts", "", 200, has("r-beta", `"rejected":1`)},

		// Users.
		{"ea", "POST", "/api/v1/users/u-000000000000/disable", "", 403, nil},
		{"analyst", "POST", "/api/v1/users/u-000000000000/disable", "", 403, nil},
		{"admin", "POST", "/api/v1/users/u-000000000000/disable", "", 404, nil},
		{"admin", "POST", "/api/v1/users/..%2fadmin/disable", "", 404, nil},

		// Audit verify: CERT roles only.
		{"admin", "GET", "/api/v1/audit/verify", "", 200, has(`"ok":true`)},
		{"analyst", "GET", "/api/v1/audit/verify", "", 200, has(`"ok":true`)},
		{"ea", "GET", "/api/v1/audit/verify", "", 403, nil},
		{"ea", "GET", "/api/v1/audit", "", 200, both(has(`"action":"finding.triage"`), noBeta)},
		{"eb", "GET", "/api/v1/audit", "", 200, has(`"action":"suppression.create"`, `"actor":"analyst"`)},

		// Exports.
		{"ea", "GET", "/api/v1/findings/export?format=jsonl", "", 200, both(has("acme finding"), noBeta)},
		{"ea", "GET", "/api/v1/findings/export?format=ocsf", "", 200, both(has(`"class_uid":2004`), noBeta)},
		{"ea", "GET", "/api/v1/findings/export?agent=b-1", "", 200, noBeta},
		{"ea", "GET", "/api/v1/findings/export?detector=fileactivity&format=ocsf", "", 200, noBeta},
		{"ea", "GET", "/api/v1/findings/export?entity=beta", "", 403, noBeta},
		{"analyst", "GET", "/api/v1/findings/export?entity=beta", "", 200, has("beta finding")},
		{"admin", "GET", "/api/v1/findings/export?format=xml", "", 400, nil},
		{"admin", "GET", "/api/v1/findings/export?limit=0", "", 400, nil},

		// Stream parameter errors are plain 4xx before any event.
		{"ea", "GET", "/api/v1/findings/stream?entity=beta", "", 403, nil},
		{"admin", "GET", "/api/v1/findings/stream?after=-1", "", 400, nil},
		{"admin", "GET", "/api/v1/findings/stream?severity=9", "", 400, nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %s %s", tc.who, tc.method, tc.path), func(t *testing.T) {
			code, body := fx.do(t, tc.who, tc.method, tc.path, tc.body)
			if code != tc.want {
				t.Fatalf("status %d, want %d; body %.300s", code, tc.want, body)
			}
			if tc.check != nil {
				tc.check(t, body)
			}
		})
	}
	// Beta's suppression can be lifted by beta's admin, not acme's.
	code, body := fx.do(t, "eb", "POST", "/api/v1/suppressions/1/lift", "")
	if code != 200 || !strings.Contains(body, `"lifted_by":"eb"`) {
		t.Errorf("eb lift: %d %s", code, body)
	}
	// Disable and enable a user: the disabled token stops working.
	us, _ := fx.db.ListUsers(context.Background(), "beta")
	code, _ = fx.do(t, "admin", "POST", "/api/v1/users/"+us[0].ID+"/disable", "")
	if code != 200 {
		t.Fatalf("disable: %d", code)
	}
	if code, _ := fx.do(t, "eb", "GET", "/api/v1/whoami", ""); code != 401 {
		t.Errorf("disabled user: %d", code)
	}
	if code, _ := fx.do(t, "admin", "POST", "/api/v1/users/"+us[0].ID+"/enable", ""); code != 200 {
		t.Errorf("enable: %d", code)
	}
	if code, _ := fx.do(t, "eb", "GET", "/api/v1/whoami", ""); code != 200 {
		t.Errorf("enabled user: %d", code)
	}
	if n, err := fx.db.VerifyAudit(context.Background()); err != nil || n == 0 {
		t.Errorf("audit chain: %d %v", n, err)
	}
}

// TestOpenAPICoversRoutes: every registered route is described, and the
// description names no route that does not exist.
func TestOpenAPICoversRoutes(t *testing.T) {
	s := newServer(nil, Options{Registry: prometheus.NewRegistry()})
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	registered := map[string]bool{}
	for _, r := range registryRoutes { // mounted in front of the API by server/registry
		method, path, _ := strings.Cut(r, " ")
		registered[strings.ToLower(method)+" "+path] = true
	}
	for _, r := range s.routes {
		method, path, _ := strings.Cut(r, " ")
		key := strings.ToLower(method) + " " + path
		registered[key] = true
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for path, ops := range doc.Paths {
		for m := range ops {
			if m == "parameters" {
				continue
			}
			if !registered[m+" "+path] {
				t.Errorf("openapi.json describes %s %s, which is not a route", m, path)
			}
		}
	}
	// Every $ref resolves.
	var all map[string]any
	_ = json.Unmarshal(openAPIDoc, &all)
	comps := all["components"].(map[string]any)
	for _, ref := range regexp.MustCompile(`"\$ref":\s*"#/components/([a-zA-Z]+)/([A-Za-z]+)"`).FindAllStringSubmatch(string(openAPIDoc), -1) {
		sect, _ := comps[ref[1]].(map[string]any)
		if _, ok := sect[ref[2]]; !ok {
			t.Errorf("dangling $ref %s/%s", ref[1], ref[2])
		}
	}
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct{ id, event, data string }

// readEvents reads events from an SSE body into ch until it ends.
func readEvents(body *bufio.Reader, ch chan<- sseEvent) {
	defer close(ch)
	var ev sseEvent
	for {
		line, err := body.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if ev.event != "" {
				ch <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.data += line[6:]
		}
	}
}

func openStream(t *testing.T, fx *fixture, who, query string, header map[string]string) (<-chan sseEvent, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", fx.srv.URL+"/api/v1/findings/stream"+query, nil)
	req.Header.Set("Authorization", "Bearer "+fx.tok[who])
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent, 100)
	go readEvents(bufio.NewReader(resp.Body), ch)
	return ch, func() { cancel(); resp.Body.Close() }
}

func insert(t *testing.T, fx *fixture, agent, entity string, seq uint64, summary string) {
	t.Helper()
	f := &wirev1.Finding{Seq: seq, Detector: "netflow", TimeUnixNano: time.Now().UnixNano(), Severity: wirev1.Severity_SEVERITY_CRITICAL,
		Score: 3, Threshold: 1, Summary: summary}
	if _, err := fx.db.InsertFindings(context.Background(), agent, entity, []*wirev1.Finding{f}); err != nil {
		t.Fatal(err)
	}
}

// collect reads events until want summaries arrived or the deadline.
func collect(t *testing.T, ch <-chan sseEvent, want int, wait time.Duration) []store.Finding {
	t.Helper()
	var out []store.Finding
	deadline := time.After(wait)
	for len(out) < want {
		select {
		case ev, ok := <-ch:
			if !ok {
				return out
			}
			var f store.Finding
			if err := json.Unmarshal([]byte(ev.data), &f); err != nil {
				t.Fatalf("event data: %v", err)
			}
			if ev.id != fmt.Sprint(f.ID) {
				t.Errorf("event id %s for finding %d", ev.id, f.ID)
			}
			out = append(out, f)
		case <-deadline:
			return out
		}
	}
	return out
}

func TestLiveStreamScoped(t *testing.T) {
	fx := newFixture(t)
	eaCh, stopA := openStream(t, fx, "ea", "", nil)
	defer stopA()
	adminCh, stopAdmin := openStream(t, fx, "admin", "?severity=critical", nil)
	defer stopAdmin()
	filteredCh, stopF := openStream(t, fx, "ea", "?agent=b-1", nil) // beta's agent: must stay silent
	defer stopF()
	time.Sleep(100 * time.Millisecond) // let the streams take their starting point
	insert(t, fx, "b-1", "beta", 100, "beta live 1")
	insert(t, fx, "a-1", "acme", 100, "acme live 1")
	insert(t, fx, "b-1", "beta", 101, "beta live 2")
	insert(t, fx, "a-1", "acme", 101, "acme live 2")

	got := collect(t, adminCh, 4, 10*time.Second)
	if len(got) != 4 {
		t.Fatalf("admin got %d live findings, want 4", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].ID <= got[i-1].ID {
			t.Errorf("out of order: %d after %d", got[i].ID, got[i-1].ID)
		}
	}
	ea := collect(t, eaCh, 2, 5*time.Second)
	if len(ea) != 2 || ea[0].Summary != "acme live 1" || ea[1].Summary != "acme live 2" {
		t.Fatalf("entity-admin got %+v", ea)
	}
	// Nothing else, in particular nothing of beta, arrives.
	if more := collect(t, eaCh, 1, 1500*time.Millisecond); len(more) != 0 {
		t.Errorf("entity-admin got more: %+v", more)
	}
	if f := collect(t, filteredCh, 1, 100*time.Millisecond); len(f) != 0 {
		t.Errorf("acme stream filtered on beta's agent got %+v", f)
	}

	// Resume: Last-Event-ID replays what came after it, scoped.
	resumed, stopR := openStream(t, fx, "ea", "", map[string]string{"Last-Event-ID": fmt.Sprint(ea[0].ID)})
	defer stopR()
	r := collect(t, resumed, 1, 5*time.Second)
	if len(r) != 1 || r[0].ID != ea[1].ID {
		t.Fatalf("resume got %+v", r)
	}
	// Replay from 0: every acme finding, no beta one.
	all, stopAll := openStream(t, fx, "ea", "?after=0", nil)
	defer stopAll()
	rs := collect(t, all, 7, 5*time.Second)
	if len(rs) != 7 {
		t.Fatalf("replay got %d, want 7", len(rs))
	}
	for _, f := range rs {
		if f.Entity != "acme" {
			t.Fatalf("replay leaked %+v", f)
		}
	}
}

func TestStreamLimit(t *testing.T) {
	fx := newFixture(t)
	h := New(fx.db, Options{MaxStreams: 1})
	srv := httptest.NewServer(h)
	defer srv.Close()
	fx.srv = srv
	_, stop := openStream(t, fx, "admin", "", nil)
	defer stop()
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/findings/stream", nil)
	req.Header.Set("Authorization", "Bearer "+fx.tok["admin"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second stream: %d, want 503", resp.StatusCode)
	}
}

func TestExportJSONLAndOCSF(t *testing.T) {
	fx := newFixture(t)
	// JSON lines: one finding per line, oldest first, all of them.
	code, body := fx.do(t, "admin", "GET", "/api/v1/findings/export?format=jsonl", "")
	if code != 200 {
		t.Fatal(code, body)
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if len(lines) != 10 {
		t.Fatalf("%d lines, want 10", len(lines))
	}
	var ids []int64
	for _, l := range lines {
		var f store.Finding
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		ids = append(ids, f.ID)
	}
	if !slices.IsSorted(ids) {
		t.Errorf("not oldest first: %v", ids)
	}
	// Paging with after + limit.
	_, body = fx.do(t, "admin", "GET", fmt.Sprintf("/api/v1/findings/export?after=%d&limit=3", ids[4]), "")
	if n := strings.Count(body, "\n"); n != 3 || !strings.Contains(body, fmt.Sprintf(`"id":%d,`, ids[5])) {
		t.Errorf("after/limit: %d lines: %s", n, body)
	}
	// OCSF: the whole class 2004 check lives in the export package; here:
	// every line is class 2004 and only acme for acme's admin.
	_, body = fx.do(t, "ea", "GET", "/api/v1/findings/export?format=ocsf", "")
	lines = strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("ocsf: %d lines", len(lines))
	}
	for _, l := range lines {
		var o map[string]any
		if err := json.Unmarshal([]byte(l), &o); err != nil {
			t.Fatal(err)
		}
		if o["class_uid"] != float64(2004) || o["metadata"].(map[string]any)["tenant_uid"] != "acme" {
			t.Errorf("ocsf line %s", l)
		}
	}
}

// FuzzFindingFilter: query strings never panic the filter parser, and an
// entity-admin's filter never leaves its entity.
func FuzzFindingFilter(f *testing.F) {
	for _, s := range []string{"entity=acme", "since=1h&until=2020-01-01T00:00:00Z", "severity=high&status=new", "agent=a-1&detector=x",
		"entity=beta", "since=-5h", "status=%00", "limit=5&cursor=7", "entity=acme%27%20OR%201%3D1--"} {
		f.Add(s)
	}
	p := &principal{user: store.User{Role: store.RoleEntityAdmin, Entity: "acme"}}
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest("GET", "/api/v1/findings", nil)
		r.URL.RawQuery = raw
		q, err := query(r, append(findingFilterParams, "limit", "cursor")...)
		if err != nil {
			return
		}
		ff, err := findingFilter(q, p, time.Unix(1700000000, 0))
		if err != nil {
			return
		}
		if ff.Entity != "acme" {
			t.Fatalf("entity-admin filter escaped to %q", ff.Entity)
		}
		_, _ = parseLimit(q.Get("limit"))
		_, _ = parseCursor(q.Get("cursor"))
	})
}

// FuzzTriageBody: triage bodies never panic the decoder or the validation,
// and whatever passes validation is within the store's bounds.
func FuzzTriageBody(f *testing.F) {
	for _, s := range []string{`{"status":"false_positive"}`, `{"assignee":"x","comment":"y"}`, `{}`, `{"status":null}`, `[`, `{"status":"new"} x`,
		`{"comment":"` + strings.Repeat("a", 5000) + `"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		var req triageReq
		if err := decode(w, r, &req); err != nil {
			return
		}
		if err := req.validate(); err != nil {
			return
		}
		if req.Status != nil && !store.ValidStatus(*req.Status) || len(req.Comment) > store.MaxCommentLen {
			t.Fatalf("validated out-of-range triage %+v", req)
		}
	})
}
