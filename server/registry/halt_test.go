package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func TestHaltRuleJudge(t *testing.T) {
	rule := HaltRule{Factor: 3, MinEvents: 1000, RateFloor: 0.001}
	cases := []struct {
		name         string
		rule         HaltRule
		c            ShadowCounts
		judged, halt bool
	}{
		{"below minimum events (shadow)", rule, ShadowCounts{ActiveEvents: 5000, ActiveAnomalies: 0, ShadowEvents: 999, ShadowAnomalies: 999}, false, false},
		{"below minimum events (active)", rule, ShadowCounts{ActiveEvents: 999, ShadowEvents: 5000, ShadowAnomalies: 5000}, false, false},
		{"no events at all", rule, ShadowCounts{}, false, false},
		// Zero active rate: the floor 0.001 stands in, limit 0.003.
		{"zero active rate, shadow under floor x factor", rule, ShadowCounts{ActiveEvents: 10000, ShadowEvents: 10000, ShadowAnomalies: 30}, true, false},
		{"zero active rate, shadow over floor x factor", rule, ShadowCounts{ActiveEvents: 10000, ShadowEvents: 10000, ShadowAnomalies: 31}, true, true},
		{"zero active and zero shadow", rule, ShadowCounts{ActiveEvents: 10000, ShadowEvents: 10000}, true, false},
		// Active rate 1%: limit 3%.
		{"just under the factor", rule, ShadowCounts{ActiveEvents: 10000, ActiveAnomalies: 100, ShadowEvents: 10000, ShadowAnomalies: 299}, true, false},
		{"exactly the factor (not over)", rule, ShadowCounts{ActiveEvents: 10000, ActiveAnomalies: 100, ShadowEvents: 10000, ShadowAnomalies: 300}, true, false},
		{"just over the factor", rule, ShadowCounts{ActiveEvents: 10000, ActiveAnomalies: 100, ShadowEvents: 10000, ShadowAnomalies: 301}, true, true},
		{"rates, not counts: shadow saw fewer events", rule, ShadowCounts{ActiveEvents: 20000, ActiveAnomalies: 200, ShadowEvents: 5000, ShadowAnomalies: 151}, true, true},
		{"quieter shadow", rule, ShadowCounts{ActiveEvents: 10000, ActiveAnomalies: 100, ShadowEvents: 10000, ShadowAnomalies: 5}, true, false},
		{"factor 0 never halts", HaltRule{}, ShadowCounts{ActiveEvents: 1e6, ShadowEvents: 1e6, ShadowAnomalies: 1e6}, false, false},
		{"defaults: min 1000, floor 0.001", HaltRule{Factor: 2}, ShadowCounts{ActiveEvents: 1000, ShadowEvents: 1000, ShadowAnomalies: 3}, true, true},
		{"defaults: 999 events not judged", HaltRule{Factor: 2}, ShadowCounts{ActiveEvents: 999, ShadowEvents: 1000, ShadowAnomalies: 1000}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := c.rule.Judge(c.c)
			if v.Judged != c.judged || v.Halt != c.halt {
				t.Fatalf("Judge(%+v) = judged %v halt %v (%s), want judged %v halt %v", c.c, v.Judged, v.Halt, v.Reason, c.judged, c.halt)
			}
			if v.Reason == "" {
				t.Fatal("no reason")
			}
		})
	}
}

func TestParseShadowReport(t *testing.T) {
	for _, s := range []string{"", "{", `{"active":{"events":1,"anomalies":2},"shadow":{}}`, strings.Repeat(" ", 5000)} {
		if _, ok := parseShadowReport(s); ok {
			t.Errorf("accepted %.40q", s)
		}
	}
	r, ok := parseShadowReport(`{"batches":3,"active":{"events":10,"anomalies":1,"max_p99":0.2},"shadow":{"events":9,"anomalies":9}}`)
	if !ok || r.Active.Events != 10 || r.Shadow.Anomalies != 9 {
		t.Fatalf("%+v %v", r, ok)
	}
}

// fakePusher records what the registry pushes to "connected" agents.
type fakePusher struct {
	mu        sync.Mutex
	connected []string
	sent      map[string][]*wirev1.ServerControl
}

