package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func openTest(t testing.TB) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "vigil.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mkFindings(first, n uint64, detector string) []*wirev1.Finding {
	out := make([]*wirev1.Finding, 0, n)
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()
	for i := range n {
		seq := first + i
		out = append(out, &wirev1.Finding{
			Seq: seq, Detector: detector, TimeUnixNano: base + int64(seq)*int64(time.Second),
			Count: 3, Severity: wirev1.Severity(1 + seq%4), Score: 1.5, Threshold: 0.7,
			Model:   &wirev1.ModelRef{Name: "netflow-ae", Version: 3, Digest: "sha256:ab"},
			Context: &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", SrcPort: 40000, DstPort: 22, Proto: "tcp"},
			TopFeatures: []*wirev1.FeatureContribution{
				{Name: "dst_port_entropy", Contribution: 0.6}, {Name: "syn_ratio", Contribution: 0.3}},
			Summary: fmt.Sprintf("finding %d", seq),
		})
	}
	return out
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.db")
	for i := range 3 {
		db, err := Open(ctx, path, nil)
		if err != nil {
			t.Fatalf("open #%d: %v", i, err)
		}
		var n, v int
		if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&n, &v); err != nil {
			t.Fatal(err)
		}
		if n != len(migrations) || v != SchemaVersion() {
			t.Fatalf("open #%d: %d migrations recorded, version %d", i, n, v)
		}
		var mode string
		if err := db.w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
			t.Fatalf("journal_mode = %q, %v", mode, err)
		}
		var sync, fk int
		if err := db.w.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil || sync != 2 {
			t.Fatalf("synchronous = %d, %v (want 2 = FULL)", sync, err)
		}
		if err := db.w.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
			t.Fatalf("foreign_keys = %d, %v", fk, err)
		}
		if i == 0 {
			if _, err := db.CreateEnrollToken(ctx, "acme", time.Hour, "test"); err != nil {
				t.Fatal(err)
			}
		}
		toks, err := db.ListEnrollTokens(ctx, "")
		if err != nil || len(toks) != 1 {
			t.Fatalf("tokens after reopen: %v, %v", toks, err)
		}
		db.Close()
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.db")
	db, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.w.ExecContext(ctx, `INSERT INTO schema_migrations VALUES (999, 'future', 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(ctx, path, nil); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("open of a newer schema: %v", err)
	}
}

func TestEnrollTokens(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	now := time.Now()
	good, err := db.CreateEnrollToken(ctx, "acme", time.Hour, "admin")
	if err != nil {
		t.Fatal(err)
	}
	short, err := db.CreateEnrollToken(ctx, "acme", time.Minute, "admin")
	if err != nil {
		t.Fatal(err)
	}
	// Same id, other secret.
	wrong := good[:len(good)-5] + func() string {
		if strings.HasSuffix(good, "AAAAA") {
			return "BBBBB"
		}
		return "AAAAA"
	}()

	if _, err := db.CreateEnrollToken(ctx, "Bad Entity", time.Hour, "admin"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad entity: %v", err)
	}
	if _, err := db.CreateEnrollToken(ctx, "acme", 0, "admin"); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero ttl: %v", err)
	}

	tests := []struct {
		name    string
		tok     string
		now     time.Time
		wantErr bool
	}{
		{"malformed", "vge_nope", now, true},
		{"empty", "", now, true},
		{"user token kind", "vgu" + good[3:], now, true},
		{"wrong secret", wrong, now, true},
		{"expired", short, now.Add(2 * time.Minute), true},
		{"good", good, now, false},
		{"reused", good, now, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ent, err := db.ConsumeEnrollToken(ctx, tc.tok, tc.now)
			if tc.wantErr {
				if !errors.Is(err, ErrTokenInvalid) {
					t.Fatalf("got %q, %v; want ErrTokenInvalid", ent, err)
				}
				return
			}
			if err != nil || ent != "acme" {
				t.Fatalf("got %q, %v", ent, err)
			}
		})
	}
}

func TestEnrollTokenConcurrentConsume(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	tok, err := db.CreateEnrollToken(ctx, "acme", time.Hour, "admin")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := db.ConsumeEnrollToken(ctx, tok, time.Now()); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d consumers succeeded, want 1", ok)
	}
}

func registerTest(t *testing.T, db *DB, id, entity string) {
	t.Helper()
	err := db.RegisterAgent(context.Background(), Agent{ID: id, Entity: entity, Hostname: "h-" + id,
		CertSerial: "0A" + id, CertNotAfter: time.Now().Add(30 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAgentsAndRevocation(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	registerTest(t, db, "a-1", "acme")
	registerTest(t, db, "a-2", "acme")
	registerTest(t, db, "b-1", "beta")
	if err := db.RegisterAgent(ctx, Agent{ID: "a-1", Entity: "acme"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate agent: %v", err)
	}
	if err := db.RecordCert(ctx, "a-1", "FF01", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordCert(ctx, "nope", "FF02", time.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cert of unknown agent: %v", err)
	}
	st := AgentState{Version: "1.2.3", Hostname: "sensor-1", StatusJSON: `{"x":1}`,
		Spool: SpoolStats{Depth: 5, Dropped: 2}, Counters: map[string]uint64{"captured": 99}}
	if err := db.TouchAgent(ctx, "a-1", time.Now(), st); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchAgent(ctx, "nope", time.Now(), st); !errors.Is(err, ErrNotFound) {
		t.Fatalf("touch unknown: %v", err)
	}
	a, err := db.GetAgent(ctx, "a-1")
	if err != nil {
		t.Fatal(err)
	}
	if a.Version != "1.2.3" || a.Hostname != "sensor-1" || a.CertSerial != "ff01" || a.Counters["captured"] != 99 ||
		a.LastSeen.IsZero() || !strings.Contains(string(a.State), `"dropped":2`) || !strings.Contains(string(a.State), `"x":1`) {
		t.Fatalf("agent after touch: %+v state %s", a, a.State)
	}

	rev, err := db.RevokedAgents(ctx)
	if err != nil || len(rev) != 0 {
		t.Fatalf("revoked before: %v %v", rev, err)
	}
	if err := db.RevokeAgent(ctx, "a-2", "admin"); err != nil {
		t.Fatal(err)
	}
	if err := db.RevokeAgent(ctx, "a-2", "admin"); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	if err := db.RevokeAgent(ctx, "zzz", "admin"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	rev, err = db.RevokedAgents(ctx)
	if err != nil || len(rev) != 1 || !rev["a-2"] {
		t.Fatalf("revoked after: %v %v", rev, err)
	}
	var revokedCerts int
	db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM certificates WHERE revoked = 1`).Scan(&revokedCerts)
	if revokedCerts != 1 {
		t.Fatalf("%d revoked certificates, want 1", revokedCerts)
	}
	as, err := db.ListAgents(ctx, AgentFilter{Entity: "acme"})
	if err != nil || len(as) != 2 || as[0].ID != "a-1" || !as[1].Revoked() {
		t.Fatalf("list acme: %+v %v", as, err)
	}
	as, _ = db.ListAgents(ctx, AgentFilter{})
	if len(as) != 3 {
		t.Fatalf("list all: %d", len(as))
	}
	if _, err := db.GetAgent(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}
	ents, _ := db.ListEntities(ctx)
	if strings.Join(ents, ",") != "acme,beta" {
		t.Fatalf("entities %v", ents)
	}
}

