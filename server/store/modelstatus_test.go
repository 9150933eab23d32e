package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func modelStatus(rollout, digest, state, reason string) *wirev1.ModelStatus {
	return &wirev1.ModelStatus{RolloutId: rollout, State: state, Reason: reason, Model: &wirev1.ModelRef{Name: "nf", Digest: digest}}
}

// TestModelStatusPerRolloutMigration: migration 6 keys agent_model_status by rollout too and
// keeps the rows of a database at schema 5; afterwards an agent's reports about one bundle under
// two rollouts (a shadow rollout and the ordinary one that promoted it) are two rows.
func TestModelStatusPerRolloutMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.db")
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	old := &DB{w: w, log: slog.New(slog.DiscardHandler), path: path, now: time.Now}
	if err := old.migrateTo(ctx, 5); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO entities(name, created_at) VALUES ('acme', 1)`,
		`INSERT INTO agents(id, entity, enrolled_at) VALUES ('a-1', 'acme', 1), ('a-2', 'acme', 1)`,
		`INSERT INTO models(id, name, version, digest, created_at) VALUES (1, 'nf', 2, 'sha256:aa', 1), (2, 'nf', 3, 'sha256:bb', 1)`,
		`INSERT INTO rollouts(id, model_id, created_at, shadow) VALUES ('r-s', 1, 2, 1), ('r-o', 1, 3, 0), ('r-3', 2, 4, 0)`,
		`INSERT INTO agent_model_status(agent_id, rollout_id, model_digest, state, reason, time) VALUES
			('a-1', 'r-s', 'sha256:aa', 'shadow', '{}', 10), ('a-1', '', 'sha256:bb', 'rejected', 'old agent', 11),
			('a-2', 'r-o', 'sha256:aa', 'active', '', 12)`,
	} {
		if _, err := w.ExecContext(ctx, q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	w.Close()

	db, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got := func() string {
		t.Helper()
		sts, err := db.ModelStatuses(ctx, "", "")
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, s := range sts {
			fmt.Fprintf(&b, "%s %s %q %s %q %d; ", s.AgentID, s.Digest, s.RolloutID, s.State, s.Reason, s.Time.UnixNano())
		}
		return b.String()
	}
	want := `a-1 sha256:aa "r-s" shadow "{}" 10; a-1 sha256:bb "" rejected "old agent" 11; a-2 sha256:aa "r-o" active "" 12; `
	if g := got(); g != want {
		t.Fatalf("rows after migration:\n got %s\nwant %s", g, want)
	}
	// The promoted rollout's "active" and the shadow rollout's report are two records.
	if err := db.RecordModelStatus(ctx, "a-1", &wirev1.ModelStatus{RolloutId: "r-o", State: "active", TimeUnixNano: 20,
		Model: &wirev1.ModelRef{Digest: "sha256:aa"}}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordModelStatus(ctx, "a-1", &wirev1.ModelStatus{RolloutId: "r-s", State: "shadow", Reason: `{"n":2}`, TimeUnixNano: 21,
		Model: &wirev1.ModelRef{Digest: "sha256:aa"}}); err != nil {
		t.Fatal(err)
	}
	want = `a-1 sha256:aa "r-o" active "" 20; a-1 sha256:aa "r-s" shadow "{\"n\":2}" 21; a-1 sha256:bb "" rejected "old agent" 11; ` +
		`a-2 sha256:aa "r-o" active "" 12; `
	if g := got(); g != want {
		t.Fatalf("rows after two rollouts' reports:\n got %s\nwant %s", g, want)
	}
}

// TestRecordModelStatusKnownOnly: an agent's reports are kept only about what the registry
// knows (a known state, a published digest, no rollout or a rollout of that model), so that an
// agent cannot grow the table; the reason is cut to maxStatusReason bytes of valid UTF-8.
func TestRecordModelStatusKnownOnly(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	registerTest(t, db, "a-1", "acme")
	m1, err := db.InsertModel(ctx, Model{Name: "nf", Version: 2, Digest: "sha256:aa"}, "rel")
	if err != nil {
		t.Fatal(err)
	}
	m2, err := db.InsertModel(ctx, Model{Name: "nf", Version: 3, Digest: "sha256:bb"}, "rel")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []RolloutSpec{{ID: "r-1", ModelID: m1.ID, Entity: "acme"}, {ID: "r-2", ModelID: m2.ID, Entity: "acme"}} {
		if err := db.CreateRollout(ctx, s, "rel"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		st   *wirev1.ModelStatus
		want error
	}{
		{"unknown state", modelStatus("r-1", "sha256:aa", "pwned", ""), ErrInvalid},
		{"empty state", modelStatus("r-1", "sha256:aa", "", ""), ErrInvalid},
		{"no digest", modelStatus("r-1", "", "active", ""), ErrInvalid},
		{"unknown digest", modelStatus("", "sha256:cc", "active", ""), ErrNotFound},
		{"unknown digest, known rollout", modelStatus("r-1", "sha256:cc", "active", ""), ErrNotFound},
		{"unknown rollout", modelStatus("r-nope", "sha256:aa", "active", ""), ErrNotFound},
		{"rollout of another model", modelStatus("r-2", "sha256:aa", "active", ""), ErrNotFound},
		{"rollout id too long", modelStatus(strings.Repeat("r", 129), "sha256:aa", "active", ""), ErrInvalid},
	} {
		if err := db.RecordModelStatus(ctx, "a-1", c.st); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// A compromised agent making up digests and rollouts stores nothing.
	for i := range 200 {
		_ = db.RecordModelStatus(ctx, "a-1", modelStatus(fmt.Sprintf("r-%d", i), fmt.Sprintf("sha256:%064x", i), "active", ""))
	}
	if sts, err := db.ModelStatuses(ctx, "", ""); err != nil || len(sts) != 0 {
		t.Fatalf("refused reports stored: %v %v", sts, err)
	}
	long := strings.Repeat("é", 3000) // 6000 bytes
	for _, st := range []*wirev1.ModelStatus{
		modelStatus("r-1", "sha256:aa", "verified", ""),
		modelStatus("", "sha256:aa", "rejected", "no rollout named"),
		modelStatus("r-2", "sha256:bb", "rejected", long),
	} {
		if err := db.RecordModelStatus(ctx, "a-1", st); err != nil {
			t.Fatalf("%+v: %v", st, err)
		}
	}
	sts, err := db.ModelStatuses(ctx, "a-1", "")
	if err != nil || len(sts) != 3 {
		t.Fatalf("statuses %+v %v", sts, err)
	}
	for _, s := range sts {
		if len(s.Reason) > maxStatusReason || !utf8.ValidString(s.Reason) {
			t.Fatalf("reason of %s/%s: %d bytes, valid UTF-8 %v", s.Digest, s.RolloutID, len(s.Reason), utf8.ValidString(s.Reason))
		}
	}
}
