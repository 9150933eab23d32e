package store

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/pki/token"
)

// tokenID is the id part of an enrollment token's plaintext.
func tokenID(t *testing.T, plain string) string {
	t.Helper()
	id, _, err := token.Parse(plain, EnrollTokenPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func findToken(t *testing.T, db *DB, id string) EnrollToken {
	t.Helper()
	toks, err := db.ListEnrollTokens(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.ID == id {
			return tk
		}
	}
	t.Fatalf("token %s not listed", id)
	return EnrollToken{}
}

// TestRevokeEnrollToken: a revoked token is refused at enrollment exactly as
// an unknown one is; revocation is scoped to an entity (another entity's
// token is not found), idempotent, refused for a used token, listed and
// audited.
func TestRevokeEnrollToken(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	acme, err := db.CreateEnrollToken(ctx, "acme", time.Hour, "admin")
	if err != nil {
		t.Fatal(err)
	}
	beta, err := db.CreateEnrollToken(ctx, "beta", time.Hour, "admin")
	if err != nil {
		t.Fatal(err)
	}
	used, err := db.CreateEnrollToken(ctx, "acme", time.Hour, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ConsumeEnrollToken(ctx, used, time.Now()); err != nil {
		t.Fatal(err)
	}
	aid, bid, uid := tokenID(t, acme), tokenID(t, beta), tokenID(t, used)

	for _, tc := range []struct {
		name, id, entity string
		want             error
	}{
		{"unknown", "0000000000", "", ErrNotFound},
		{"other entity", bid, "acme", ErrNotFound},
		{"used", uid, "acme", ErrTokenUsed},
		{"used by admin", uid, "", ErrTokenUsed},
		{"own entity", aid, "acme", nil},
		{"again", aid, "acme", nil},
		{"admin", bid, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := db.RevokeEnrollToken(ctx, tc.id, tc.entity, "ea")
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("revoke %s as %q: %v, want %v", tc.id, tc.entity, err, tc.want)
			}
		})
	}

	// Refused at enrollment with the error an unknown token gets.
	for _, plain := range []string{acme, beta} {
		if ent, err := db.ConsumeEnrollToken(ctx, plain, time.Now()); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("revoked token consumed: %q, %v", ent, err)
		}
	}

	tk := findToken(t, db, aid)
	if tk.RevokedAt.IsZero() || tk.RevokedBy != "ea" || !tk.UsedAt.IsZero() {
		t.Errorf("listed revoked token: %+v", tk)
	}
	if tk := findToken(t, db, uid); !tk.RevokedAt.IsZero() || tk.UsedAt.IsZero() {
		t.Errorf("listed used token: %+v", tk)
	}

	es, err := db.ListAudit(ctx, AuditFilter{Entity: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if e.Action == "token.revoke" {
			n++
			if e.Target != aid || e.Actor != "ea" || e.Entity != "acme" {
				t.Errorf("audit entry: %+v", e)
			}
		}
	}
	if n != 1 { // the second revocation changed nothing and is not audited
		t.Errorf("%d token.revoke entries of acme, want 1", n)
	}
	if _, err := db.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRevokeEnrollTokenRacesEnroll: a token revoked while sensors enroll
// with it either enrolls one of them (and every revocation reports it used)
// or enrolls none (and the revocations succeed); never both.
func TestRevokeEnrollTokenRacesEnroll(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	for round := range 20 {
		plain, err := db.CreateEnrollToken(ctx, "acme", time.Hour, "admin")
		if err != nil {
			t.Fatal(err)
		}
		id := tokenID(t, plain)
		var (
			wg                        sync.WaitGroup
			mu                        sync.Mutex
			enrolled, revoked, usedOK int
		)
		start := make(chan struct{})
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if i%2 == 0 {
					_, err := db.ConsumeEnrollToken(ctx, plain, time.Now())
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						enrolled++
					case !errors.Is(err, ErrTokenInvalid):
						t.Errorf("consume: %v", err)
					}
					return
				}
				err := db.RevokeEnrollToken(ctx, id, "acme", "ea")
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					revoked++
				case errors.Is(err, ErrTokenUsed):
					usedOK++
				default:
					t.Errorf("revoke: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		tk := findToken(t, db, id)
		switch {
		case enrolled == 1 && revoked == 0 && usedOK == 8:
			if tk.UsedAt.IsZero() || !tk.RevokedAt.IsZero() {
				t.Fatalf("round %d: enrolled, stored %+v", round, tk)
			}
		case enrolled == 0 && revoked == 8 && usedOK == 0:
			if !tk.UsedAt.IsZero() || tk.RevokedAt.IsZero() {
				t.Fatalf("round %d: revoked, stored %+v", round, tk)
			}
		default:
			t.Fatalf("round %d: %d enrolled, %d revoked, %d revocations saw it used", round, enrolled, revoked, usedOK)
		}
	}
}

// TestRevokedAtMigration: a database of schema 6 gains enroll_tokens.revoked_at;
// its tokens stay valid and can be revoked.
func TestRevokedAtMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v.db")
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	old := &DB{w: w, log: slog.New(slog.DiscardHandler), path: path, now: time.Now}
	if err := old.migrateTo(ctx, 6); err != nil {
		t.Fatal(err)
	}
	plain, _, err := old.CreateEnrollTokenInfo(ctx, "acme", time.Hour, "admin")
	if err != nil {
		t.Fatal(err)
	}
	w.Close()

	db, err := Open(ctx, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	id := tokenID(t, plain)
	if tk := findToken(t, db, id); !tk.RevokedAt.IsZero() {
		t.Fatalf("migrated token revoked: %+v", tk)
	}
	if err := db.RevokeEnrollToken(ctx, id, "", "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ConsumeEnrollToken(ctx, plain, time.Now()); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("revoked migrated token consumed: %v", err)
	}
}
