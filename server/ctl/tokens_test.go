package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// TestTokenRevoke: `vigilctl token revoke ID` revokes an unused enrollment
// token (found with `token list`, or named by the leaked token itself); an
// entity-admin cannot revoke another entity's token (404), nobody a used one
// (409), and the revoked token no longer enrolls.
func TestTokenRevoke(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	admin, ea := e.vars(e.admin), e.vars(e.ea)

	code, out, errs := e.run(t, admin, "token", "create", "--entity", "acme", "--json")
	var created map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil || created["id"] == "" ||
		!strings.HasPrefix(created["token"], "vge_"+created["id"]+".") {
		t.Fatalf("token create --json: %d %s %s", code, out, errs)
	}
	id, plain := created["id"], created["token"]
	if code, _, errs := e.run(t, admin, "token", "create", "--entity", "acme"); code != 0 || !strings.Contains(errs, "(id ") {
		t.Errorf("token create does not name the token id: %d %s", code, errs)
	}
	betaPlain, beta, err := e.db.CreateEnrollTokenInfo(ctx, "beta", time.Hour, "root")
	if err != nil {
		t.Fatal(err)
	}
	usedPlain, used, err := e.db.CreateEnrollTokenInfo(ctx, "acme", time.Hour, "root")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.ConsumeEnrollToken(ctx, usedPlain, time.Now()); err != nil {
		t.Fatal(err)
	}

	state := func(out, id string) string {
		for line := range strings.Lines(out) {
			if f := strings.Fields(line); len(f) > 2 && f[0] == id {
				return f[2]
			}
		}
		return ""
	}
	code, out, errs = e.run(t, ea, "token", "list")
	if code != 0 || state(out, id) != "unused" || state(out, used.ID) != "used" || strings.Contains(out, beta.ID) {
		t.Fatalf("token list as ea: %d %s %s", code, out, errs)
	}
	if code, _, errs := e.run(t, ea, "token", "revoke", beta.ID); code != 1 || !strings.Contains(errs, "404") {
		t.Errorf("ea revokes beta's token: %d %s", code, errs)
	}
	if code, _, errs := e.run(t, ea, "token", "revoke", used.ID); code != 1 || !strings.Contains(errs, "409") || !strings.Contains(errs, "already used") {
		t.Errorf("revoke used token: %d %s", code, errs)
	}
	if code, _, errs := e.run(t, ea, "token", "revoke"); code != 1 || !strings.Contains(errs, "arg") {
		t.Errorf("revoke without id: %d %s", code, errs)
	}
	if code, out, errs := e.run(t, ea, "token", "revoke", id); code != 0 || !strings.Contains(out, "token "+id+" revoked") {
		t.Fatalf("token revoke: %d %s %s", code, out, errs)
	}
	// The leaked token itself names its id.
	if code, out, errs := e.run(t, admin, "token", "revoke", betaPlain); code != 0 || !strings.Contains(out, "token "+beta.ID+" revoked") {
		t.Fatalf("token revoke by plaintext: %d %s %s", code, out, errs)
	}
	code, out, errs = e.run(t, admin, "token", "list", "--json")
	var toks []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &toks) != nil || len(toks) != 4 {
		t.Fatalf("token list --json: %d %s %s", code, out, errs)
	}
	for _, tk := range toks {
		if tk["id"] == id && (tk["revoked_at"] == nil || tk["revoked_by"] != "ea") {
			t.Errorf("revoked token listed as %v", tk)
		}
	}
	if _, out, _ := e.run(t, admin, "token", "list", "--entity", "acme"); state(out, id) != "revoked" || strings.Contains(out, beta.ID) {
		t.Errorf("token list --entity acme: %s", out)
	}
	for _, p := range []string{plain, betaPlain} {
		if _, err := e.db.ConsumeEnrollToken(ctx, p, time.Now()); !errors.Is(err, store.ErrTokenInvalid) {
			t.Errorf("revoked token enrolled: %v", err)
		}
	}
}
