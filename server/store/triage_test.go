package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func TestTriageAndSuppressions(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	if _, err := db.InsertFindings(ctx, "a-1", "acme", mkFindings(1, 3, "netflow")); err != nil {
		t.Fatal(err)
	}
	fs, err := db.ListFindings(ctx, FindingFilter{Ascending: true})
	if err != nil || len(fs) != 3 {
		t.Fatalf("%d %v", len(fs), err)
	}
	if fs[0].Status != StatusNew || fs[0].ID > fs[1].ID {
		t.Fatalf("status %q, order %d %d", fs[0].Status, fs[0].ID, fs[1].ID)
	}
	id := fs[0].ID
	bad := []Triage{{}, {Status: ptr("closed")}, {Assignee: ptr(string(make([]byte, 65)))}, {Comment: string([]byte{0xff})}}
	for _, tr := range bad {
		if _, err := db.TriageFinding(ctx, id, tr, "ann"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", tr, err)
		}
	}
	if _, err := db.TriageFinding(ctx, 999, Triage{Status: ptr(StatusResolved)}, "ann"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown finding: %v", err)
	}
	f, err := db.TriageFinding(ctx, id, Triage{Status: ptr(StatusAcknowledged), Assignee: ptr("bob")}, "ann")
	if err != nil || f.Status != StatusAcknowledged || f.Assignee != "bob" {
		t.Fatalf("%+v %v", f, err)
	}
	f, err = db.TriageFinding(ctx, id, Triage{Status: ptr(StatusFalsePositive), Comment: "backup job"}, "ann")
	if err != nil || f.Status != StatusFalsePositive || f.Assignee != "bob" {
		t.Fatalf("%+v %v", f, err)
	}
	// A second false positive with the same context adds no duplicate.
	if _, err := db.TriageFinding(ctx, fs[1].ID, Triage{Status: ptr(StatusFalsePositive)}, "ann"); err != nil {
		t.Fatal(err)
	}
	sups, err := db.ListSuppressions(ctx, SuppressionFilter{Entity: "acme", Active: true})
	if err != nil || len(sups) != 1 {
		t.Fatalf("suppressions %+v %v", sups, err)
	}
	s := sups[0]
	if s.Detector != "netflow" || s.DstIP != "10.0.0.2" || s.DstPort != 22 || s.FindingID != id || s.Comment != "backup job" {
		t.Errorf("suppression %+v", s)
	}
	if !s.Matches("netflow", FindingContext{SrcIP: "10.0.0.1", DstIP: "10.0.0.2", DstPort: 22, SrcPort: 5, Proto: "TCP"}) ||
		s.Matches("netflow", FindingContext{SrcIP: "10.0.0.1", DstIP: "10.0.0.2", DstPort: 23, Proto: "tcp"}) ||
		s.Matches("fileactivity", FindingContext{SrcIP: "10.0.0.1", DstIP: "10.0.0.2", DstPort: 22, Proto: "tcp"}) {
		t.Error("Matches")
	}
	if got, _ := db.ListSuppressions(ctx, SuppressionFilter{Entity: "beta"}); len(got) != 0 {
		t.Errorf("beta sees %+v", got)
	}
	// Reopening lifts it.
	if _, err := db.TriageFinding(ctx, id, Triage{Status: ptr(StatusNew)}, "ann"); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.ListSuppressions(ctx, SuppressionFilter{Active: true}); len(got) != 0 {
		t.Errorf("still active: %+v", got)
	}
	notes, err := db.FindingNotes(ctx, id)
	if err != nil || len(notes) != 3 || notes[1].Comment != "backup job" || notes[0].Assignee != "bob" {
		t.Fatalf("notes %+v %v", notes, err)
	}
	if got, _ := db.ListFindings(ctx, FindingFilter{Status: StatusFalsePositive}); len(got) != 1 || got[0].ID != fs[1].ID {
		t.Errorf("status filter: %+v", got)
	}
	if got, _ := db.ListFindings(ctx, FindingFilter{AfterID: id, Limit: 1}); len(got) != 1 || got[0].ID != fs[1].ID {
		t.Errorf("after: %+v", got)
	}
	if n, err := db.VerifyAudit(ctx); err != nil || n < 6 {
		t.Errorf("audit %d %v", n, err)
	}
	es, _ := db.ListAudit(ctx, AuditFilter{Entity: "acme"})
	acts := map[string]int{}
	for _, e := range es {
		acts[e.Action]++
	}
	if acts["finding.triage"] != 4 || acts["suppression.create"] != 1 || acts["suppression.lift"] != 1 {
		t.Errorf("audit actions %v", acts)
	}
}

