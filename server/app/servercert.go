package app

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-edge/vigil/pki"
)

// DefaultCertCheckInterval is how often a running server checks whether its
// certificate is due for renewal (pki.ServerRenewBefore, 30 days, before it
// expires).
const DefaultCertCheckInterval = 12 * time.Hour

// certUrgent is how close to its end a server certificate that failed to
// renew makes the failure an error rather than a warning.
const certUrgent = 7 * 24 * time.Hour

// certRenewer keeps the server certificate fresh: it renews server.pem
// through the CA and swaps the result into certs, which the QUIC endpoint
// and the HTTPS API read at each handshake.
type certRenewer struct {
	ca       *pki.CA
	certs    *pki.CertHolder
	log      *slog.Logger
	renewals *prometheus.CounterVec // by result: renewed | failed
}

func newCertRenewer(ca *pki.CA, log *slog.Logger) *certRenewer {
	return &certRenewer{
		ca:    ca,
		certs: &pki.CertHolder{},
		log:   log,
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "vigil", Subsystem: "server",
			Name: "certificate_renewals_total", Help: "Renewals of the server's own TLS certificate, by result (renewed, failed)."},
			[]string{"result"}),
	}
}

// register adds the renewer's metrics to reg: the renewal counter and the
// served certificate's NotAfter (alert on it nearing time()).
func (r *certRenewer) register(reg prometheus.Registerer) error {
	notAfter := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "vigil", Subsystem: "server",
		Name: "certificate_not_after_seconds", Help: "End of validity (Unix seconds) of the TLS certificate the server presents."},
		func() float64 {
			t := r.certs.NotAfter()
			if t.IsZero() {
				return 0
			}
			return float64(t.Unix())
		})
	for _, c := range []prometheus.Collector{r.renewals, notAfter} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register server certificate metrics: %w", err)
		}
	}
	return nil
}

// check renews server.pem if it is due and serves the result. It also picks
// up a server.pem replaced on disk (same CA and key). On failure the served
// certificate is kept; the error is logged, as an error once the served
// certificate has less than certUrgent left.
func (r *certRenewer) check(ctx context.Context, now time.Time) error {
	cert, renewed, err := r.ca.RenewServerCertificate(now, 0)
	if err != nil {
		r.renewals.WithLabelValues("failed").Inc()
		level := slog.LevelWarn
		if na := r.certs.NotAfter(); !na.IsZero() && na.Sub(now) < certUrgent {
			level = slog.LevelError
		}
		r.log.Log(ctx, level, "server certificate renewal failed", "not_after", r.certs.NotAfter(), "err", err)
		return err
	}
	prev := r.certs.Current()
	switch {
	case renewed:
		r.renewals.WithLabelValues("renewed").Inc()
		r.log.Info("server certificate renewed", "serial", cert.Leaf.SerialNumber.Text(16),
			"not_after", cert.Leaf.NotAfter, "dns", cert.Leaf.DNSNames, "ips", cert.Leaf.IPAddresses)
	case prev != nil && !bytes.Equal(prev.Certificate[0], cert.Certificate[0]):
		r.log.Info("server certificate reloaded from "+pki.ServerCertFile, "serial", cert.Leaf.SerialNumber.Text(16),
			"not_after", cert.Leaf.NotAfter)
	}
	r.certs.Set(cert)
	return nil
}

// start is the check at start-up: a failed renewal of a certificate that is
// still valid is logged and the current certificate served; the server does
// not start with an expired one (no agent nor API client would accept it).
func (r *certRenewer) start(ctx context.Context, now time.Time) error {
	cur, curErr := r.ca.ServerCertificate()
	if curErr == nil {
		r.certs.Set(cur)
	}
	rerr := r.check(ctx, now)
	if rerr == nil {
		return nil
	}
	if curErr != nil {
		return fmt.Errorf("server certificate: %w", rerr)
	}
	if !now.Before(cur.Leaf.NotAfter) {
		return fmt.Errorf("server certificate expired %s and could not be renewed: %w",
			cur.Leaf.NotAfter.UTC().Format(time.RFC3339), rerr)
	}
	return nil
}

// health reports the served certificate as a problem (for the API's
// healthz) once it has less than certUrgent left: renewal starts
// pki.ServerRenewBefore (30 days) before the end, so it has been failing for
// weeks, and every agent and API client will refuse the server when it ends.
func (r *certRenewer) health(now time.Time) []string {
	na := r.certs.NotAfter()
	if na.IsZero() {
		return nil
	}
	left := na.Sub(now)
	at := na.UTC().Format(time.RFC3339)
	switch {
	case left <= 0:
		return []string{fmt.Sprintf("server certificate expired at %s and could not be renewed (see the server log)", at)}
	case left < certUrgent:
		in := left.Round(time.Minute).String()
		if left >= 24*time.Hour {
			in = fmt.Sprintf("%.1f days", left.Hours()/24)
		}
		return []string{fmt.Sprintf("server certificate expires in %s (%s) and could not be renewed (see the server log)", in, at)}
	}
	return nil
}

// run checks every interval until ctx ends.
func (r *certRenewer) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = r.check(ctx, time.Now()) // logged; retried at the next tick
		}
	}
}
