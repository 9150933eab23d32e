package update

import (
	"context"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models/bundle"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestWithdrawalOfAnActiveModel: a rollout halted by hand is withdrawn from
// the agents that have not activated it yet, and an agent may activate it
// just before the withdrawal arrives. The agent answered "withdrawn (no
// shadow model of it was running)", which replaced its "active" record on
// the server: the rollout's status said the agent did not run a model it
// ran. It keeps the model (a rollback rollout reverts it) and says so; a
// rollout it never installed is settled as withdrawn, without a word about
// shadow models.
func TestWithdrawalOfAnActiveModel(t *testing.T) {
	e := newEnv(t)
	u := e.updater(nil)
	p := e.bundle("nf", 1, nil, "model-1")
	dg, err := bundle.Digest(p)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := u.Install(context.Background(), Request{Path: p, RolloutID: "r1", Digest: dg}); err != nil || res.State != StateActive {
		t.Fatalf("install: %+v %v", res, err)
	}
	ref := &wirev1.ModelRef{Name: "nf", Version: 1, Digest: dg, Detector: "netflow"}
	u.processWithdrawal(context.Background(), &wirev1.ModelWithdrawal{RolloutId: "r1", Model: ref, Reason: "halted by hand"})
	if st, reason := e.lastState("r1"); st != StateActive || !strings.Contains(reason, "rollback") {
		t.Fatalf("withdrawal of the active model's rollout: last report %s %q, want active, pointing to a rollback", st, reason)
	}
	if got := e.loader.model; got.Version != 1 {
		t.Fatalf("the plugin runs %+v after the withdrawal", got)
	}

	other := &wirev1.ModelRef{Name: "nf", Version: 2, Digest: "sha256:" + strings.Repeat("ab", 32), Detector: "netflow"}
	u.processWithdrawal(context.Background(), &wirev1.ModelWithdrawal{RolloutId: "r2", Model: other, Reason: "halted by hand"})
	st, reason := e.lastState("r2")
	if st != StateWithdrawn || strings.Contains(reason, "shadow") {
		t.Fatalf("withdrawal of a rollout never installed: %s %q, want withdrawn, no word of shadow models", st, reason)
	}
}
