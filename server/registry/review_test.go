package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/server/store"
)

// statusOf returns rollout id's status as seen by entity ("" = CERT-wide).
func (e *regEnv) statusOf(id, entity string) RolloutStatus {
	e.t.Helper()
	st, err := e.reg.Status(context.Background(), id, entity)
	if err != nil || len(st) != 1 {
		e.t.Fatalf("status of %s: %+v %v", id, st, err)
	}
	return st[0]
}

func agentState(rs RolloutStatus, agent string) string {
	for _, a := range rs.Status {
		if a.AgentID == agent {
			return a.State
		}
	}
	return "(not targeted)"
}

// TestShadowPromotionSettles: a shadow rollout S of a bundle, then an ordinary rollout O of the
// same bundle (the shadow model promoted). The agent keeps sending S's periodic shadow reports
// after it activated the bundle under O: each rollout keeps its own record, so O stays active
// and S shadow, neither is offered again at Hello or by PushPending, the progress of both
// settles, S's shadow totals keep counting the agent, and halting S leaves O alone.
func TestShadowPromotionSettles(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	_, d2 := e.publish("nf", 2)
	e.push.connected = []string{"a-1"}
	sid, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Agents: []string{"a-1"}, Shadow: true, HaltFactor: 3}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{"offered", "fetched", "verified"} {
		e.status("a-1", sid, d2, st, "")
	}
	e.status("a-1", sid, d2, "shadow", summary(5000, 5, 5000, 5))
	oid, reached, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Agents: []string{"a-1"}}, "release-eng")
	if err != nil || len(reached) != 1 {
		t.Fatalf("promotion: %v %v", reached, err)
	}
	for _, st := range []string{"offered", "fetched", "verified", "active"} {
		e.status("a-1", oid, d2, st, "")
	}
	for round := range 3 {
		// The running shadow model's periodic report, then the agent reconnects (still running
		// it), or restarts (running none: the bundle is active, so its shadow is not resumed).
		e.status("a-1", sid, d2, "shadow", summary(uint64(6000+round), 5, 6000, 6))
		before := len(e.push.offers("a-1"))
		running := []string{sid}
		if round == 2 {
			running = nil
		}
		e.reg.OnHello("a-1", "alpha", running)
		if reached := e.reg.PushPending(ctx); len(reached) != 0 {
			t.Fatalf("round %d: PushPending offered again to %v", round, reached)
		}
		if o := e.push.offers("a-1")[before:]; len(o) != 0 {
			t.Fatalf("round %d: offered again at Hello: %v", round, o)
		}
		if s := agentState(e.statusOf(oid, ""), "a-1"); s != "active" {
			t.Fatalf("round %d: ordinary rollout's agent is %s, want active", round, s)
		}
		so := e.statusOf(sid, "")
		if s := agentState(so, "a-1"); s != "shadow" || so.ShadowTotals.Agents != 1 || so.ShadowTotals.ShadowEvents != 6000 {
			t.Fatalf("round %d: shadow rollout's agent is %s, totals %+v", round, s, so.ShadowTotals)
		}
	}
	rs, err := e.db.ListRollouts(ctx, store.RolloutFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		want := map[string]int{"active": 1}
		if r.ID == sid {
			want = map[string]int{"shadow": 1}
		}
		if fmt.Sprint(r.Progress) != fmt.Sprint(want) {
			t.Errorf("progress of %s: %v, want %v", r.ID, r.Progress, want)
		}
	}
	// The shadow model goes wild: S halts, a-1 gets S's withdrawal and reports it; O stays.
	e.status("a-1", sid, d2, "shadow", summary(9000, 9, 9000, 900))
	if ro, _ := e.db.RolloutByID(ctx, sid); ro.State != "halted" {
		t.Fatalf("shadow rollout not halted: %s %s", ro.State, ro.StateReason)
	}
	e.status("a-1", sid, d2, "withdrawn", "rollout withdrawn by the server")
	e.reg.OnHello("a-1", "alpha", nil)
	if s := agentState(e.statusOf(oid, ""), "a-1"); s != "active" {
		t.Fatalf("after the halt the ordinary rollout's agent is %s", s)
	}
	if s := agentState(e.statusOf(sid, ""), "a-1"); s != "withdrawn" {
		t.Fatalf("after the halt the shadow rollout's agent is %s", s)
	}
}

