package registry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/server/store"
)

// haltClient calls the registry's routes as a user of role (vigilctl does the same).
type haltClient struct {
	e   *regEnv
	srv *httptest.Server
	tok string
}

func (e *regEnv) client(name, role, entity string) *haltClient {
	e.t.Helper()
	tok, err := e.db.CreateUser(context.Background(), name, role, entity, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewServer(e.reg.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeErr(w, http.StatusNotFound, "no such endpoint (the API's)")
	})))
	e.t.Cleanup(srv.Close)
	return &haltClient{e: e, srv: srv, tok: tok}
}

// post sends body to path and returns the status code and the body.
func (c *haltClient) post(path, body string) (int, string) {
	c.e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(http.MethodPost, c.srv.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+c.tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// halt halts rollout id through POST /api/v1/rollouts/{id}/halt and wants 200.
func (c *haltClient) halt(id, reason string) HaltResult {
	c.e.t.Helper()
	body, _ := json.Marshal(map[string]string{"reason": reason})
	code, out := c.post("/api/v1/rollouts/"+id+"/halt", string(body))
	if code != http.StatusOK {
		c.e.t.Fatalf("halt %s: %d %s", id, code, out)
	}
	var res HaltResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		c.e.t.Fatalf("halt %s: %v: %s", id, err, out)
	}
	return res
}

func offerIDs(e *regEnv, agent string) []string {
	var out []string
	for _, o := range e.push.offers(agent) {
		out = append(out, o.RolloutId)
	}
	return out
}

func withdrawalIDs(e *regEnv, agent string) []string {
	var out []string
	for _, w := range e.push.withdrawals(agent) {
		out = append(out, w.RolloutId)
	}
	return out
}

// TestHaltOrdinaryRollout: a CERT release engineer halts an ordinary rollout by hand. Its state
// becomes halted (reason, time, user; audited rollout.halt), it is no longer offered at Hello
// or by a push, and the connected targeted agents that have not activated it get a withdrawal
// at once (an agent still installing it, one that had not reported yet); an agent that already
// activated it gets nothing (it keeps its model: reverting it is a rollback rollout), nor does
// one that refused it. An agent offline at the halt that was still installing gets the
// withdrawal at its next Hello; one that never got the offer gets nothing.
func TestHaltOrdinaryRollout(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	e.addAgent("a-4", "alpha")
	e.addAgent("a-5", "alpha")
	_, d2 := e.publish("nf", 2)
	e.push.connected = []string{"a-1", "a-2", "a-3", "a-4"}
	id, reached, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha"}, "release-eng")
	if err != nil || len(reached) != 4 {
		t.Fatalf("create: %v reached %v", err, reached)
	}
	e.status("a-1", id, d2, "active", "")    // activated: keeps its model
	e.status("a-2", id, d2, "fetched", "")   // still installing
	e.status("a-4", id, d2, "rejected", "x") // refused it: settled
	// a-3 connected, no report yet (its offer may still be queued); a-5 offline, never offered.
	e.push.connected = []string{"a-1", "a-2", "a-3", "a-4"}

	cert := e.client("cert-ann", store.RoleAdmin, "")
	res := cert.halt(id, "nf@2 floods the SOC with port-scan findings")
	if res.State != "halted" || res.By != "cert-ann" || res.Reason != "halted by hand: nf@2 floods the SOC with port-scan findings" {
		t.Fatalf("halt result %+v", res)
	}
	if want := []string{"a-2", "a-3"}; !slices.Equal(res.Withdrawn, want) {
		t.Fatalf("withdrawn from %v, want %v (not a-1: active, not a-4: refused)", res.Withdrawn, want)
	}
	for _, a := range []string{"a-1", "a-4"} {
		if w := withdrawalIDs(e, a); len(w) != 0 {
			t.Fatalf("%s (settled) got withdrawals %v", a, w)
		}
	}
	if w := e.push.withdrawals("a-2"); len(w) != 1 || w[0].RolloutId != id || w[0].GetModel().GetDigest() != d2 ||
		!strings.Contains(w[0].Reason, "halted by hand: nf@2 floods") {
		t.Fatalf("a-2's withdrawal %+v", w)
	}
	ro, err := e.db.RolloutByID(ctx, id)
	if err != nil || ro.State != "halted" || ro.StateChangedBy != "cert-ann" || ro.StateChangedAt.IsZero() ||
		!strings.Contains(ro.StateReason, "floods the SOC") {
		t.Fatalf("stored rollout %+v %v", ro, err)
	}
	audit, _ := e.db.ListAudit(ctx, store.AuditFilter{})
	n := 0
	for _, a := range audit {
		if a.Action == "rollout.halt" {
			n++
			if a.Actor != "cert-ann" || a.Target != id || a.Entity != "alpha" || !strings.Contains(a.Detail, "floods the SOC") {
				t.Errorf("audit entry %+v", a)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d rollout.halt audit entries", n)
	}

	// No longer offered: not by a push, not at Hello. a-2 (offline since, last reported
	// fetched) gets the withdrawal again at Hello; a-5 (never offered) gets nothing.
	before := map[string]int{}
	for _, a := range []string{"a-1", "a-2", "a-3", "a-5"} {
		before[a] = len(e.push.offers(a))
	}
	if reached := e.reg.PushPending(ctx); len(reached) != 0 {
		t.Fatalf("halted rollout pushed to %v", reached)
	}
	e.push.connected = []string{"a-1", "a-2", "a-3", "a-5"}
	e.status("a-2", id, d2, "fetched", "")
	for _, a := range []string{"a-1", "a-2", "a-3", "a-5"} {
		e.reg.OnHello(a, "alpha", nil)
		if got := len(e.push.offers(a)); got != before[a] {
			t.Errorf("%s offered the halted rollout at Hello", a)
		}
	}
	if w := withdrawalIDs(e, "a-2"); len(w) != 2 {
		t.Errorf("a-2 (still installing) at Hello: withdrawals %v, want a second one", w)
	}
	if w := withdrawalIDs(e, "a-5"); len(w) != 0 {
		t.Errorf("a-5 (never offered) got withdrawals %v", w)
	}
	if w := withdrawalIDs(e, "a-1"); len(w) != 0 {
		t.Errorf("a-1 (active) got withdrawals %v", w)
	}
	// Status: halted, who and why; a-1 still reported active.
	st := e.statusOf(id, "")
	if st.State != "halted" || st.StateChangedBy != "cert-ann" || !strings.Contains(st.StateReason, "floods") || agentState(st, "a-1") != "active" {
		t.Fatalf("status %+v", st)
	}
}

// TestHaltShadowRollout: halting a shadow rollout by hand stops its shadow models as the
// automatic halt does: every connected targeted agent gets the withdrawal, and one that
// reconnects listing the shadow rollout gets it at Hello; it is not offered again.
func TestHaltShadowRollout(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	_, d2 := e.publish("nf", 2)
	e.push.connected = []string{"a-1", "a-2", "a-3"}
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha", Shadow: true, HaltFactor: 3}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	e.status("a-1", id, d2, "shadow", summary(100, 0, 100, 0))
	e.status("a-2", id, d2, "shadow", summary(100, 0, 100, 0))
	e.push.connected = []string{"a-1", "a-2"} // a-3 went away while it runs the shadow model
	res := e.client("cert-ann", store.RoleAdmin, "").halt(id, "")
	if res.Reason != ManualHaltPrefix || !slices.Equal(res.Withdrawn, []string{"a-1", "a-2"}) {
		t.Fatalf("halt result %+v", res)
	}
	e.push.connected = []string{"a-1", "a-2", "a-3"}
	e.reg.OnHello("a-3", "alpha", []string{id})
	if w := withdrawalIDs(e, "a-3"); !slices.Equal(w, []string{id}) {
		t.Fatalf("a-3 running the shadow model at Hello: withdrawals %v", w)
	}
	if o := offerIDs(e, "a-3"); len(o) != 1 { // the one at create only
		t.Fatalf("a-3 offered again: %v", o)
	}
	// A late shadow report (the halt rule would halt on it) leaves the halt by hand as it is;
	// the agents report withdrawn, and status keeps the shadow reports of the halt.
	e.status("a-1", id, d2, "shadow", summary(9000, 0, 9000, 9000))
	if ro, _ := e.db.RolloutByID(ctx, id); ro.State != "halted" || ro.StateChangedBy != "cert-ann" {
		t.Fatalf("rollout after a late report: %+v", ro)
	}
	e.status("a-1", id, d2, "withdrawn", "rollout withdrawn by the server: halted by hand")
	e.status("a-2", id, d2, "withdrawn", "rollout withdrawn by the server: halted by hand")
	if st := e.statusOf(id, ""); st.ShadowTotals == nil || st.ShadowTotals.Agents != 2 || st.ShadowTotals.ShadowEvents != 200 ||
		agentState(st, "a-1") != "withdrawn" {
		t.Fatalf("status after the halt: %+v totals %+v", st, st.ShadowTotals)
	}
}

// TestHaltRefusals: halting twice is 409, an unknown rollout 404, a role that may not create
// rollouts 403, a rollout the shadow halt rule halted 409; a refused halt records nothing.
func TestHaltRefusals(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	_, d2 := e.publish("nf", 2)
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha"}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	sid, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Agents: []string{"a-1"}, Shadow: true, HaltFactor: 3}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	e.status("a-1", sid, d2, "shadow", summary(6000, 0, 6000, 1200)) // halts automatically
	cert := e.client("cert-ann", store.RoleAdmin, "")
	for _, c := range []struct {
		who        *haltClient
		id, body   string
		want       int
		wantSubstr string
	}{
		{e.client("ana", store.RoleAnalyst, ""), id, "", 403, "admin"},
		{e.client("ea", store.RoleEntityAdmin, "alpha"), id, "", 403, "admin"},
		{cert, "r-000000000000", "", 404, "not found"},
		{cert, sid, "", 409, "already halted (by system)"},
		{cert, id, `{"reason":"x"`, 400, "decode"},
		{cert, id, `{"reason":"` + strings.Repeat("x", MaxHaltReason+1) + `"}`, 422, "1024"},
		{cert, id, `{"reason":"first"}`, 200, "halted by hand: first"},
		{cert, id, `{"reason":"second"}`, 409, "already halted (by cert-ann)"},
	} {
		code, body := c.who.post("/api/v1/rollouts/"+c.id+"/halt", c.body)
		if code != c.want || !strings.Contains(body, c.wantSubstr) {
			t.Errorf("halt %s %s: %d %s, want %d with %q", c.id, c.body, code, body, c.want, c.wantSubstr)
		}
	}
	if _, err := e.reg.Halt(ctx, id, "x", ""); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Halt of a halted rollout: %v", err)
	}
	ro, _ := e.db.RolloutByID(ctx, id)
	if ro.StateReason != "halted by hand: first" {
		t.Errorf("second halt changed the reason: %q", ro.StateReason)
	}
	audit, _ := e.db.ListAudit(ctx, store.AuditFilter{})
	n := 0
	for _, a := range audit {
		if a.Action == "rollout.halt" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d rollout.halt audit entries, want 1", n)
	}
}

// TestHaltedRolloutNotChosen: the newest active rollout of a model name is the one offered;
// once the newer one is halted, the older one (still active) is offered again to the agents
// that have not settled it, at Hello and by the push that follows the halt.
func TestHaltedRolloutNotChosen(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	e.publish("nf", 2)
	e.publish("nf", 3)
	old, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha"}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	newer, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@3", Entity: "alpha"}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	e.push.connected = []string{"a-1"}
	e.reg.OnHello("a-1", "alpha", nil)
	if o := offerIDs(e, "a-1"); !slices.Equal(o, []string{newer}) {
		t.Fatalf("before the halt a-1 offered %v, want the newest %s", o, newer)
	}
	e.push.connected = []string{"a-1", "a-2"}
	e.client("cert-ann", store.RoleAdmin, "").halt(newer, "bad v3")
	// a-2, connected, never offered anything: the push after the halt offers it the older one.
	if o := offerIDs(e, "a-2"); !slices.Equal(o, []string{old}) {
		t.Fatalf("a-2 after the halt offered %v, want the older active %s", o, old)
	}
	e.push.connected = []string{"a-1", "a-2", "a-3"}
	e.reg.OnHello("a-3", "alpha", nil)
	if o := offerIDs(e, "a-3"); !slices.Equal(o, []string{old}) {
		t.Fatalf("a-3 at Hello offered %v, want the older active %s", o, old)
	}
}

// TestRolloutCreateUnknownTargets: a rollout to an entity that does not exist, to unknown or
// revoked agent ids, or to agents outside the entity given, would reach nobody there: refused
// (422 over HTTP) with the names, and nothing recorded.
func TestRolloutCreateUnknownTargets(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	e.publish("nf", 2)
	e.addAgent("b-1", "beta")
	e.addAgent("a-9", "alpha")
	if err := e.db.RevokeAgent(ctx, "a-9", "test"); err != nil {
		t.Fatal(err)
	}
	cert := e.client("cert-ann", store.RoleAdmin, "")
	for _, c := range []struct {
		name string
		req  RolloutRequest
		want []string
	}{
		{"unknown entity", RolloutRequest{Model: "nf@2", Entity: "alhpa"}, []string{"entity alhpa does not exist"}},
		{"unknown entity with percent", RolloutRequest{Model: "nf@2", Entity: "gamma", Percent: 5}, []string{"entity gamma does not exist"}},
		{"unknown agent", RolloutRequest{Model: "nf@2", Agents: []string{"a-1", "a-7", "zz"}}, []string{"unknown agent id(s) a-7, zz"}},
		{"revoked agent", RolloutRequest{Model: "nf@2", Agents: []string{"a-9"}}, []string{"revoked agent(s) a-9"}},
		{"agent of another entity", RolloutRequest{Model: "nf@2", Entity: "alpha", Agents: []string{"a-1", "b-1"}}, []string{"agent(s) b-1 (beta) not in entity alpha"}},
		{"all at once", RolloutRequest{Model: "nf@2", Entity: "nope", Agents: []string{"ghost", "a-9"}},
			[]string{"entity nope does not exist", "unknown agent id(s) ghost", "revoked agent(s) a-9"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := e.reg.CreateRollout(ctx, c.req, "release-eng")
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("CreateRollout: %v, want ErrInvalid", err)
			}
			body, _ := json.Marshal(c.req)
			code, out := cert.post("/api/v1/rollouts", string(body))
			if code != http.StatusUnprocessableEntity {
				t.Fatalf("POST /api/v1/rollouts: %d %s, want 422", code, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("error %s lacks %q", out, w)
				}
			}
		})
	}
	if rs, _ := e.db.ListRollouts(ctx, store.RolloutFilter{}); len(rs) != 0 {
		t.Fatalf("refused rollouts recorded: %+v", rs)
	}
	// Existing targets are accepted: an entity, agents (also with their entity), a percentage.
	for _, req := range []RolloutRequest{
		{Model: "nf@2", Entity: "beta"},
		{Model: "nf@2", Agents: []string{"a-1", "b-1"}},
		{Model: "nf@2", Entity: "alpha", Agents: []string{"a-2"}},
		{Model: "nf@2", Percent: 50},
	} {
		body, _ := json.Marshal(req)
		if code, out := cert.post("/api/v1/rollouts", string(body)); code != http.StatusCreated {
			t.Errorf("%+v: %d %s", req, code, out)
		}
	}
}
