package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/api"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

type env struct {
	srv    *httptest.Server
	db     *store.DB
	caFile string
	admin  string
	ea     string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, filepath.Join(dir, "v.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{db: db}
	if e.admin, err = db.CreateUser(ctx, "root", store.RoleAdmin, "", "test"); err != nil {
		t.Fatal(err)
	}
	if e.ea, err = db.CreateUser(ctx, "ea", store.RoleEntityAdmin, "acme", "test"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []store.Agent{{ID: "a-1", Entity: "acme", Hostname: "sensor-1"}, {ID: "b-1", Entity: "beta", Hostname: "sensor-2"}} {
		a.CertSerial, a.CertNotAfter = "01", time.Now().Add(time.Hour)
		if err := db.RegisterAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	var fs []*wirev1.Finding
	for i := range 1500 {
		fs = append(fs, &wirev1.Finding{Seq: uint64(i + 1), Detector: "netflow", TimeUnixNano: time.Now().UnixNano(),
			Severity: wirev1.Severity_SEVERITY_MEDIUM, Score: 1.25, Summary: "port scan"})
	}
	if _, err := db.InsertFindings(ctx, "a-1", "acme", fs); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewTLSServer(api.New(db, api.Options{CAPin: "sha256:00ff", EnrollServer: "vigil.test:4433"}))
	t.Cleanup(e.srv.Close)
	e.caFile = filepath.Join(dir, "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.srv.Certificate().Raw})
	if err := os.WriteFile(e.caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// run runs vigilctl with the environment variables in vars.
func (e *env) run(t *testing.T, vars map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	app := &App{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return vars[k] }}
	root := NewRoot(app)
	root.SetArgs(args)
	code = 0
	if err := root.ExecuteContext(context.Background()); err != nil {
		code = 1
		var ae *APIError
		if errors.As(err, &ae) && (ae.Status == 401 || ae.Status == 403) {
			code = 3
		}
		errb.WriteString(err.Error())
	}
	return code, out.String(), errb.String()
}

func (e *env) vars(token string) map[string]string {
	return map[string]string{"VIGIL_SERVER": e.srv.URL, "VIGIL_TOKEN": token, "VIGIL_CA": e.caFile}
}

func TestCommands(t *testing.T) {
	e := newEnv(t)
	v := e.vars(e.admin)

	code, out, errs := e.run(t, v, "token", "create", "--entity", "acme", "--json")
	if code != 0 {
		t.Fatalf("token create: %d %s", code, errs)
	}
	var tok map[string]string
	if err := json.Unmarshal([]byte(out), &tok); err != nil || !strings.HasPrefix(tok["token"], "vge_") ||
		tok["ca_pin"] != "sha256:00ff" || tok["command"] != "vigil-agent enroll --server vigil.test:4433 --token "+tok["token"]+" --ca-pin sha256:00ff" {
		t.Fatalf("token create --json: %s %v", out, err)
	}
	code, out, _ = e.run(t, v, "token", "create", "--entity", "acme", "--ttl", "1h")
	if code != 0 || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "vigil-agent enroll --server vigil.test:4433 --token vge_") {
		t.Fatalf("token create: %d %q", code, out)
	}

	code, out, errs = e.run(t, v, "user", "create", "--name", "ann", "--role", "analyst", "--json")
	var u map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &u) != nil || !strings.HasPrefix(u["token"], "vgu_") {
		t.Fatalf("user create: %d %s %s", code, out, errs)
	}
	// The new token works, from the flag this time.
	code, out, errs = e.run(t, map[string]string{}, "--server", e.srv.URL, "--ca", e.caFile, "--token", u["token"], "agents", "list")
	if code != 0 || !strings.Contains(out, "sensor-1") || !strings.Contains(out, "HOSTNAME") {
		t.Fatalf("agents list as analyst: %d %s %s", code, out, errs)
	}
	// Token from a file.
	tf := filepath.Join(t.TempDir(), "admin.token")
	os.WriteFile(tf, []byte(e.admin+"\n"), 0o600)
	if code, _, errs := e.run(t, map[string]string{"VIGIL_SERVER": e.srv.URL, "VIGIL_CA": e.caFile}, "--token", "@"+tf, "agents", "list"); code != 0 {
		t.Fatalf("token from file: %s", errs)
	}

	code, out, _ = e.run(t, v, "agents", "list", "--json")
	var agents []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &agents) != nil || len(agents) != 2 {
		t.Fatalf("agents list --json: %s", out)
	}
	if code, out, errs := e.run(t, v, "agents", "revoke", "a-1"); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %d %s %s", code, out, errs)
	}
	if _, out, _ := e.run(t, v, "agents", "list"); !strings.Contains(out, "revoked") {
		t.Fatalf("agents list after revoke: %s", out)
	}
	if code, _, errs := e.run(t, v, "agents", "revoke", "nope"); code != 1 || !strings.Contains(errs, "404") {
		t.Fatalf("revoke unknown: %d %s", code, errs)
	}

	code, out, _ = e.run(t, v, "findings", "list", "--json", "--limit", "1200", "--since", "1h", "--detector", "netflow")
	var fs []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &fs) != nil || len(fs) != 1200 {
		t.Fatalf("findings list --json: %d findings", len(fs))
	}
	for _, k := range []string{"id", "agent_id", "entity", "detector", "time", "first_seen", "last_seen", "count", "severity",
		"score", "threshold", "model", "context", "top_features", "summary"} {
		if _, ok := fs[0][k]; !ok {
			t.Errorf("finding lacks %q", k)
		}
	}
	if _, out, _ := e.run(t, v, "findings", "list", "--limit", "3"); strings.Count(out, "port scan") != 3 {
		t.Fatalf("findings table: %s", out)
	}
	if _, out, _ := e.run(t, v, "findings", "list", "--json", "--entity", "beta"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty list must be []: %q", out)
	}

	code, out, _ = e.run(t, v, "audit", "list", "--json")
	var audit []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &audit) != nil || len(audit) < 4 || audit[0]["action"] != "agent.revoke" {
		t.Fatalf("audit list: %s", out)
	}
	if _, out, _ := e.run(t, v, "audit", "list"); !strings.Contains(out, "token.create") {
		t.Fatalf("audit table: %s", out)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	otherCA := filepath.Join(t.TempDir(), "other.pem")
	// A CA file without a usable certificate.
	os.WriteFile(otherCA, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644)
	tests := []struct {
		name     string
		vars     map[string]string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no token", map[string]string{"VIGIL_SERVER": e.srv.URL, "VIGIL_CA": e.caFile}, []string{"agents", "list"}, 1, "no API token"},
		{"bad token", e.vars("vgu_0000000000." + strings.Repeat("A", 43)), []string{"agents", "list"}, 3, "401"},
		{"forbidden", e.vars(e.ea), []string{"user", "create", "--name", "x", "--role", "admin"}, 3, "403"},
		{"other entity", e.vars(e.ea), []string{"findings", "list", "--entity", "beta"}, 3, "403"},
		{"bad CA file", map[string]string{"VIGIL_SERVER": e.srv.URL, "VIGIL_TOKEN": e.admin, "VIGIL_CA": otherCA}, []string{"agents", "list"}, 1, "CA file"},
		{"no CA: untrusted", map[string]string{"VIGIL_SERVER": e.srv.URL, "VIGIL_TOKEN": e.admin}, []string{"agents", "list"}, 1, "certificate"},
		{"bad server URL", map[string]string{"VIGIL_SERVER": "ftp://x", "VIGIL_TOKEN": e.admin}, []string{"agents", "list"}, 1, "https://"},
		{"missing flag", e.vars(e.admin), []string{"user", "create", "--name", "x"}, 1, "role"},
		{"bad severity", e.vars(e.admin), []string{"findings", "list", "--severity", "huge"}, 1, "400"},
		{"extra arg", e.vars(e.admin), []string{"agents", "revoke"}, 1, "arg"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := e.run(t, tc.vars, tc.args...)
			if code != tc.wantCode || !strings.Contains(errs, tc.wantErr) {
				t.Fatalf("code %d stderr %q; want %d and %q", code, errs, tc.wantCode, tc.wantErr)
			}
		})
	}
}