func (f *fakePusher) Push(id string, m *wirev1.ServerControl) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent[id] = append(f.sent[id], m)
	return nil
}

func (f *fakePusher) Connected() []string { return f.connected }

// count is the number of messages pushed to id (read under the lock: pushes run in the
// background).
func (f *fakePusher) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent[id])
}

func (f *fakePusher) withdrawals(id string) []*wirev1.ModelWithdrawal {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*wirev1.ModelWithdrawal
	for _, m := range f.sent[id] {
		if w := m.GetModelWithdrawal(); w != nil {
			out = append(out, w)
		}
	}
	return out
}

func (f *fakePusher) offers(id string) []*wirev1.ModelOffer {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*wirev1.ModelOffer
	for _, m := range f.sent[id] {
		if o := m.GetModelOffer(); o != nil {
			out = append(out, o)
		}
	}
	return out
}

type regEnv struct {
	t      *testing.T
	db     *store.DB
	reg    *Registry
	push   *fakePusher
	signer *sign.Signer
	dir    string
}

func newRegEnv(t *testing.T) *regEnv {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "vigil.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := signtest.NewSigner(t, sign.AlgEd25519)
	if err := signtest.Policy(t, 1, s).WriteFile(filepath.Join(dir, TrustFile)); err != nil {
		t.Fatal(err)
	}
	e := &regEnv{t: t, db: db, signer: s, dir: dir, push: &fakePusher{sent: map[string][]*wirev1.ServerControl{}}}
	e.reg = New(Config{DB: db, DataDir: dir, BundleDir: filepath.Join(dir, "bundles")})
	t.Cleanup(e.reg.bg.Wait) // before the store closes
	e.reg.SetPusher(e.push)
	for _, a := range []string{"a-1", "a-2", "a-3"} {
		e.addAgent(a, "alpha")
	}
	return e
}

// addAgent registers agent id of entity.
func (e *regEnv) addAgent(id, entity string) {
	e.t.Helper()
	if err := e.db.RegisterAgent(context.Background(), store.Agent{ID: id, Entity: entity, Hostname: id, CertSerial: id,
		EnrolledAt: time.Now(), CertNotAfter: time.Now().Add(time.Hour)}); err != nil {
		e.t.Fatal(err)
	}
}

