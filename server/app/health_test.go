package app

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCertRenewerHealth: the renewer reports the served certificate as a
// problem once it has less than a week left (renewal starts 30 days before
// the end, so it has been failing for weeks), and when it has expired.
func TestCertRenewerHealth(t *testing.T) {
	const day = 24 * time.Hour
	ctx := context.Background()
	dir, ca := newDeployment(t)
	r := newCertRenewer(ca, slog.New(slog.DiscardHandler))
	if got := r.health(time.Now()); got != nil {
		t.Errorf("no certificate held yet: %q", got)
	}
	if err := r.start(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := r.health(time.Now()); got != nil {
		t.Errorf("fresh certificate: %q", got)
	}

	// Years later: the issuing CA ends in 10 days, so renewal fails, and
	// server.pem expires in 5 days.
	now := ca.Issuing.NotAfter.Add(-10 * day)
	cur := shortServerCert(t, dir, ca, now.Add(5*day))
	r = newCertRenewer(ca, slog.New(slog.DiscardHandler))
	if err := r.start(ctx, now); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		now  time.Time
		want string // "" = healthy
	}{
		{"8 days left", cur.NotAfter.Add(-8 * day), ""},
		{"5 days left", now, "server certificate expires in 5.0 days"},
		{"1 hour left", cur.NotAfter.Add(-time.Hour), "server certificate expires in 1h0m0s"},
		{"expired", cur.NotAfter.Add(time.Hour), "server certificate expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := r.health(tc.now)
			if tc.want == "" {
				if got != nil {
					t.Fatalf("problems %q, want none", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], tc.want) || !strings.Contains(got[0], cur.NotAfter.UTC().Format(time.RFC3339)) {
				t.Fatalf("problems %q, want one with %q and the expiry time", got, tc.want)
			}
		})
	}
}

// TestHealthzReportsServerCertificate: the running server's healthz says
// "ok" with a fresh certificate and "warning" (still 200) once the
// certificate it presents expires within a week.
func TestHealthzReportsServerCertificate(t *testing.T) {
	dir, ca := newDeployment(t)
	ctx := context.Background()
	s, err := Start(ctx, Config{DataDir: dir, QUICAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(ctx)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool()}}}
	healthz := func() (int, map[string]any) {
		t.Helper()
		resp, err := client.Get("https://" + s.APIAddr().String() + "/api/v1/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	if code, body := healthz(); code != 200 || body["status"] != "ok" {
		t.Fatalf("fresh server: %d %v", code, body)
	}

	// The served certificate nears its end (as if renewal had failed for
	// weeks): the holder now has one with 3 days left.
	shortServerCert(t, dir, ca, time.Now().Add(3*24*time.Hour))
	short, err := ca.ServerCertificate()
	if err != nil {
		t.Fatal(err)
	}
	s.certs.certs.Set(short)
	code, body := healthz()
	problems, _ := body["problems"].([]any)
	if code != 200 || body["status"] != "warning" || len(problems) != 1 ||
		!strings.Contains(problems[0].(string), "server certificate expires in") {
		t.Fatalf("near expiry: %d %v", code, body)
	}
}
