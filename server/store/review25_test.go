package store

import (
	"context"
	"testing"
	"time"
)

// TestRolloutsInCreationOrder: rollouts are listed in the order they were
// created, whatever the wall clock said. The registry offers the last one
// of a model name as the newest; ordered by created_at, a rollout created
// after the server's clock stepped back (NTP, a restored VM) sorted before
// the older ones, and was never offered: e.g. an urgent rollback rollout
// lost behind the rollout it was to undo.
func TestRolloutsInCreationOrder(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	m, err := db.InsertModel(ctx, Model{Name: "nethost", Version: 7, Detector: "netflow", Digest: "sha256:" + hex64('a')}, "rel")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	db.now = func() time.Time { return t0 }
	if err := db.CreateRollout(ctx, RolloutSpec{ID: "r-first", ModelID: m.ID, Entity: "e1"}, "rel"); err != nil {
		t.Fatal(err)
	}
	db.now = func() time.Time { return t0.Add(-time.Hour) } // the clock stepped back
	if err := db.CreateRollout(ctx, RolloutSpec{ID: "r-second", ModelID: m.ID, Entity: "e1"}, "rel"); err != nil {
		t.Fatal(err)
	}
	for name, list := range map[string]func() ([]RolloutRecord, error){
		"ActiveRollouts":   func() ([]RolloutRecord, error) { return db.ActiveRollouts(ctx) },
		"RolloutsInStates": func() ([]RolloutRecord, error) { return db.RolloutsInStates(ctx, "active", "halted") },
	} {
		rs, err := list()
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 2 || rs[0].ID != "r-first" || rs[1].ID != "r-second" {
			var ids []string
			for _, r := range rs {
				ids = append(ids, r.ID)
			}
			t.Errorf("%s: %v, want [r-first r-second] (creation order)", name, ids)
		}
	}
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}

// TestListRolloutsNewestCreatedFirst: the API's rollout list shows the
// rollout created last first, whatever the wall clock said.
func TestListRolloutsNewestCreatedFirst(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	m, err := db.InsertModel(ctx, Model{Name: "nethost", Version: 7, Detector: "netflow", Digest: "sha256:" + hex64('b')}, "rel")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	db.now = func() time.Time { return t0 }
	if err := db.CreateRollout(ctx, RolloutSpec{ID: "r-first", ModelID: m.ID, Entity: "e1"}, "rel"); err != nil {
		t.Fatal(err)
	}
	db.now = func() time.Time { return t0.Add(-time.Hour) }
	if err := db.CreateRollout(ctx, RolloutSpec{ID: "r-second", ModelID: m.ID, Entity: "e1"}, "rel"); err != nil {
		t.Fatal(err)
	}
	rs, err := db.ListRollouts(ctx, RolloutFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].ID != "r-second" || rs[1].ID != "r-first" {
		t.Fatalf("ListRollouts: %+v, want r-second, then r-first", rs)
	}
}