// publish signs and publishes NAME@version (no smoke test) and returns its manifest and digest.
func (e *regEnv) publish(name string, version uint64) (bundle.Manifest, string) {
	e.t.Helper()
	m := signtest.Manifest(name, version, time.Now().Add(-time.Minute))
	p := signtest.WriteBundle(e.t, e.t.TempDir(), []byte(fmt.Sprintf("model %s %d", name, version)), m, e.signer)
	b, err := bundle.Read(p, bundle.DefaultLimits())
	if err != nil {
		e.t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := e.reg.Publish(context.Background(), bytes.NewReader(data), "release-eng", PublishOptions{NoSmoke: true})
	if err != nil {
		e.t.Fatal(err)
	}
	return b.Manifest, res.Model.Digest
}

func (e *regEnv) status(agent, rollout, digest, state, reason string) {
	e.t.Helper()
	st := &wirev1.ModelStatus{RolloutId: rollout, State: state, Reason: reason, Model: &wirev1.ModelRef{Name: "nf", Digest: digest}}
	if err := e.db.RecordModelStatus(context.Background(), agent, st); err != nil {
		e.t.Fatal(err)
	}
	e.reg.OnModelStatus(context.Background(), agent, st)
}

func summary(aEv, aAn, sEv, sAn uint64) string {
	return fmt.Sprintf(`{"batches":4,"active":{"events":%d,"anomalies":%d,"max_p50":0.01,"max_p90":0.02,"max_p99":0.03,"max":0.2},`+
		`"shadow":{"events":%d,"anomalies":%d,"max_p50":0.4,"max_p90":0.5,"max_p99":0.6,"max":0.9}}`, aEv, aAn, sEv, sAn)
}

// TestShadowRolloutHalts: shadow reports summed over the rollout's agents are judged at every
// report; the rollout halts once, with the verdict as its reason (persisted and audited by
// "system"), is no longer offered, its connected agents get a withdrawal, an agent connecting
// later gets it at Hello, and status keeps showing the reports that made it halt.
func TestShadowRolloutHalts(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	_, d2 := e.publish("nf", 2)
	e.push.connected = []string{"a-1", "a-2"}
	id, reached, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha", Shadow: true, HaltFactor: 3}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	if len(reached) != 2 || len(e.push.offers("a-1")) != 1 || !e.push.offers("a-1")[0].Shadow {
		t.Fatalf("shadow offer not pushed: reached %v", reached)
	}
	if _, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha", HaltFactor: 3}, "x"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("halt factor without shadow: %v", err)
	}

	// Not enough events yet, then a quiet shadow: stays active.
	e.status("a-1", id, d2, "shadow", summary(400, 2, 400, 40))
	e.status("a-2", id, d2, "shadow", summary(500, 0, 500, 1))
	st, err := e.reg.Status(ctx, id, "")
	if err != nil || len(st) != 1 {
		t.Fatal(st, err)
	}
	if st[0].State != "active" || st[0].ShadowTotals == nil || st[0].ShadowTotals.ShadowEvents != 900 || st[0].ShadowTotals.Verdict.Judged {
		t.Fatalf("before enough events: %+v %+v", st[0], st[0].ShadowTotals)
	}
	e.status("a-1", id, d2, "shadow", summary(5000, 20, 5000, 20))
	e.status("a-2", id, d2, "shadow", summary(5000, 0, 5000, 5))
	if ro, _ := e.db.RolloutByID(ctx, id); ro.State != "active" {
		t.Fatalf("quiet shadow halted: %s", ro.StateReason)
	}
	// Now a-2's shadow model goes wild: summed, shadow 10%+ vs active 0.2% x 3.
	e.status("a-2", id, d2, "shadow", summary(6000, 0, 6000, 1200))
	ro, err := e.db.RolloutByID(ctx, id)
	if err != nil || ro.State != "halted" || !strings.Contains(ro.StateReason, "exceeds 3 x active rate") {
		t.Fatalf("not halted: %+v %v", ro, err)
	}
	// Withdrawals reach both connected agents (sent in the background).
	deadline := time.Now().Add(5 * time.Second)
	for len(e.push.withdrawals("a-1")) == 0 || len(e.push.withdrawals("a-2")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no withdrawal pushed to the connected agents")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if w := e.push.withdrawals("a-1")[0]; w.RolloutId != id || w.GetModel().GetDigest() != d2 || !strings.Contains(w.Reason, "halted automatically") {
		t.Fatalf("withdrawal %+v", w)
	}
	// A later report changes nothing (one halt, one audit entry).
	e.status("a-1", id, d2, "shadow", summary(9000, 0, 9000, 9000))
	audit, err := e.db.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range audit {
		if a.Action == "rollout.halted" {
			n++
			if a.Actor != HaltActor || a.Target != id || !strings.Contains(a.Detail, "shadow alert rate") {
				t.Fatalf("audit entry %+v", a)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d rollout.halted audit entries, want 1", n)
	}
	// The agents report withdrawn; status still shows the halt and the reports that made it.
	e.status("a-1", id, d2, "withdrawn", "rollout withdrawn by the server: ...")
	e.status("a-2", id, d2, "withdrawn", "rollout withdrawn by the server: ...")
	st, err = e.reg.Status(ctx, id, "")
	if err != nil || len(st) != 1 {
		t.Fatal(st, err)
	}
	if st[0].State != "halted" || !strings.Contains(st[0].StateReason, "halted automatically") || st[0].ShadowTotals.ShadowAnomalies != 1220 {
		t.Fatalf("status of the halted rollout: %+v totals %+v", st[0], st[0].ShadowTotals)
	}
	for _, a := range st[0].Status {
		if a.AgentID != "a-3" && (a.State != "withdrawn" || len(a.Shadow) == 0) {
			t.Fatalf("agent status %+v: want withdrawn with the final shadow summary", a)
		}
	}
	if all, _ := e.reg.Status(ctx, "", ""); len(all) != 1 || all[0].State != "halted" {
		t.Fatalf("status of all rollouts: %+v", all)
	}
	// No longer offered; a-3 (offline at the halt, last reported "fetched") gets the
	// withdrawal at Hello, a-1 (settled: withdrawn) gets nothing.
	e.status("a-3", id, d2, "fetched", "")
	before1 := e.push.count("a-1")
	e.reg.OnHello("a-3", "alpha", nil)
	e.reg.OnHello("a-1", "alpha", nil)
	if len(e.push.offers("a-3")) != 0 || len(e.push.withdrawals("a-3")) != 1 {
		t.Fatalf("a-3 at Hello: %d offers, %d withdrawals", len(e.push.offers("a-3")), len(e.push.withdrawals("a-3")))
	}
	if e.push.count("a-1") != before1 {
		t.Fatal("settled agent got messages at Hello")
	}
	if reached := e.reg.PushPending(ctx); len(reached) != 0 {
		t.Fatalf("halted rollout still offered to %v", reached)
	}
}

// TestShadowResumesAfterRestart: shadow models run in memory only, so an agent that reported
// "shadow" and then restarted runs none. Its Hello lists the shadow rollouts it runs; the server
// offers a shadow rollout again to an agent that does not list it, and to no other: not to one
// that still runs it (a reconnect), not on a push to connected agents (no Hello), not for a
// halted rollout (withdrawn instead), and not for an ordinary rollout reported "active".
func TestShadowResumesAfterRestart(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	_, d2 := e.publish("nf", 2)
	_, d3 := e.publish("fa", 3)
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha", Shadow: true}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	ord, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "fa@3", Entity: "alpha"}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"a-1", "a-2"} {
		e.status(a, id, d2, "shadow", summary(10, 0, 10, 0))
		st := &wirev1.ModelStatus{RolloutId: ord, State: "active", Model: &wirev1.ModelRef{Name: "fa", Digest: d3}}
		if err := e.db.RecordModelStatus(ctx, a, st); err != nil {
			t.Fatal(err)
		}
	}
	shadowOffers := func(agent string) int {
		n := 0
		for _, o := range e.push.offers(agent) {
			if o.RolloutId == ord {
				t.Fatalf("%s: ordinary rollout reported active offered again: %+v", agent, o)
			}
			if o.RolloutId == id && o.Shadow && o.GetModel().GetDigest() == d2 {
				n++
			}
		}
		return n
	}
	// a-1 reconnects while its shadow model runs; a-2 restarted and runs none.
	e.reg.OnHello("a-1", "alpha", []string{id})
	e.reg.OnHello("a-2", "alpha", nil)
	if n := shadowOffers("a-1"); n != 0 {
		t.Fatalf("agent still running the shadow model got %d offers", n)
	}
	if n := shadowOffers("a-2"); n != 1 {
		t.Fatalf("restarted agent got %d offers of its shadow rollout, want 1", n)
	}
	// A shadow rollout the agent runs under another id does not count for this one.
	e.reg.OnHello("a-1", "alpha", []string{"r-other"})
	if n := shadowOffers("a-1"); n != 1 {
		t.Fatalf("agent running another shadow rollout got %d offers, want 1", n)
	}
	// A push to connected agents has no Hello: "shadow" stays final there.
	e.push.connected = []string{"a-1", "a-2"}
	before := shadowOffers("a-1") + shadowOffers("a-2")
	if reached := e.reg.PushPending(ctx); len(reached) != 0 {
		t.Fatalf("push to connected agents reached %v", reached)
	}
	if after := shadowOffers("a-1") + shadowOffers("a-2"); after != before {
		t.Fatalf("push to connected agents offered the shadow rollout again (%d -> %d)", before, after)
	}
	// Halted: the restarted agent gets the withdrawal, not the offer.
	if ok, err := e.db.HaltRollout(ctx, id, "release-eng", "enough", nil); err != nil || !ok {
		t.Fatal(ok, err)
	}
	before = shadowOffers("a-2")
	e.reg.OnHello("a-2", "alpha", nil)
	if shadowOffers("a-2") != before || len(e.push.withdrawals("a-2")) == 0 {
		t.Fatalf("halted shadow rollout at Hello: %d offers (was %d), %d withdrawals", shadowOffers("a-2"), before, len(e.push.withdrawals("a-2")))
	}
}