func TestFindingsDedup(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	registerTest(t, db, "a-1", "acme")
	n, err := db.InsertFindings(ctx, "a-1", "acme", mkFindings(1, 100, "netflow"))
	if err != nil || n != 100 {
		t.Fatalf("first batch: %d, %v", n, err)
	}
	// Re-send of the whole batch, then an overlapping batch.
	n, err = db.InsertFindings(ctx, "a-1", "acme", mkFindings(1, 100, "netflow"))
	if err != nil || n != 0 {
		t.Fatalf("re-send: %d, %v", n, err)
	}
	n, err = db.InsertFindings(ctx, "a-1", "acme", mkFindings(51, 100, "netflow"))
	if err != nil || n != 50 {
		t.Fatalf("overlap: %d, %v", n, err)
	}
	// Same seqs from another agent are distinct.
	n, err = db.InsertFindings(ctx, "b-1", "beta", mkFindings(1, 10, "fileactivity"))
	if err != nil || n != 10 {
		t.Fatalf("other agent: %d, %v", n, err)
	}
	if c, _ := db.CountFindings(ctx, "a-1"); c != 150 {
		t.Fatalf("count a-1 = %d", c)
	}
	if c, _ := db.CountFindings(ctx, ""); c != 160 {
		t.Fatalf("count all = %d", c)
	}
	if _, err := db.InsertFindings(ctx, "a-1", "acme", []*wirev1.Finding{{Seq: 1 << 63}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("huge seq: %v", err)
	}
	if _, err := db.InsertFindings(ctx, "a-1", "acme", []*wirev1.Finding{nil}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil finding: %v", err)
	}
	if n, err := db.InsertFindings(ctx, "a-1", "acme", nil); n != 0 || err != nil {
		t.Fatalf("empty batch: %d %v", n, err)
	}
}

func TestFindingsFilterAndRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	db.InsertFindings(ctx, "a-1", "acme", mkFindings(1, 20, "netflow"))
	db.InsertFindings(ctx, "a-2", "acme", mkFindings(1, 20, "fileactivity"))
	db.InsertFindings(ctx, "b-1", "beta", mkFindings(1, 20, "netflow"))
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	all, err := db.ListFindings(ctx, FindingFilter{Limit: 1000})
	if err != nil || len(all) != 60 {
		t.Fatalf("all: %d %v", len(all), err)
	}
	f := all[len(all)-1] // oldest: a-1 seq 1
	if f.AgentID != "a-1" || f.Seq != 1 || f.Entity != "acme" || f.Severity != "medium" || f.Score != 1.5 ||
		f.Model.Name != "netflow-ae" || f.Model.Version != 3 || f.Context.DstPort != 22 || len(f.TopFeatures) != 2 ||
		f.TopFeatures[0].Name != "dst_port_entropy" || !f.Time.Equal(base.Add(time.Second)) || !f.FirstSeen.Equal(f.Time) ||
		f.Summary != "finding 1" || f.Count != 3 {
		t.Fatalf("round trip: %+v", f)
	}
	g, err := db.GetFinding(ctx, f.ID)
	if err != nil || g.Summary != f.Summary {
		t.Fatalf("get: %+v %v", g, err)
	}
	if _, err := db.GetFinding(ctx, 99999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}

	tests := []struct {
		name string
		f    FindingFilter
		want int
	}{
		{"entity", FindingFilter{Entity: "acme"}, 40},
		{"entity+detector", FindingFilter{Entity: "acme", Detector: "netflow"}, 20},
		{"agent", FindingFilter{AgentID: "a-2"}, 20},
		{"agent of other entity", FindingFilter{AgentID: "b-1", Entity: "acme"}, 0},
		{"since", FindingFilter{Since: base.Add(11 * time.Second)}, 30},
		{"until", FindingFilter{Until: base.Add(11 * time.Second)}, 30},
		{"severity critical", FindingFilter{MinSeverity: wirev1.Severity_SEVERITY_CRITICAL}, 15},
		{"severity high+", FindingFilter{MinSeverity: wirev1.Severity_SEVERITY_HIGH}, 30},
		{"limit", FindingFilter{Limit: 7}, 7},
		{"injection", FindingFilter{Entity: "acme' OR '1'='1"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := db.ListFindings(ctx, tc.f)
			if err != nil || len(got) != tc.want {
				t.Fatalf("got %d, %v; want %d", len(got), err, tc.want)
			}
		})
	}

	// Cursor paging walks everything exactly once, newest first.
	seen := map[int64]bool{}
	var cursor int64
	for {
		page, err := db.ListFindings(ctx, FindingFilter{Limit: 7, BeforeID: cursor})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, f := range page {
			if seen[f.ID] || (cursor > 0 && f.ID >= cursor) {
				t.Fatalf("paging: %d repeated or out of order", f.ID)
			}
			seen[f.ID] = true
		}
		cursor = page[len(page)-1].ID
	}
	if len(seen) != 60 {
		t.Fatalf("paging saw %d", len(seen))
	}
}

