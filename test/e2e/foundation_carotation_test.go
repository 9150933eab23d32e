package e2e

import (
	"bytes"
	"os/exec"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/pki"
)

// TestFoundationIssuingCARotation rotates the issuing CA of a deployment with
// an enrolled agent, as an operator would (`vigil-server ca rotate-issuing`,
// then a restart), and checks what the operator is told: the agent needs
// nothing. It comes back with its certificate from the old issuing CA, renews
// it from the new one, and its findings keep arriving; a new agent enrols
// against the rotated CA.
func TestFoundationIssuingCARotation(t *testing.T) {
	b := needBins(t)
	d := newDeployment(t, b, "e2e.vigil")
	d.start()
	a := d.enroll("acme")

	// Give the agent a short certificate from the issuing CA about to be
	// retired, so that it is due for renewal when it next connects.
	old, err := pki.LoadCA(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, a.id.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := old.SignAgentCSR(csr, a.id.Entity, a.id.AgentID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Dir(a.dir).ReplaceCredentials(key, chain); err != nil {
		t.Fatal(err)
	}

	d.closeDB()
	d.stop()
	cmd := exec.Command(b.server, "ca", "rotate-issuing", "--data", d.dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := runWithTimeout(cmd, 60*time.Second); err != nil {
		t.Fatalf("vigil-server ca rotate-issuing: %v\n%s", err, out.String())
	}
	rotated, err := pki.LoadCA(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Issuing.Equal(old.Issuing) || rotated.Pin() != d.pin {
		t.Fatal("want a new issuing CA under the same root")
	}
	d.start()

	a.run("--demo-findings", "20/s")
	a.waitConnected()
	waitFor(t, 90*time.Second, func() string { return "agent certificate renewed from the new issuing CA\n" + tail(a.log, 20) }, func() bool {
		c, err := state.Dir(a.dir).LoadCredentials()
		return err == nil && c.Cert.Leaf.CheckSignatureFrom(rotated.Issuing) == nil
	})
	n := d.count(a.id.AgentID)
	waitFor(t, 90*time.Second, func() string { return "findings after the renewal\n" + tail(a.log, 20) }, func() bool {
		return d.count(a.id.AgentID) > n+20
	})

	fresh := d.enroll("acme")
	if c := fresh.credentials(); c.Cert.Leaf.CheckSignatureFrom(rotated.Issuing) != nil {
		t.Fatal("an agent enrolled after the rotation does not have a certificate from the new issuing CA")
	}
}