func TestMainExitStatus(t *testing.T) {
	var out, errb bytes.Buffer
	t.Setenv("VIGIL_TOKEN", "")
	if code := Main(context.Background(), []string{"agents", "list"}, &out, &errb); code == 0 || !strings.HasPrefix(errb.String(), "vigilctl: ") {
		t.Fatalf("Main: %d %q", code, errb.String())
	}
	if code := Main(context.Background(), []string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help: %d", code)
	}
}

func TestAuditVerifyTriageExport(t *testing.T) {
	e := newEnv(t)
	v := e.vars(e.admin)
	code, out, errs := e.run(t, v, "audit", "verify")
	if code != 0 || !strings.Contains(out, "hash chain verified") {
		t.Fatalf("audit verify: %d %s %s", code, out, errs)
	}
	code, out, _ = e.run(t, v, "audit", "verify", "--json")
	var vr map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &vr) != nil || vr["ok"] != true {
		t.Fatalf("audit verify --json: %s", out)
	}
	if code, _, _ := e.run(t, e.vars(e.ea), "audit", "verify"); code != 3 {
		t.Errorf("entity-admin audit verify: exit %d, want 3 (forbidden)", code)
	}
	fs, _ := e.db.ListFindings(context.Background(), store.FindingFilter{Limit: 1})
	id := fmt.Sprint(fs[0].ID)
	code, out, errs = e.run(t, v, "findings", "triage", id, "--status", "false_positive", "--comment", "lab scanner")
	if code != 0 || !strings.Contains(out, "false_positive") {
		t.Fatalf("triage: %d %s %s", code, out, errs)
	}
	if code, _, errs := e.run(t, v, "findings", "triage", id); code != 1 || !strings.Contains(errs, "nothing to change") {
		t.Errorf("empty triage: %d %s", code, errs)
	}
	if code, _, errs := e.run(t, v, "findings", "triage", id, "--status", "bogus"); code != 1 || !strings.Contains(errs, "400") {
		t.Errorf("bad status: %d %s", code, errs)
	}
	code, out, errs = e.run(t, v, "findings", "export", "--format", "ocsf", "--entity", "acme")
	if code != 0 || strings.Count(out, "\n") != 1500 || !strings.Contains(out, `"class_uid":2004`) {
		t.Fatalf("export: %d, %d lines, %s", code, strings.Count(out, "\n"), errs)
	}
	code, out, _ = e.run(t, v, "audit", "list", "--json")
	if code != 0 || !strings.Contains(out, "suppression.create") || !strings.Contains(out, "finding.triage") {
		t.Errorf("audit lacks triage: %s", out)
	}
}
