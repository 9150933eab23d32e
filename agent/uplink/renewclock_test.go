package uplink_test

import (
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// installCert replaces the fixture's certificate with one valid from nb to na.
func (f *fixture) installCert(t *testing.T, nb, na time.Time) {
	t.Helper()
	creds, err := f.dir.LoadCredentials()
	if err != nil {
		t.Fatal(err)
	}
	id := creds.Identity
	c := f.srv.PKI.AgentCertValidity(t, id.Entity, id.AgentID, "", nb, na)
	if err := f.dir.ReplaceCredentials(c.PrivateKey.(*ecdsaKey), c.Certificate); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until d has passed; it reports whether cond held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// TestRenewalWithClockBehindServer: the sensor's clock is 10 minutes behind
// the server's, so a renewed certificate (valid from the server's time less
// pki.ClockSkew, 5 minutes) is not yet valid by the sensor's clock. The
// renewal must be taken all the same: the server checks validity on its own
// clock, and refusing every renewal lets the certificate expire, locking
// the agent out while its findings pile up in the spool.
func TestRenewalWithClockBehindServer(t *testing.T) {
	f := newFixture(t)
	f.srv.Configure(func(s *uplinktest.Server) {
		s.Clock = func() time.Time { return time.Now().Add(10 * time.Minute) }
	})
	now := time.Now()
	f.installCert(t, now.Add(-50*time.Minute), now.Add(15*time.Minute)) // due for renewal
	cfg := f.config()
	cfg.RenewRetry = 50 * time.Millisecond
	c := f.start(t, cfg)
	if !waitFor(15*time.Second, func() bool { return c.Stats().Renewals == 1 }) {
		t.Fatalf("no renewal: %+v\n%s", c.Stats(), f.logs.String())
	}
	renewed, err := f.dir.LoadCredentials()
	if err != nil {
		t.Fatal(err)
	}
	if !renewed.NotBefore().After(time.Now()) {
		t.Fatalf("renewed certificate valid from %v: not the server's clock", renewed.NotBefore())
	}
	f.append(t, 10, wirev1.Severity_SEVERITY_LOW)
	eventually(t, "findings after renewal", func() bool { return f.spool.Stats().Depth == 0 })
}

// TestRenewalOnServerClock: the sensor's clock is 50 minutes behind the
// server's, and the certificate (1 h) has 5 minutes left by the server's
// clock, which is the one that expires it; by the sensor's clock it is not
// even due. The agent renews on the server's time (HelloAck.server_time).
func TestRenewalOnServerClock(t *testing.T) {
	f := newFixture(t)
	f.srv.Configure(func(s *uplinktest.Server) {
		s.Clock = func() time.Time { return time.Now().Add(50 * time.Minute) }
	})
	now := time.Now()
	f.installCert(t, now.Add(-5*time.Minute), now.Add(55*time.Minute))
	cfg := f.config()
	cfg.RenewRetry = time.Hour
	c := f.start(t, cfg)
	if !waitFor(15*time.Second, func() bool { return c.Stats().Renewals == 1 }) {
		t.Fatalf("no renewal: %+v\n%s", c.Stats(), f.logs.String())
	}
	f.append(t, 10, wirev1.Severity_SEVERITY_LOW)
	eventually(t, "findings after renewal", func() bool { return f.spool.Stats().Depth == 0 })
	// The renewed certificate is not due on the server's clock: no more.
	time.Sleep(300 * time.Millisecond)
	if n := f.srv.Renewals(); n != 1 {
		t.Fatalf("server issued %d renewals, want 1", n)
	}
}

// TestRenewedCertificateDueAtOnceNoLoop: the server issues certificates
// that are due for renewal as soon as issued (2 minutes, backdated by
// pki.ClockSkew: a server's issuing CA about to expire caps them so). The
// agent used to renew, reconnect at once without backoff and renew again,
// as fast as the server signed, the findings stream restarting each time.
// A renewed certificate is not renewed again before RenewRetry.
func TestRenewedCertificateDueAtOnceNoLoop(t *testing.T) {
	f := newFixture(t)
	f.srv.Configure(func(s *uplinktest.Server) { s.AgentTTL = 2 * time.Minute })
	now := time.Now()
	f.installCert(t, now.Add(-50*time.Minute), now.Add(10*time.Minute))
	cfg := f.config()
	cfg.RenewRetry = time.Hour
	c := f.start(t, cfg)
	if !waitFor(15*time.Second, func() bool { return c.Stats().Renewals >= 1 }) {
		t.Fatalf("no renewal: %+v", c.Stats())
	}
	f.append(t, 200, wirev1.Severity_SEVERITY_LOW)
	eventually(t, "findings after renewal", func() bool { return f.spool.Stats().Depth == 0 })
	time.Sleep(500 * time.Millisecond)
	if n, st := f.srv.Renewals(), c.Stats(); n != 1 || st.Renewals != 1 {
		t.Fatalf("server issued %d renewals (agent: %d, %d connects): a renewal loop", n, st.Renewals, st.Connects)
	}
}