// TestRollbackRollout: the server verifies a rollback instruction against its trust policy and
// the model before accepting the rollout, stores it and sends it in the offers.
func TestRollbackRollout(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	m1, d1 := e.publish("nf", 1)
	e.publish("nf", 2)
	now := time.Now()
	valid, err := rollback.Sign(rollback.For(&m1, now, time.Hour, "v2 noisy"), e.signer)
	if err != nil {
		t.Fatal(err)
	}
	untrusted, _ := rollback.Sign(rollback.For(&m1, now, time.Hour, ""), signtest.NewSigner(t, sign.AlgEd25519))
	unsigned, _ := rollback.Sign(rollback.For(&m1, now, time.Hour, ""))
	m2 := m1
	m2.Version = 2
	forV2, _ := rollback.Sign(rollback.For(&m2, now, time.Hour, ""), e.signer)
	for _, c := range []struct {
		name  string
		instr []byte
		want  string
	}{
		{"untrusted", untrusted, "rollback instruction"},
		{"unsigned", unsigned, "rollback instruction"},
		{"garbage", []byte("nope"), "invalid rollback instruction"},
		{"another version", forV2, "names netflow nf@2"},
	} {
		_, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@1", Agents: []string{"a-1"}, RollbackInstruction: c.instr}, "x")
		if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	e.push.connected = []string{"a-1"}
	id, reached, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@1", Agents: []string{"a-1"}, RollbackInstruction: valid}, "release-eng")
	if err != nil || len(reached) != 1 {
		t.Fatalf("valid rollback rollout: %v %v", reached, err)
	}
	offers := e.push.offers("a-1")
	if len(offers) != 1 || !offers[0].Rollback || !bytes.Equal(offers[0].RollbackInstruction, valid) || offers[0].Model.Digest != d1 {
		t.Fatalf("offer %+v", offers)
	}
	st, _ := e.reg.Status(ctx, id, "")
	if len(st) != 1 || !st[0].Rollback {
		t.Fatalf("status %+v", st)
	}
	audit, _ := e.db.ListAudit(ctx, store.AuditFilter{})
	found := false
	for _, a := range audit {
		found = found || (a.Action == "rollout.create" && strings.Contains(a.Detail, "rollback"))
	}
	if !found {
		t.Fatal("rollback rollout not audited as such")
	}
}

// TestShadowResumesOlderAfterRefusal: an agent running shadow rollout S1 that refused a newer
// shadow rollout S2 of the same model keeps running S1. After a restart it is offered S1 again
// (S2 stays refused), not nothing.
func TestShadowResumesOlderAfterRefusal(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	_, d2 := e.publish("nf", 2)
	_, d3 := e.publish("nf", 3)
	s1, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha", Shadow: true}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	e.status("a-1", s1, d2, "shadow", summary(10, 0, 10, 0))
	e.status("a-2", s1, d2, "shadow", summary(10, 0, 10, 0))
	s2, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@3", Entity: "alpha", Shadow: true}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	e.status("a-1", s2, d3, "rejected", "plugin refused the model")
	e.status("a-2", s2, d3, "shadow", summary(10, 0, 10, 0))
	offers := func(agent string) map[string]int {
		n := map[string]int{}
		for _, o := range e.push.offers(agent) {
			n[o.RolloutId]++
		}
		return n
	}
	e.reg.OnHello("a-1", "alpha", nil) // restarted: runs no shadow model
	if got := offers("a-1"); got[s1] != 1 || got[s2] != 0 {
		t.Fatalf("restarted agent that refused S2: offers %v, want S1 (%s) once", got, s1)
	}
	e.reg.OnHello("a-1", "alpha", []string{s1}) // still running S1: nothing new
	if got := offers("a-1"); got[s1] != 1 || got[s2] != 0 {
		t.Fatalf("agent running S1: offers %v", got)
	}
	// a-2 accepted S2: S2 resumes, S1 (replaced by S2) does not.
	e.reg.OnHello("a-2", "alpha", nil)
	if got := offers("a-2"); got[s2] != 1 || got[s1] != 0 {
		t.Fatalf("restarted agent that accepted S2: offers %v, want S2 (%s) once", got, s2)
	}
}