// TestStatusEntityScope: an entity-admin's GET /api/v1/rollouts/status shows its entity's
// rollouts and the deployment-wide ones, never another entity's, and of a deployment-wide one
// neither the target, the creator nor the shadow totals (as GET /api/v1/rollouts).
func TestStatusEntityScope(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	e.addAgent("b-1", "beta")
	_, d2 := e.publish("nf", 2)
	create := func(req RolloutRequest, by string) string {
		id, _, err := e.reg.CreateRollout(ctx, req, by)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	beta := create(RolloutRequest{Model: "nf@2", Entity: "beta", Shadow: true, HaltFactor: 5}, "beta-admin")
	all := create(RolloutRequest{Model: "nf@2", Agents: []string{"a-1", "b-1"}, Shadow: true, HaltFactor: 5}, "cert-admin")
	alpha := create(RolloutRequest{Model: "nf@2", Entity: "alpha"}, "alpha-admin")
	e.status("b-1", beta, d2, "shadow", summary(2000, 1, 2000, 2))
	e.status("b-1", all, d2, "shadow", summary(3000, 1, 3000, 2))
	e.status("a-1", all, d2, "shadow", summary(1000, 0, 1000, 1))

	admin, err := e.db.CreateUser(ctx, "root", store.RoleAdmin, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	ea, err := e.db.CreateUser(ctx, "ea", store.RoleEntityAdmin, "alpha", "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e.reg.Handler(http.NotFoundHandler()))
	defer srv.Close()
	get := func(token, query string) map[string]RolloutStatus {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/rollouts/status"+query, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rs []RolloutStatus
		if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&rs) != nil {
			t.Fatalf("status %s: %d", query, resp.StatusCode)
		}
		out := map[string]RolloutStatus{}
		for _, r := range rs {
			out[r.ID] = r
		}
		return out
	}
	// The CERT sees everything.
	rs := get(admin, "")
	if len(rs) != 3 || rs[all].CreatedBy != "cert-admin" || len(rs[all].Agents) != 2 || rs[all].ShadowTotals == nil ||
		rs[all].ShadowTotals.Agents != 2 || rs[beta].Entity != "beta" {
		t.Fatalf("admin's status: %+v", rs)
	}
	// The entity-admin of alpha: not beta's rollout; the deployment-wide one without its target,
	// creator and totals (which count b-1), and only alpha's agents.
	rs = get(ea, "")
	if _, ok := rs[beta]; ok || len(rs) != 2 {
		t.Fatalf("entity-admin sees %d rollouts, beta's: %v", len(rs), ok)
	}
	if r := rs[all]; r.Agents != nil || r.CreatedBy != "" || r.ShadowTotals != nil || r.HaltFactor != 0 ||
		len(r.Status) != 1 || r.Status[0].AgentID != "a-1" {
		t.Fatalf("deployment-wide rollout as the entity-admin sees it: %+v", r)
	}
	if r := rs[alpha]; r.CreatedBy != "alpha-admin" || len(r.Status) != 3 {
		t.Fatalf("the entity's own rollout: %+v", r)
	}
	if rs := get(ea, "?id="+beta); len(rs) != 0 {
		t.Fatalf("entity-admin reads beta's rollout by id: %+v", rs)
	}
	if rs := get(ea, "?id="+alpha); len(rs) != 1 {
		t.Fatalf("entity-admin cannot read its rollout by id: %+v", rs)
	}
}

// TestShadowReportsBounded: one agent's shadow report cannot decide the halt rule for the others:
// counts near 2^64 no longer overflow the sums (which forced a halt), and 10^15 quiet events no
// longer drown the other agents' reports (which blocked a halt).
func TestShadowReportsBounded(t *testing.T) {
	ctx := context.Background()
	type report struct{ agent, summary string }
	// Each report is judged as it arrives: the reports that may dilute or overflow come first.
	cases := []struct {
		name    string
		reports []report
		halt    bool
	}{
		{"overflowing shadow events do not force a halt", []report{
			{"a-2", summary(1000, 0, math.MaxUint64-9000+1, 0)},
			{"a-1", summary(10000, 100, 10000, 100)}, // as noisy as the active model
		}, false},
		{"overflowing active anomalies do not force a halt", []report{
			{"a-2", summary(math.MaxUint64, math.MaxUint64-99, 1000, 0)},
			{"a-1", summary(10000, 100, 10000, 100)},
		}, false},
		{"10^15 quiet events do not block a halt", []report{
			{"a-3", summary(1e15, 0, 1e15, 0)},
			{"a-1", summary(10000, 10, 10000, 1000)}, // shadow 10% vs active 0.1%
			{"a-2", summary(10000, 10, 10000, 1000)},
		}, true},
		{"one noisy agent among three quiet ones, summed within", []report{
			{"a-2", summary(100000, 0, 100000, 10)},
			{"a-3", summary(100000, 0, 100000, 10)},
			{"b-1", summary(100000, 0, 100000, 10)},
			{"a-1", summary(1000, 0, 1000, 4)}, // 0.4% > 3 x 0.1% alone
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newRegEnv(t)
			e.addAgent("b-1", "alpha")
			_, d2 := e.publish("nf", 2)
			id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha", Shadow: true, HaltFactor: 3}, "x")
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range c.reports {
				e.status(r.agent, id, d2, "shadow", r.summary)
			}
			ro, err := e.db.RolloutByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if halted := ro.State == "halted"; halted != c.halt {
				st := e.statusOf(id, "")
				t.Fatalf("halted %v, want %v: %s; totals %+v verdict %+v", halted, c.halt, ro.StateReason, st.ShadowTotals, st.ShadowTotals.Verdict)
			}
			st := e.statusOf(id, "")
			tot := st.ShadowTotals
			if tot.Agents == 0 || tot.Agents > len(c.reports) || tot.ShadowEvents > uint64(tot.Agents)*MaxShadowReportEvents ||
				tot.ActiveAnomalies > tot.ActiveEvents || tot.ShadowAnomalies > tot.ShadowEvents {
				t.Fatalf("totals %+v", tot)
			}
		})
	}
}

func TestParseShadowReportCapped(t *testing.T) {
	r, ok := parseShadowReport(summary(math.MaxUint64, math.MaxUint64/2, 4*MaxShadowReportEvents, MaxShadowReportEvents))
	if !ok || r.Active.Events != MaxShadowReportEvents || r.Shadow.Events != MaxShadowReportEvents ||
		r.Active.Anomalies < MaxShadowReportEvents/2-1 || r.Active.Anomalies > MaxShadowReportEvents/2 ||
		r.Shadow.Anomalies != MaxShadowReportEvents/4 {
		t.Fatalf("%+v %v", r, ok)
	}
	if addSat(math.MaxUint64-1, 5) != math.MaxUint64 || addSat(2, 3) != 5 {
		t.Fatal("addSat")
	}
}

// TestRegistryAuditsRemote: model.publish and rollout.create through the registry's routes
// record the caller's address, as the API's audited writes do.
func TestRegistryAuditsRemote(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	admin, err := e.db.CreateUser(ctx, "root", store.RoleAdmin, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e.reg.Handler(http.NotFoundHandler()))
	defer srv.Close()
	post := func(path string, body []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s: %d", path, resp.StatusCode)
		}
	}
	post("/api/v1/models?no_smoke=1", e.bundleBytes("nf", 2, "model nf 2"))
	post("/api/v1/rollouts", []byte(`{"model":"nf@2","entity":"alpha"}`))
	audit, err := e.db.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range audit {
		if a.Action == "model.publish" || a.Action == "rollout.create" {
			n++
			if !strings.HasPrefix(a.Remote, "127.0.0.1:") {
				t.Errorf("%s audited with remote %q", a.Action, a.Remote)
			}
		}
	}
	if n != 2 {
		t.Fatalf("%d audit entries", n)
	}
}

// bundleBytes signs a bundle NAME@version of the given model bytes.
func (e *regEnv) bundleBytes(name string, version uint64, model string) []byte {
	e.t.Helper()
	p := signtest.WriteBundle(e.t, e.t.TempDir(), []byte(model), signtest.Manifest(name, version, time.Now().Add(-time.Minute)), e.signer)
	data, err := os.ReadFile(p)
	if err != nil {
		e.t.Fatal(err)
	}
	return data
}

// TestRefusedPublishLeavesNoBundle: a publish refused by the registry (a version already
// published) leaves no signed bundle behind in the directory FETCH serves; republishing the
// same bytes leaves the published model's file in place.
func TestRefusedPublishLeavesNoBundle(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	_, d2 := e.publish("nf", 2)
	dir := filepath.Join(e.dir, "bundles")
	files := func() []string {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, en := range ents {
			out = append(out, en.Name())
		}
		return out
	}
	want := strings.TrimPrefix(d2, "sha256:") + ".vgb"
	if f := files(); len(f) != 1 || f[0] != want {
		t.Fatalf("bundle files after publish: %v", f)
	}
	// Another bundle claiming nf@2: refused, and its file gone.
	_, err := e.reg.Publish(ctx, bytes.NewReader(e.bundleBytes("nf", 2, "another model")), "x", PublishOptions{NoSmoke: true})
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("second nf@2: %v", err)
	}
	if f := files(); len(f) != 1 || f[0] != want {
		t.Fatalf("bundle files after a refused publish: %v", f)
	}
	// The same bytes again: refused, and the published model's file stays.
	_, err = e.reg.Publish(ctx, bytes.NewReader(e.bundleBytes("nf", 2, "model nf 2")), "x", PublishOptions{NoSmoke: true})
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("republish: %v", err)
	}
	if f := files(); len(f) != 1 || f[0] != want {
		t.Fatalf("bundle files after republishing: %v", f)
	}
}