func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	const agents, batches, per = 20, 5, 50
	var wg sync.WaitGroup
	errs := make(chan error, agents)
	for a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("a-%d", a)
			for b := range batches {
				// Each batch is sent twice (a re-send after a lost ack).
				for range 2 {
					if _, err := db.InsertFindings(ctx, id, "acme", mkFindings(uint64(b*per+1), per, "netflow")); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	// Readers run alongside.
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	for range 2 {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := db.ListFindings(ctx, FindingFilter{Entity: "acme", Limit: 50}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n, _ := db.CountFindings(ctx, ""); n != agents*batches*per {
		t.Fatalf("stored %d, want %d", n, agents*batches*per)
	}
}

func TestUsers(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	tok, err := db.CreateUser(ctx, "alice", RoleAdmin, "", "init")
	if err != nil {
		t.Fatal(err)
	}
	u, err := db.Authenticate(ctx, tok)
	if err != nil || u.Name != "alice" || u.Role != RoleAdmin {
		t.Fatalf("auth: %+v %v", u, err)
	}
	if _, err := db.CreateUser(ctx, "alice", RoleAnalyst, "", "init"); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range [][3]string{{"", RoleAdmin, ""}, {"x", "root", ""}, {"x", RoleEntityAdmin, ""}, {"x", RoleAnalyst, "acme"}, {"x", RoleEntityAdmin, "Bad!"}} {
		if _, err := db.CreateUser(ctx, bad[0], bad[1], bad[2], "init"); !errors.Is(err, ErrInvalid) {
			t.Errorf("create %v: %v", bad, err)
		}
	}
	etok, err := db.CreateUser(ctx, "bob", RoleEntityAdmin, "acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if u, err := db.Authenticate(ctx, etok); err != nil || u.Entity != "acme" {
		t.Fatalf("auth bob: %+v %v", u, err)
	}
	wrong := tok[:len(tok)-4] + "AAAA"
	if wrong == tok {
		wrong = tok[:len(tok)-4] + "BBBB"
	}
	enroll, _ := db.CreateEnrollToken(ctx, "acme", time.Hour, "alice")
	for _, bad := range []string{"", "Bearer x", wrong, enroll, "vgu_0000000000." + strings.Repeat("A", 43)} {
		if _, err := db.Authenticate(ctx, bad); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("auth %q: %v", bad, err)
		}
	}
	if _, err := db.w.ExecContext(ctx, `UPDATE users SET disabled = 1 WHERE name = 'alice'`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(ctx, tok); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("disabled: %v", err)
	}
	us, _ := db.ListUsers(ctx, "acme")
	if len(us) != 1 || us[0].Name != "bob" {
		t.Fatalf("users of acme: %+v", us)
	}
}

func TestAuditChain(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	rctx := WithRemote(ctx, "192.0.2.7:5555")
	if _, err := db.CreateEnrollToken(rctx, "acme", time.Hour, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := db.Audit(rctx, AuditEntry{Actor: "alice", Action: "thing.do", Target: "x", Entity: "beta"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Audit(ctx, AuditEntry{Action: "no actor"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no actor: %v", err)
	}
	es, err := db.ListAudit(ctx, AuditFilter{})
	if err != nil || len(es) != 2 || es[0].Action != "thing.do" || es[1].Action != "token.create" || es[1].Remote != "192.0.2.7:5555" {
		t.Fatalf("list: %+v %v", es, err)
	}
	if es, _ := db.ListAudit(ctx, AuditFilter{Entity: "acme"}); len(es) != 1 {
		t.Fatalf("entity filter: %+v", es)
	}
	if n, err := db.VerifyAudit(ctx); err != nil || n != 2 {
		t.Fatalf("verify: %d %v", n, err)
	}
	// Append-only in the database itself.
	if _, err := db.w.ExecContext(ctx, `UPDATE audit_log SET actor = 'mallory'`); err == nil {
		t.Fatal("update of audit_log allowed")
	}
	if _, err := db.w.ExecContext(ctx, `DELETE FROM audit_log`); err == nil {
		t.Fatal("delete from audit_log allowed")
	}
	// Tampering that bypasses the triggers is detected by the chain.
	if _, err := db.w.ExecContext(ctx, `DROP TRIGGER audit_log_no_update`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.w.ExecContext(ctx, `UPDATE audit_log SET actor = 'mallory' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.VerifyAudit(ctx); !errors.Is(err, ErrAuditTampered) {
		t.Fatalf("verify after tampering: %v", err)
	}
}

func TestCloseAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.db")
	db, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := db.InsertFindings(ctx, "a-1", "acme", mkFindings(1, 10, "netflow")); err != nil || n != 10 {
		t.Fatalf("insert: %d %v", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := db.InsertFindings(ctx, "a-1", "acme", mkFindings(11, 10, "netflow")); err == nil {
		t.Fatal("insert after close succeeded")
	}
	db, err = Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n, _ := db.CountFindings(ctx, "a-1"); n != 10 {
		t.Fatalf("after reopen: %d findings", n)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := db.InsertFindings(cctx, "a-1", "acme", mkFindings(11, 10, "netflow")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled insert: %v", err)
	}
}
