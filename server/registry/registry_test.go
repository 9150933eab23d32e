package registry

import (
	"fmt"
	"testing"

	"github.com/vigil-edge/vigil/server/store"
)

func TestInCanaryStable(t *testing.T) {
	var five, ten []string
	for i := range 2000 {
		id := fmt.Sprintf("a-%012x", i*7919)
		if InCanary(id, "netflow", 5) {
			five = append(five, id)
			if !InCanary(id, "netflow", 10) {
				t.Fatalf("%s in the 5%% canary but not in the 10%% one", id)
			}
		}
		if InCanary(id, "netflow", 10) {
			ten = append(ten, id)
		}
		if InCanary(id, "netflow", 5) != InCanary(id, "netflow", 5) {
			t.Fatal("not deterministic")
		}
	}
	if n := len(five); n < 60 || n > 140 {
		t.Fatalf("5%% of 2000 chose %d agents", n)
	}
	if n := len(ten); n < 150 || n > 250 {
		t.Fatalf("10%% of 2000 chose %d agents", n)
	}
	if InCanary("a-1", "x", 0) || !InCanary("a-1", "x", 100) {
		t.Fatal("0% / 100% bounds")
	}
}

func TestTargets(t *testing.T) {
	ro := &store.RolloutRecord{Rollout: store.Rollout{Entity: "alpha", Model: store.ModelRef{Name: "nf"}}}
	if !Targets(ro, "a-1", "alpha") || Targets(ro, "a-1", "beta") {
		t.Fatal("entity target")
	}
	ro = &store.RolloutRecord{Agents: []string{"a-2"}}
	if Targets(ro, "a-1", "alpha") || !Targets(ro, "a-2", "beta") {
		t.Fatal("agent list target")
	}
}

func TestOffersFor(t *testing.T) {
	r := New(Config{})
	rs := []store.RolloutRecord{
		{Rollout: store.Rollout{ID: "r1", Entity: "alpha", Model: store.ModelRef{Name: "nf", Version: 2, Digest: "d2"}}, Size: 10},
		{Rollout: store.Rollout{ID: "r2", Entity: "alpha", Model: store.ModelRef{Name: "nf", Version: 3, Digest: "d3"}}, Size: 10},
	}
	o := r.offersFor(rs, "a-1", "alpha", nil, nil)
	if len(o) != 1 || o[0].RolloutId != "r2" {
		t.Fatalf("newest rollout per model: %v", o)
	}
	if o := r.offersFor(rs, "a-1", "alpha", indexStatuses([]store.AgentModelStatus{{Digest: "d3", RolloutID: "r2", State: "rejected"}}), map[string]bool{}); len(o) != 0 {
		t.Fatalf("a rejected bundle is offered again: %v", o)
	}
	if o := r.offersFor(rs, "a-1", "alpha", indexStatuses([]store.AgentModelStatus{{Digest: "d3", RolloutID: "r2", State: "fetched"}}), nil); len(o) != 1 {
		t.Fatalf("an unfinished offer is not repeated: %v", o)
	}
	// A new rollout of a bundle refused under an older rollout is offered (e.g. with a
	// rollback instruction this time).
	if o := r.offersFor(rs, "a-1", "alpha", indexStatuses([]store.AgentModelStatus{{Digest: "d3", RolloutID: "r0", State: "rejected"}}), nil); len(o) != 1 {
		t.Fatalf("a new rollout of a refused bundle is not offered: %v", o)
	}
}

func TestParseModelRef(t *testing.T) {
	for _, s := range []string{"", "nf", "nf@", "nf@0", "@3", "nf@x"} {
		if _, _, err := ParseModelRef(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	if n, v, err := ParseModelRef("nf@12"); err != nil || n != "nf" || v != 12 {
		t.Fatal(n, v, err)
	}
}

func FuzzParseModelRef(f *testing.F) {
	f.Add("nf@3")
	f.Fuzz(func(t *testing.T, s string) { _, _, _ = ParseModelRef(s) })
}
