package endpoint

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the endpoint's Prometheus metrics (namespace vigil_server).
type metrics struct {
	connections           prometheus.Gauge
	connectionsTotal      *prometheus.CounterVec // by auth: mtls | enroll
	handshakeRefused      *prometheus.CounterVec // by reason
	streams               *prometheus.CounterVec // by kind
	framesRejected        *prometheus.CounterVec // by code
	findingsReceived      prometheus.Counter
	findingsCommitted     prometheus.Counter
	findingsDuplicate     prometheus.Counter
	acks                  prometheus.Counter
	slowDowns             prometheus.Counter
	commitSeconds         prometheus.Histogram
	commitErrors          prometheus.Counter
	commitsInFlight       prometheus.GaugeFunc
	enrollments           *prometheus.CounterVec // by result: ok | token_invalid | bad_csr | internal
	renewals              *prometheus.CounterVec // by result
	fetchBytes            prometheus.Counter
	pushes                prometheus.Counter
	suppressionsTruncated prometheus.Counter
	panics                prometheus.Counter
	revokedDisconnect     prometheus.Counter
	modelStatusDropped    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "vigil", "server"
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "quic_connections", Help: "Open agent QUIC connections."}),
		connectionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "quic_connections_total", Help: "Accepted agent QUIC connections, by authentication (mtls, enroll)."}, []string{"auth"}),
		handshakeRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "handshakes_refused_total", Help: "Handshakes and connections refused, by reason (revoked, bad_identity, unverified, enroll_limit). " +
				"Chains from another CA are refused inside crypto/tls and are not counted here."}, []string{"reason"}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "streams_total", Help: "Streams opened by agents, by kind."}, []string{"kind"}),
		framesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "frames_rejected_total", Help: "Connections closed for a protocol violation, by error code."}, []string{"code"}),
		findingsReceived: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "findings_received_total", Help: "Findings received in valid batches."}),
		findingsCommitted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "findings_committed_total", Help: "Findings newly committed to the store."}),
		findingsDuplicate: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "findings_duplicates_total", Help: "Findings received again (same agent and seq) and ignored."}),
		acks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "acks_total", Help: "Acks sent after a committed batch."}),
		slowDowns: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "slow_downs_total", Help: "Acks that carried a SlowDown because the store was loaded."}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "commit_seconds", Help: "Latency of one findings batch commit, queueing included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "commit_errors_total", Help: "Findings batches the store failed to commit."}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "enrollments_total", Help: "Enrollment requests, by result."}, []string{"result"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "renewals_total", Help: "Certificate renewals, by result."}, []string{"result"}),
		fetchBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "fetch_bytes_total", Help: "Bundle bytes served by FETCH."}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "control_pushes_total", Help: "ServerControl messages pushed to agents."}),
		suppressionsTruncated: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "suppressions_truncated_total", Help: "Suppressions messages that left out an entity's oldest suppressions (over the bound)."}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "handler_panics_total", Help: "Panics recovered in connection or stream handlers (bugs)."}),
		revokedDisconnect: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "revoked_disconnects_total", Help: "Live connections closed because their agent was revoked."}),
		modelStatusDropped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "model_status_dropped_total", Help: "Model status reports dropped because an agent sent more than its rate allows."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connections, m.connectionsTotal, m.handshakeRefused, m.streams,
		m.framesRejected, m.findingsReceived, m.findingsCommitted, m.findingsDuplicate, m.acks, m.slowDowns,
		m.commitSeconds, m.commitErrors, m.enrollments, m.renewals, m.fetchBytes, m.pushes, m.suppressionsTruncated, m.panics,
		m.revokedDisconnect, m.modelStatusDropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// registerInFlight exposes the number of commits in flight.
func (m *metrics) registerInFlight(reg prometheus.Registerer, f func() float64) error {
	if reg == nil {
		return nil
	}
	m.commitsInFlight = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "vigil", Subsystem: "server",
		Name: "commits_in_flight", Help: "Findings batch commits waiting for or holding the store."}, f)
	if err := reg.Register(m.commitsInFlight); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return nil
}
