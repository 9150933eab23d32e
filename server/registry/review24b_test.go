package registry

import (
	"context"
	"testing"
)

// TestHaltRuleJudgesTargetedAgentsOnly: the halt rule and the shadow totals count the latest
// shadow report of each agent the rollout targets, not those of other agents. A report naming
// no rollout (accepted for any published digest, and standing for every rollout of the bundle)
// from an agent outside the rollout's target, or the last report of an agent revoked since,
// must neither halt the rollout nor show in its totals.
func TestHaltRuleJudgesTargetedAgentsOnly(t *testing.T) {
	ctx := context.Background()
	e := newRegEnv(t)
	e.addAgent("b-1", "beta")
	_, d2 := e.publish("nf", 2)
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha", Shadow: true, HaltFactor: 3}, "x")
	if err != nil {
		t.Fatal(err)
	}
	halted := func() bool {
		t.Helper()
		ro, err := e.db.RolloutByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ro.State == "halted"
	}
	// a-3 (targeted) reports a wild shadow model, then is revoked: its report goes with it.
	e.status("a-3", id, d2, "shadow", summary(600, 0, 600, 600))
	if err := e.db.RevokeAgent(ctx, "a-3", "admin"); err != nil {
		t.Fatal(err)
	}
	// b-1 is in another entity: not targeted. Its report names no rollout.
	e.status("b-1", "", d2, "shadow", summary(5000, 0, 5000, 5000))
	// a-1 (targeted) reports a quiet shadow model: the rollout must stay active.
	e.status("a-1", id, d2, "shadow", summary(5000, 0, 5000, 5))
	if halted() {
		ro, _ := e.db.RolloutByID(ctx, id)
		t.Fatalf("halted by reports of agents the rollout does not target: %s", ro.StateReason)
	}
	st := e.statusOf(id, "")
	if st.ShadowTotals.Agents != 1 || st.ShadowTotals.ShadowEvents != 5000 || st.ShadowTotals.ShadowAnomalies != 5 {
		t.Fatalf("shadow totals count agents not targeted: %+v", st.ShadowTotals)
	}
	// A targeted agent's own wild report still halts it.
	e.status("a-2", id, d2, "shadow", summary(5000, 0, 5000, 5000))
	if !halted() {
		t.Fatal("a targeted agent's report did not halt the rollout")
	}
}
