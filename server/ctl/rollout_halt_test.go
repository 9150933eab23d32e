package ctl

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/server/api"
	"github.com/vigil-edge/vigil/server/registry"
	"github.com/vigil-edge/vigil/server/store"
)

// TestRolloutHaltCommand: `vigilctl rollout halt ID --reason TEXT` against the server's real
// routes (the registry in front of the API, as vigil-server serves them): the rollout is halted,
// `rollout status` and `rollout list` show the state, the reason and who; a second halt is an
// error (409), an unknown id 404, an entity-admin may not halt (403, exit status 3); the help
// says that agents that activated the model keep it (a rollback rollout reverts them).
func TestRolloutHaltCommand(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	dir := t.TempDir()
	reg := registry.New(registry.Config{DB: e.db, DataDir: dir, BundleDir: filepath.Join(dir, "bundles")})
	e.srv.Close()
	e.srv = httptest.NewTLSServer(reg.Handler(api.New(e.db, api.Options{CAPin: "sha256:00ff"})))
	t.Cleanup(e.srv.Close)
	if err := os.WriteFile(e.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := e.db.InsertModel(ctx, store.Model{Name: "nf", Version: 2, Digest: "sha256:aa"}, "rel")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"r-000000000001", "r-000000000002"} {
		if err := e.db.CreateRollout(ctx, store.RolloutSpec{ID: id, ModelID: m.ID, Entity: "acme"}, "rel"); err != nil {
			t.Fatal(err)
		}
	}
	v := e.vars(e.admin)

	code, out, errs := e.run(t, v, "rollout", "halt", "r-000000000001", "--reason", "nf@2 floods the SOC")
	if code != 0 || !strings.Contains(out, "rollout r-000000000001 halted by root: halted by hand: nf@2 floods the SOC") ||
		!strings.Contains(out, "keep it") {
		t.Fatalf("rollout halt: %d %q %s", code, out, errs)
	}
	code, out, errs = e.run(t, v, "rollout", "halt", "r-000000000001")
	if code != 1 || !strings.Contains(errs, "409") || !strings.Contains(errs, "already halted") {
		t.Fatalf("second halt: %d %s %s", code, out, errs)
	}
	if code, _, errs := e.run(t, v, "rollout", "halt", "r-nope"); code != 1 || !strings.Contains(errs, "404") {
		t.Fatalf("unknown rollout: %d %s", code, errs)
	}
	if code, _, errs := e.run(t, e.vars(e.ea), "rollout", "halt", "r-000000000002"); code != 3 || !strings.Contains(errs, "403") {
		t.Fatalf("entity-admin halt: %d %s", code, errs)
	}
	if code, _, errs := e.run(t, v, "rollout", "halt", "r-000000000002", "--reason", strings.Repeat("x", 1025)); code != 1 || !strings.Contains(errs, "1024") {
		t.Fatalf("long reason: %d %s", code, errs)
	}
	code, out, errs = e.run(t, v, "rollout", "status", "--id", "r-000000000001")
	if code != 0 || !strings.Contains(out, "halted") || !strings.Contains(out, "halted: halted by hand: nf@2 floods the SOC") ||
		!strings.Contains(out, "halted by root at ") {
		t.Fatalf("rollout status: %d %s %s", code, out, errs)
	}
	code, out, errs = e.run(t, v, "rollout", "list")
	if code != 0 || !strings.Contains(out, "STATE") {
		t.Fatalf("rollout list: %d %s %s", code, out, errs)
	}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "r-000000000001"):
			if !strings.Contains(line, "halted") || !strings.Contains(line, "by root: halted by hand: nf@2 floods the SOC") {
				t.Errorf("halted rollout listed as %q", line)
			}
		case strings.HasPrefix(line, "r-000000000002"):
			if !strings.Contains(line, "active") || strings.Contains(line, "halted") {
				t.Errorf("active rollout listed as %q", line)
			}
		}
	}
	code, out, _ = e.run(t, v, "rollout", "list", "--json")
	var rs []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 2 || rs[1]["state_changed_by"] != "root" {
		t.Fatalf("rollout list --json: %s", out)
	}
	if _, out, _ := e.run(t, v, "rollout", "halt", "--help"); !strings.Contains(out, "KEEP it") || !strings.Contains(out, "--rollback-instruction") {
		t.Fatalf("halt help does not say how to revert activated agents: %s", out)
	}
	if ro, _ := e.db.RolloutByID(ctx, "r-000000000002"); ro.State != "active" {
		t.Fatalf("refused halts changed r-000000000002: %s", ro.State)
	}
}

// TestRolloutHaltTextEscaped: the reason and who come back from the server and may carry
// another user's or a sensor's text: `rollout halt` and `rollout list` escape them.
func TestRolloutHaltTextEscaped(t *testing.T) {
	const evil = "x\x1b]0;pwned\x07\r\x1b[2K\u202Eok\u009b"
	answers := map[string]any{
		"/api/v1/rollouts/r-1/halt": map[string]any{"id": "r-1", "state": "halted", "state_reason": "halted by hand: " + evil,
			"state_changed_by": evil, "withdrawn": []string{}},
		"/api/v1/rollouts": map[string]any{"rollouts": []map[string]any{{"id": "r-1", "model": map[string]any{"name": evil, "version": 2},
			"state": "halted", "state_reason": evil, "state_changed_by": evil, "progress": map[string]int{evil: 1}}}},
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &env{}
	v := map[string]string{"VIGIL_SERVER": srv.URL, "VIGIL_TOKEN": "t", "VIGIL_CA": ca}
	for _, args := range [][]string{{"rollout", "halt", "r-1", "--reason", "x"}, {"rollout", "list"}} {
		code, out, errs := e.run(t, v, args...)
		if code != 0 {
			t.Fatalf("%v: %d %s", args, code, errs)
		}
		if r, ok := terminalSafe(out); !ok {
			t.Errorf("%v: %U reaches the terminal:\n%q", args, r, out)
		}
		if !strings.Contains(out, `\x1b]0;pwned\x07\x0d\x1b[2K\u{202e}ok\x9b`) {
			t.Errorf("%v: the text is not shown escaped:\n%s", args, out)
		}
	}
}
