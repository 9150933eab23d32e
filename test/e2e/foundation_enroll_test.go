package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/pki"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TLS alerts the server sends when it refuses a client certificate.
const (
	alertBadCertificate     = 42
	alertCertificateRevoked = 44
	alertUnknownCA          = 48
)

// TestFoundationEnrollment is the enrollment and identity matrix with the
// real binaries: three agents of two entities enroll; reused, expired and
// other-entity tokens, a wrong CA pin and a certificate of another CA are
// refused with clear errors; an agent cannot make findings appear under
// another identity; an entity-admin sees only its entity; a revoked agent
// is dropped at once and refused at the handshake, also after a restart.
func TestFoundationEnrollment(t *testing.T) {
	b := needBins(t)
	d := newDeployment(t, b, "e2e.vigil")
	d.start()

	// Three agents of two entities, each landing in its token's entity.
	a1, a2, b1 := d.enroll("alpha"), d.enroll("alpha"), d.enroll("beta")
	idPat := regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	seen := map[string]bool{}
	for _, c := range []struct {
		a      *agentProc
		entity string
	}{{a1, "alpha"}, {a2, "alpha"}, {b1, "beta"}} {
		if c.a.id.Entity != c.entity || !idPat.MatchString(c.a.id.AgentID) || seen[c.a.id.AgentID] {
			t.Fatalf("enrolled identity %+v, want entity %s and a fresh valid id", c.a.id, c.entity)
		}
		seen[c.a.id.AgentID] = true
		fi, err := os.Stat(filepath.Join(c.a.dir, state.KeyFile))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("agent key %v mode %v, want 0600", err, fi.Mode())
		}
		cred := c.a.credentials()
		ident, err := pki.IdentityFromCert(cred.Cert.Leaf, "e2e.vigil")
		if err != nil || ident.AgentID != c.a.id.AgentID || ident.Entity != c.entity {
			t.Fatalf("certificate identity %+v %v, want %+v", ident, err, c.a.id)
		}
	}
	var listed []struct {
		ID, Entity string
	}
	if err := json.Unmarshal([]byte(d.mustCtl("", "agents", "list", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	entities := map[string]string{}
	for _, a := range listed {
		entities[a.ID] = a.Entity
	}
	if len(listed) != 3 || entities[a1.id.AgentID] != "alpha" || entities[a2.id.AgentID] != "alpha" || entities[b1.id.AgentID] != "beta" {
		t.Fatalf("vigilctl agents list --json: %+v", listed)
	}
	for _, a := range []*agentProc{a1, a2, b1} {
		a.run("--demo-findings", "20/s")
	}
	for _, a := range []*agentProc{a1, a2, b1} {
		a.waitConnected()
	}

	t.Run("reused token", func(t *testing.T) {
		tj := d.createToken("", "alpha", time.Hour)
		if _, out, err := d.tryEnroll(tj.Token, tj.CAPin); err != nil {
			t.Fatalf("first use: %v\n%s", err, out)
		}
		_, out, err := d.tryEnroll(tj.Token, tj.CAPin)
		if err == nil || !strings.Contains(strings.ToUpper(out), "TOKEN_INVALID") {
			t.Fatalf("reused token: err %v, output %q; want a refusal naming TOKEN_INVALID", err, out)
		}
		t.Logf("reused token refused: %s", strings.TrimSpace(out))
	})

	t.Run("expired token", func(t *testing.T) {
		tj := d.createToken("", "alpha", time.Second)
		exp, err := time.Parse(time.RFC3339, tj.ExpiresAt)
		if err != nil {
			t.Fatalf("expires_at %q: %v", tj.ExpiresAt, err)
		}
		// Wall-clock expiry: wait past it (expires_at has second precision).
		time.Sleep(time.Until(exp.Add(1100 * time.Millisecond)))
		_, out, err := d.tryEnroll(tj.Token, tj.CAPin)
		if err == nil || !strings.Contains(strings.ToUpper(out), "TOKEN_INVALID") {
			t.Fatalf("expired token: err %v, output %q; want a refusal naming TOKEN_INVALID", err, out)
		}
		t.Logf("expired token refused: %s", strings.TrimSpace(out))
	})

	t.Run("malformed token", func(t *testing.T) {
		_, out, err := d.tryEnroll("vge_nothing.here", d.pin)
		if err == nil || !strings.Contains(strings.ToUpper(out), "TOKEN_INVALID") {
			t.Fatalf("made-up token: err %v, output %q", err, out)
		}
	})

	// An entity-admin of beta: tokens only for beta, sees only beta.
	var betaAdmin struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(d.mustCtl("", "user", "create", "--name", "beta-admin", "--role", "entity-admin", "--entity", "beta", "--json")), &betaAdmin); err != nil || betaAdmin.Token == "" {
		t.Fatalf("user create --json: %v %+v", err, betaAdmin)
	}

	t.Run("token bound to its entity", func(t *testing.T) {
		// The agent cannot choose its entity (EnrollRequest has no such
		// field): it lands in the token's.
		tj := d.createToken(betaAdmin.Token, "beta", time.Hour)
		a, out, err := d.tryEnroll(tj.Token, tj.CAPin)
		if err != nil {
			t.Fatalf("enroll with beta-admin's token: %v\n%s", err, out)
		}
		if a.id.Entity != "beta" {
			t.Fatalf("agent of a beta token landed in %q", a.id.Entity)
		}
		// beta's admin cannot mint tokens for alpha.
		out, errOut, err := d.ctl(betaAdmin.Token, "token", "create", "--entity", "alpha", "--ttl", "1h", "--json")
		if err == nil {
			var tj tokenJSON
			_ = json.Unmarshal([]byte(out), &tj)
			a, _, err := d.tryEnroll(tj.Token, tj.CAPin)
			if err == nil && a.id.Entity == "alpha" {
				t.Fatalf("entity-admin of beta made an alpha enrollment token: %s", out)
			}
			t.Fatalf("entity-admin of beta asked for an alpha token and got one (%s); enrolled %v", out, err)
		}
		t.Logf("alpha token for beta-admin refused: %s", strings.TrimSpace(errOut))
	})

	t.Run("entity-admin sees only its entity", func(t *testing.T) {
		waitFor(t, 60*time.Second, func() string { return "findings of alpha and beta at the server" }, func() bool {
			return d.count(a1.id.AgentID) > 0 && d.count(b1.id.AgentID) > 0
		})
		var agents []struct{ ID, Entity string }
		if err := json.Unmarshal([]byte(d.mustCtl(betaAdmin.Token, "agents", "list", "--json")), &agents); err != nil {
			t.Fatal(err)
		}
		for _, a := range agents {
			if a.Entity != "beta" || a.ID == a1.id.AgentID || a.ID == a2.id.AgentID {
				t.Fatalf("beta-admin sees agent %+v", a)
			}
		}
		if len(agents) == 0 {
			t.Fatal("beta-admin sees no agent at all")
		}
		out, _, err := d.ctl(betaAdmin.Token, "agents", "list", "--entity", "alpha", "--json")
		if err == nil && strings.Contains(out, a1.id.AgentID) {
			t.Fatalf("beta-admin lists alpha's agents: %s", out)
		}
		var fs []struct {
			AgentID string `json:"agent_id"`
			Entity  string `json:"entity"`
		}
		if err := json.Unmarshal([]byte(d.mustCtl(betaAdmin.Token, "findings", "list", "--json", "--limit", "500")), &fs); err != nil {
			t.Fatal(err)
		}
		if len(fs) == 0 {
			t.Fatal("beta-admin sees no findings")
		}
		for _, f := range fs {
			if f.Entity != "beta" {
				t.Fatalf("beta-admin sees finding %+v", f)
			}
		}
		out, _, err = d.ctl(betaAdmin.Token, "findings", "list", "--entity", "alpha", "--json")
		if err == nil && strings.Contains(out, `"alpha"`) {
			t.Fatalf("beta-admin lists alpha's findings: %.300s", out)
		}
		if _, errOut, err := d.ctl(betaAdmin.Token, "agents", "revoke", a1.id.AgentID); err == nil {
			t.Fatalf("beta-admin revoked alpha's agent")
		} else {
			t.Logf("beta-admin revoking an alpha agent: %s", strings.TrimSpace(errOut))
		}
	})

	// Another deployment of the same trust domain: its pin and its CA.
	other := newDeployment(t, b, "e2e.vigil")

	t.Run("wrong CA pin", func(t *testing.T) {
		tj := d.createToken("", "alpha", time.Hour)
		_, out, err := d.tryEnroll(tj.Token, other.pin)
		if err == nil || !strings.Contains(out, "pin") {
			t.Fatalf("wrong pin: err %v, output %q; want a refusal naming the pin", err, out)
		}
		t.Logf("wrong pin refused: %s", strings.TrimSpace(out))
		// The token never reached the impostor check: still usable.
		if _, out, err := d.tryEnroll(tj.Token, tj.CAPin); err != nil {
			t.Fatalf("token unusable after a refused pin: %v\n%s", err, out)
		}
	})

	t.Run("certificate of another CA", func(t *testing.T) {
		ca, err := pki.LoadCA(other.dir)
		if err != nil {
			t.Fatal(err)
		}
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := pki.NewCSR(key, a1.id.AgentID)
		if err != nil {
			t.Fatal(err)
		}
		// Same trust domain, same entity and agent id as a real agent.
		chain, err := ca.SignAgentCSR(csr, "alpha", a1.id.AgentID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert := tlsCert(t, key, chain)
		_, err = d.probeAuthed(&cert)
		alert, ok := refusedAtHandshake(err)
		if !ok || (alert != alertBadCertificate && alert != alertUnknownCA) {
			t.Fatalf("certificate of another CA: %v; want a TLS refusal (bad_certificate or unknown_ca)", err)
		}
		t.Logf("foreign certificate refused at the handshake: %v", err)
	})

	t.Run("no identity spoofing", func(t *testing.T) {
		// A fresh beta agent, driven by hand: nothing in a FindingsBatch
		// names an agent or entity; the server uses the certificate's.
		b2 := d.enroll("beta")
		cred := b2.credentials()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c, _, err := d.hello(&cred.Cert)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseWithError(0, "")
		before := d.count(a1.id.AgentID)
		batch := &wirev1.FindingsBatch{FirstSeq: 1}
		for i := uint64(1); i <= 3; i++ {
			batch.Findings = append(batch.Findings, &wirev1.Finding{Seq: i, Detector: "spoof", Severity: wirev1.Severity_SEVERITY_HIGH,
				TimeUnixNano: time.Now().UnixNano(), Summary: "agent " + a1.id.AgentID + " of alpha"})
		}
		ack, err := sendBatch(ctx, c, batch)
		if err != nil || ack.ThroughSeq != 3 {
			t.Fatalf("batch: ack %v err %v", ack, err)
		}
		rows, err := d.openDB().Query(`SELECT agent_id, entity FROM findings WHERE detector = 'spoof'`)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var agent, entity string
			if err := rows.Scan(&agent, &entity); err != nil {
				t.Fatal(err)
			}
			if agent != b2.id.AgentID || entity != "beta" {
				t.Fatalf("a finding sent with %s's certificate is stored as agent %s of %s", b2.id.AgentID, agent, entity)
			}
			n++
		}
		rows.Close()
		if n != 3 {
			t.Fatalf("%d spoof findings stored, want 3", n)
		}
		if after := d.count(a1.id.AgentID); after < before {
			t.Fatalf("a1's findings went from %d to %d", before, after)
		}
		var forged int
		if err := d.openDB().QueryRow(`SELECT COUNT(*) FROM findings WHERE detector = 'spoof' AND agent_id <> ?`, b2.id.AgentID).Scan(&forged); err != nil || forged != 0 {
			t.Fatalf("%d spoof findings under another agent (%v)", forged, err)
		}

		// The real agent with b2's certificate and key but a1's
		// identity.json (and, second case, only the entity changed) must
		// not run as a1 / alpha: it refuses to start, or its findings land
		// under the certificate's identity.
		for _, tamper := range []struct {
			name string
			id   state.Identity
		}{
			{"other agent's identity.json", a1.id},
			{"entity changed", state.Identity{AgentID: b2.id.AgentID, Entity: "alpha", Server: b2.id.Server, TrustDomain: b2.id.TrustDomain}},
		} {
			dir := filepath.Join(t.TempDir(), "agent")
			copyDir(t, b2.dir, dir)
			data, _ := json.Marshal(tamper.id)
			if err := os.WriteFile(filepath.Join(dir, state.IdentityFile), data, 0o600); err != nil {
				t.Fatal(err)
			}
			spoof := &agentProc{t: t, d: d, dir: dir, log: filepath.Join(filepath.Dir(dir), "agent.log"), metrics: freeTCP(t), id: b2.id}
			spoof.run("--demo-findings", "50/s")
			// Outcomes that are safe: the agent exits, or refuses to use the
			// inconsistent credentials (and keeps retrying), or it runs as
			// the certificate's identity.
			var outcome string
			waitFor(t, 90*time.Second, func() string { return tamper.name + ": the agent's reaction\n" + tail(spoof.log, 20) }, func() bool {
				var n int
				_ = d.openDB().QueryRow(`SELECT COUNT(*) FROM findings WHERE detector = 'demo' AND agent_id = ?`, b2.id.AgentID).Scan(&n)
				switch {
				case spoof.p.exited():
					outcome = "exits: " + lastLine(spoof.log)
				case grepLog(spoof.log, "load credentials"):
					outcome = "refuses its credentials and does not connect: " + lastLine(spoof.log)
				case n > 0:
					outcome = "runs; its findings land as " + b2.id.AgentID + " of beta"
				}
				return outcome != ""
			})
			if !spoof.p.exited() && strings.HasPrefix(outcome, "refuses") {
				// An agent that gives up logs the error just before it
				// exits: give it a moment, so that its own exit is not
				// taken for a failed stop.
				select {
				case <-spoof.p.done:
					outcome = "exits: " + lastLine(spoof.log)
				case <-time.After(5 * time.Second): // it keeps retrying
				}
			}
			if spoof.p.exited() && spoof.p.err == nil {
				t.Fatalf("%s: the agent exited 0", tamper.name)
			}
			if !spoof.p.exited() {
				spoof.p.stop(t, 30*time.Second)
			}
			t.Logf("%s: the agent %s", tamper.name, outcome)
		}
		var wrong int
		if err := d.openDB().QueryRow(`SELECT COUNT(*) FROM findings WHERE (agent_id = ? AND entity <> 'alpha') OR (agent_id = ? AND entity <> 'beta')`,
			a1.id.AgentID, b2.id.AgentID).Scan(&wrong); err != nil || wrong != 0 {
			t.Fatalf("%d findings with a mismatched entity (%v)", wrong, err)
		}
	})

	t.Run("revoked agent", func(t *testing.T) {
		cred := b1.credentials()
		// A second live connection of b1, to see the code it is closed with.
		c, _, err := d.hello(&cred.Cert)
		if err != nil {
			t.Fatal(err)
		}
		out := d.mustCtl("", "agents", "revoke", b1.id.AgentID)
		if !strings.Contains(out, b1.id.AgentID) || !strings.Contains(out, "revoked") {
			t.Fatalf("vigilctl agents revoke: %q", out)
		}
		revokedAt := time.Now()
		cause := closeCause(t, c, 30*time.Second)
		if code, ok := appCode(cause); !ok || code != wirev1.CodeRevoked {
			t.Fatalf("live connection of the revoked agent closed with %v, want %s", cause, wirev1.CodeRevoked)
		}
		t.Logf("live connection dropped %s after the revoke: %v", time.Since(revokedAt).Round(time.Millisecond), cause)
		waitFor(t, 60*time.Second, func() string { return "the revoked agent disconnected" }, func() bool { return !b1.status().Connected })
		// Refused at the handshake from now on.
		_, err = d.probeAuthed(&cred.Cert)
		if alert, ok := refusedAtHandshake(err); !ok || alert != alertCertificateRevoked {
			t.Fatalf("revoked agent: %v; want TLS alert certificate_revoked", err)
		}
		// Its findings stop; the others' continue (the running agent keeps
		// trying: observe a few of its reconnect attempts).
		n := d.count(b1.id.AgentID)
		m := d.count(a1.id.AgentID)
		waitFor(t, 60*time.Second, func() string { return "alpha's findings keep arriving" }, func() bool { return d.count(a1.id.AgentID) > m+40 })
		if got := d.count(b1.id.AgentID); got != n {
			t.Fatalf("revoked agent stored %d more findings", got-n)
		}
		var agents []struct {
			ID        string    `json:"id"`
			RevokedAt time.Time `json:"revoked_at"`
		}
		if err := json.Unmarshal([]byte(d.mustCtl("", "agents", "list", "--json")), &agents); err != nil {
			t.Fatal(err)
		}
		for _, a := range agents {
			if (a.ID == b1.id.AgentID) == a.RevokedAt.IsZero() {
				t.Fatalf("agents list: %s revoked_at %v", a.ID, a.RevokedAt)
			}
		}
		// The revocation survives a restart.
		d.stop()
		d.start()
		if _, err := d.probeAuthed(&cred.Cert); err == nil {
			t.Fatal("revoked agent accepted after a server restart")
		} else if alert, ok := refusedAtHandshake(err); !ok || alert != alertCertificateRevoked {
			t.Fatalf("revoked agent after restart: %v", err)
		}
		if _, err := d.probeAuthed(&a1.credentials().Cert); err != nil {
			t.Fatalf("a good agent after restart: %v", err)
		}
	})

	for _, a := range []*agentProc{a1, a2, b1} {
		a.p.stop(t, 30*time.Second)
	}
}

func lastLine(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return lines[len(lines)-1]
}

// copyDir copies the regular files of src into a new directory dst.
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == state.SpoolFile {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
