package store

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestHaltRolloutByUser: a rollout halted by hand keeps why, when and who (read back by
// RolloutByID, ActiveRollouts and ListRollouts) and is audited once as rollout.halt; halting it
// again is ErrConflict, an unknown rollout ErrNotFound, a reason with control characters or
// longer than the bound ErrInvalid. The automatic halt records "system" as who, and a halt by
// hand of a rollout it halted is ErrConflict naming it.
func TestHaltRolloutByUser(t *testing.T) {
	ctx := context.Background()
	db := openTest(t) // a real sqlite file in t.TempDir()
	registerTest(t, db, "a-1", "acme")
	m, err := db.InsertModel(ctx, Model{Name: "nf", Version: 2, Digest: "sha256:aa"}, "rel")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []RolloutSpec{{ID: "r-1", ModelID: m.ID, Entity: "acme"}, {ID: "r-2", ModelID: m.ID, Shadow: true, HaltFactor: 2}} {
		if err := db.CreateRollout(ctx, s, "rel"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		id, reason string
		want       error
	}{
		{"r-nope", "x", ErrNotFound},
		{"r-1", "line\nbreak", ErrInvalid},
		{"r-1", "\x1b[31mred", ErrInvalid},
		{"r-1", strings.Repeat("x", maxStatusReason+1), ErrInvalid},
	} {
		if err := db.HaltRolloutByUser(ctx, c.id, "ann", c.reason, nil); !errors.Is(err, c.want) {
			t.Errorf("halt %s %.20q: %v, want %v", c.id, c.reason, err, c.want)
		}
	}
	if err := db.HaltRolloutByUser(ctx, "r-1", "ann", "halted by hand: too noisy", nil); err != nil {
		t.Fatal(err)
	}
	err = db.HaltRolloutByUser(ctx, "r-1", "bob", "again", nil)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "already halted (by ann)") {
		t.Fatalf("second halt: %v", err)
	}
	ro, err := db.RolloutByID(ctx, "r-1")
	if err != nil || ro.State != "halted" || ro.StateReason != "halted by hand: too noisy" || ro.StateChangedBy != "ann" || ro.StateChangedAt.IsZero() {
		t.Fatalf("r-1: %+v %v", ro, err)
	}
	if act, _ := db.ActiveRollouts(ctx); len(act) != 1 || act[0].ID != "r-2" {
		t.Fatalf("active rollouts %+v", act)
	}
	// The automatic halt: "system"; a halt by hand afterwards is a conflict.
	if ok, err := db.HaltRollout(ctx, "r-2", "system", "halted automatically: ...", nil); !ok || err != nil {
		t.Fatalf("automatic halt: %v %v", ok, err)
	}
	if err := db.HaltRolloutByUser(ctx, "r-2", "ann", "", nil); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "by system") {
		t.Fatalf("halt by hand of an automatically halted rollout: %v", err)
	}
	if ok, err := db.HaltRollout(ctx, "r-1", "system", "late", nil); ok || err != nil {
		t.Fatalf("automatic halt of a rollout halted by hand: %v %v", ok, err)
	}
	rs, err := db.ListRollouts(ctx, RolloutFilter{})
	if err != nil || len(rs) != 2 {
		t.Fatal(rs, err)
	}
	for _, r := range rs {
		want := map[string][2]string{"r-1": {"halted by hand: too noisy", "ann"}, "r-2": {"halted automatically: ...", "system"}}[r.ID]
		if r.State != "halted" || r.StateReason != want[0] || r.StateChangedBy != want[1] || r.StateChangedAt.IsZero() {
			t.Errorf("listed %+v", r)
		}
	}
	audit, err := db.ListAudit(ctx, AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, a := range audit {
		if strings.HasPrefix(a.Action, "rollout.halt") {
			got[a.Action+" "+a.Actor+" "+a.Target+" "+a.Entity]++
		}
	}
	if len(got) != 2 || got["rollout.halt ann r-1 acme"] != 1 || got["rollout.halted system r-2 "] != 1 {
		t.Fatalf("halt audit entries %v", got)
	}
	if n, err := db.VerifyAudit(ctx); err != nil || n == 0 {
		t.Fatalf("audit chain: %d %v", n, err)
	}
}