func TestStatsCursorsRollouts(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	if _, err := db.InsertFindings(ctx, "a-1", "acme", mkFindings(1, 10, "netflow")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.InsertFindings(ctx, "b-1", "beta", mkFindings(1, 4, "fileactivity")); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st, err := db.FindingStats(ctx, StatsFilter{Since: base, Until: base.Add(time.Minute), Bucket: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, b := range st {
		total += b.Count
		if b.Start.Before(base) || (b.Start.Sub(base))%(5*time.Second) != 0 {
			t.Errorf("bucket start %v", b.Start)
		}
	}
	if total != 14 {
		t.Errorf("total %d, want 14: %+v", total, st)
	}
	st, _ = db.FindingStats(ctx, StatsFilter{Entity: "beta", Since: base, Until: base.Add(time.Minute), Bucket: time.Minute})
	if len(st) != 1 || st[0].Count != 4 || st[0].Entity != "beta" {
		t.Errorf("beta stats %+v", st)
	}
	if _, err := db.FindingStats(ctx, StatsFilter{Since: base, Until: base.Add(time.Hour), Bucket: time.Millisecond}); !errors.Is(err, ErrInvalid) {
		t.Errorf("too many buckets: %v", err)
	}

	if c, err := db.ForwarderCursor(ctx, "siem"); c != 0 || err != nil {
		t.Fatalf("%d %v", c, err)
	}
	for _, v := range []int64{5, 9, 3} {
		if err := db.SetForwarderCursor(ctx, "siem", v); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := db.ForwarderCursor(ctx, "siem"); c != 9 {
		t.Errorf("cursor %d, want 9 (never moves back)", c)
	}
	if m, _ := db.MaxFindingID(ctx); m != 14 {
		t.Errorf("max id %d", m)
	}

	// Rollouts: written directly (the registry's writer lives elsewhere).
	for _, a := range []Agent{{ID: "a-1", Entity: "acme"}, {ID: "b-1", Entity: "beta"}} {
		if err := db.RegisterAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		`INSERT INTO models(id, name, version, digest, signers, created_at) VALUES (1, 'netflow-ae', 3, 'sha256:ab', '["k1"]', 1)`,
		`INSERT INTO rollouts(id, model_id, entity, created_at) VALUES ('r-all', 1, '', 2), ('r-beta', 1, 'beta', 3)`,
		`INSERT INTO agent_model_status(agent_id, rollout_id, model_digest, state, time) VALUES
			('a-1', 'r-all', 'sha256:ab', 'active', 1), ('b-1', 'r-all', 'sha256:ab', 'rejected', 1)`,
	} {
		if _, err := db.w.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := db.ListRollouts(ctx, RolloutFilter{Entity: "acme"})
	if err != nil || len(rs) != 1 || rs[0].ID != "r-all" || rs[0].Progress["active"] != 1 || rs[0].Progress["rejected"] != 0 {
		t.Fatalf("acme rollouts %+v %v", rs, err)
	}
	rs, _ = db.ListRollouts(ctx, RolloutFilter{})
	if len(rs) != 2 || rs[1].Progress["rejected"] != 1 {
		t.Errorf("all rollouts %+v", rs)
	}
	m, err := db.ModelByDigest(ctx, "sha256:ab")
	if err != nil || string(m.Signers) != `["k1"]` {
		t.Errorf("model %+v %v", m, err)
	}
	if ms, _ := db.ListModels(ctx); len(ms) != 1 {
		t.Errorf("models %+v", ms)
	}
}

func TestActiveSuppressions(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	set, err := db.ActiveSuppressions(ctx, "acme", 0)
	if err != nil || len(set.Items) != 0 || set.Active != 0 || set.Generation != 0 {
		t.Fatalf("empty: %+v %v", set, err)
	}
	// Three findings with different destination ports: three suppressions.
	fs := mkFindings(1, 3, "netflow")
	for i, f := range fs {
		f.Context.DstPort = uint32(100 + i)
	}
	if _, err := db.InsertFindings(ctx, "a-1", "acme", fs); err != nil {
		t.Fatal(err)
	}
	if _, err := db.InsertFindings(ctx, "b-1", "beta", mkFindings(1, 1, "netflow")); err != nil {
		t.Fatal(err)
	}
	all, err := db.ListFindings(ctx, FindingFilter{Entity: "acme", Ascending: true})
	if err != nil || len(all) != 3 {
		t.Fatalf("%d %v", len(all), err)
	}
	var gens []uint64
	for _, f := range all {
		if _, err := db.TriageFinding(ctx, f.ID, Triage{Status: ptr(StatusFalsePositive)}, "ann"); err != nil {
			t.Fatal(err)
		}
		set, err := db.ActiveSuppressions(ctx, "acme", 0)
		if err != nil {
			t.Fatal(err)
		}
		gens = append(gens, set.Generation)
	}
	set, err = db.ActiveSuppressions(ctx, "acme", 2)
	if err != nil || set.Active != 3 || len(set.Items) != 2 || set.Items[0].DstPort != 102 || set.Items[1].DstPort != 101 {
		t.Fatalf("limited: %+v %v", set, err)
	}
	if _, err := db.TriageFinding(ctx, all[2].ID, Triage{Status: ptr(StatusResolved)}, "ann"); err != nil {
		t.Fatal(err)
	}
	set, err = db.ActiveSuppressions(ctx, "acme", 0)
	if err != nil || set.Active != 2 || len(set.Items) != 2 || set.Items[0].DstPort != 101 {
		t.Fatalf("after lift: %+v %v", set, err)
	}
	gens = append(gens, set.Generation)
	for i := 1; i < len(gens); i++ {
		if gens[i] <= gens[i-1] {
			t.Fatalf("generations %v not increasing", gens)
		}
	}
	if other, err := db.ActiveSuppressions(ctx, "beta", 0); err != nil || len(other.Items) != 0 || other.Generation != 0 {
		t.Fatalf("beta: %+v %v", other, err)
	}
}
