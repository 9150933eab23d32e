// Package metrics serves the agent's Prometheus metrics and a JSON status
// document on a localhost listener: spool depth, bytes and drops, findings
// in, suppressed and out, acks, reconnects, connection state and certificate expiry.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-edge/vigil/agent/uplink"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// StatusPath is the JSON status document's path on the listener.
const StatusPath = "/status"

// Sources are what the metrics read (at scrape time).
type Sources struct {
	Spool       func() *wirev1.SpoolStats
	Uplink      func() uplink.Stats
	FindingsIn  func() uint64            // findings appended by the pipeline
	Suppressed  func() uint64            // findings dropped by the server's suppressions (optional)
	Counters    func() map[string]uint64 // pipeline counters (optional)
	AgentID     string
	Entity      string
	Version     string
	StartedUnix int64
}

// Status is the JSON document at StatusPath (also printed by `status --json`).
type Status struct {
	AgentID      string            `json:"agent_id"`
	Entity       string            `json:"entity"`
	Version      string            `json:"version,omitempty"`
	Connected    bool              `json:"connected"`
	CertNotAfter time.Time         `json:"cert_not_after,omitzero"`
	Spool        *SpoolStats       `json:"spool,omitempty"`
	Uplink       *uplink.Stats     `json:"uplink,omitempty"`
	FindingsIn   uint64            `json:"findings_in"`
	Suppressed   uint64            `json:"findings_suppressed"`
	Counters     map[string]uint64 `json:"counters,omitempty"`
}

// SpoolStats is wirev1.SpoolStats with stable JSON names and numbers.
type SpoolStats struct {
	Depth         uint64 `json:"depth"`
	Bytes         uint64 `json:"bytes"`
	Dropped       uint64 `json:"dropped"`
	NextSeq       uint64 `json:"next_seq"`
	AckedSeq      uint64 `json:"acked_seq"`
	CapacityBytes uint64 `json:"capacity_bytes,omitempty"`
}

// SpoolJSON converts spool stats for JSON output.
func SpoolJSON(s *wirev1.SpoolStats) *SpoolStats {
	if s == nil {
		return nil
	}
	return &SpoolStats{Depth: s.Depth, Bytes: s.Bytes, Dropped: s.Dropped, NextSeq: s.NextSeq, AckedSeq: s.AckedSeq, CapacityBytes: s.CapacityBytes}
}

// Registry builds a registry with the agent's metrics.
func Registry(s Sources) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "vigil_agent", Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "vigil_agent", Name: name, Help: help}, f))
	}
	gauge("spool_depth", "Findings waiting in the spool for an ack.", func() float64 { return float64(s.Spool().Depth) })
	gauge("spool_bytes", "Bytes of findings waiting in the spool.", func() float64 { return float64(s.Spool().Bytes) })
	gauge("spool_capacity_bytes", "Bound of the spool in bytes.", func() float64 { return float64(s.Spool().CapacityBytes) })
	counter("spool_dropped_total", "Findings dropped because the spool was full.", func() float64 { return float64(s.Spool().Dropped) })
	gauge("spool_acked_seq", "Highest sequence number acknowledged by the server.", func() float64 { return float64(s.Spool().AckedSeq) })
	if s.FindingsIn != nil {
		counter("findings_in_total", "Findings appended to the spool by the pipeline.", func() float64 { return float64(s.FindingsIn()) })
	}
	if s.Suppressed != nil {
		counter("findings_suppressed_total", "Findings dropped before the spool because a suppression of the server (a false positive) matched.",
			func() float64 { return float64(s.Suppressed()) })
	}
	up := func(f func(uplink.Stats) float64) func() float64 { return func() float64 { return f(s.Uplink()) } }
	counter("findings_sent_total", "Findings sent to the server (re-sends included).", up(func(u uplink.Stats) float64 { return float64(u.FindingsSent) }))
	counter("findings_acked_total", "Sequence numbers acknowledged by the server.", up(func(u uplink.Stats) float64 { return float64(u.FindingsAcked) }))
	counter("acks_total", "Acks received.", up(func(u uplink.Stats) float64 { return float64(u.Acks) }))
	counter("batches_sent_total", "Findings batches sent.", up(func(u uplink.Stats) float64 { return float64(u.BatchesSent) }))
	counter("reconnects_total", "Connection attempts after a failure.", up(func(u uplink.Stats) float64 { return float64(u.Reconnects) }))
	counter("cert_renewals_total", "Certificate renewals.", up(func(u uplink.Stats) float64 { return float64(u.Renewals) }))
	counter("cert_renewal_failures_total", "Failed certificate renewals.", up(func(u uplink.Stats) float64 { return float64(u.RenewFailures) }))
	counter("findings_refused_total", "Findings dropped after the server refused each alone.", up(func(u uplink.Stats) float64 { return float64(u.FindingsRefused) }))
	counter("seq_renumbers_total", "Times the spool's seqs were at or below the server's highest stored seq (a lost or recreated spool) and renumbered above it.",
		up(func(u uplink.Stats) float64 { return float64(u.SeqRenumbers) }))
	counter("findings_renumbered_total", "Findings given new seqs by those renumberings.", up(func(u uplink.Stats) float64 { return float64(u.FindingsRenumbered) }))
	counter("model_status_dropped_total", "Model status reports lost unsent (too many distinct ones waited).", up(func(u uplink.Stats) float64 { return float64(u.ModelStatusDropped) }))
	counter("model_status_resent_total", "Model status reports sent again after their session ended.", up(func(u uplink.Stats) float64 { return float64(u.ModelStatusResent) }))
	counter("model_status_restored_total", "Model status reports of the last run restored from the state directory at start.", up(func(u uplink.Stats) float64 { return float64(u.ModelStatusRestored) }))
	gauge("model_status_corrupt_files", "Damaged model status files moved aside in the state directory (their reports are lost).", up(func(u uplink.Stats) float64 { return float64(u.ModelStatusCorruptFiles) }))
	if s.Counters != nil {
		reg.MustRegister(pipelineCounters{s.Counters})
	}
	gauge("connected", "1 while a session with the server is up.", up(func(u uplink.Stats) float64 {
		if u.Connected {
			return 1
		}
		return 0
	}))
	gauge("cert_expiry_timestamp_seconds", "Expiry of the agent certificate (Unix time).", up(func(u uplink.Stats) float64 {
		if u.CertNotAfter.IsZero() {
			return 0
		}
		return float64(u.CertNotAfter.Unix())
	}))
	return reg
}

// pipelineCounterDesc describes the pipelines' counters (Sources.Counters):
// the same names as in Status and in the Status messages to the server.
// Most are counters; a few are levels (watch_dirs, calibration values), so
// the metric is untyped.
var pipelineCounterDesc = prometheus.NewDesc("vigil_agent_pipeline_stat",
	"Counters and levels of the detection pipelines (captured, kernel_drops, events_lost, watch_dropped, *_append_errors, *_findings_lost, ...), by name.",
	[]string{"name"}, nil)

// pipelineCounters exports Sources.Counters, whose names depend on the
// pipelines that run, as one labelled metric.
type pipelineCounters struct{ f func() map[string]uint64 }

func (pipelineCounters) Describe(ch chan<- *prometheus.Desc) { ch <- pipelineCounterDesc }

func (c pipelineCounters) Collect(ch chan<- prometheus.Metric) {
	for name, v := range c.f() {
		ch <- prometheus.MustNewConstMetric(pipelineCounterDesc, prometheus.UntypedValue, float64(v), name)
	}
}

// StatusOf assembles the status document.
func StatusOf(s Sources) Status {
	st := Status{AgentID: s.AgentID, Entity: s.Entity, Version: s.Version}
	if s.Spool != nil {
		st.Spool = SpoolJSON(s.Spool())
	}
	if s.Uplink != nil {
		u := s.Uplink()
		st.Uplink = &u
		st.Connected = u.Connected
		st.CertNotAfter = u.CertNotAfter
	}
	if s.FindingsIn != nil {
		st.FindingsIn = s.FindingsIn()
	}
	if s.Suppressed != nil {
		st.Suppressed = s.Suppressed()
	}
	if s.Counters != nil {
		st.Counters = s.Counters()
	}
	return st
}

// Serve listens on addr (a loopback address) and serves /metrics and
// /status until ctx ends.
func Serve(ctx context.Context, addr string, s Sources, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return ServeListener(ctx, ln, s, log)
}

// serverLimits bound what one client of the listener may hold: the metrics are GET-only, small
// and local, so a request (headers and any body) must arrive within ReadTimeout, its answer leave
// within WriteTimeout, and an idle keep-alive connection is closed after IdleTimeout. Without
// them a client that sends headers and then stalls (or trickles) pins a connection and a
// goroutine for ever.
type serverLimits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

// defaultLimits are the listener's limits. WriteTimeout leaves room for a scrape (Prometheus'
// default scrape timeout is 10 s); a GET needs a few hundred header bytes.
var defaultLimits = serverLimits{
	ReadHeaderTimeout: 5 * time.Second,
	ReadTimeout:       10 * time.Second,
	WriteTimeout:      15 * time.Second,
	IdleTimeout:       60 * time.Second,
	MaxHeaderBytes:    16 << 10,
}

// ServeListener is Serve on an open listener.
func ServeListener(ctx context.Context, ln net.Listener, s Sources, log *slog.Logger) error {
	return serveListener(ctx, ln, s, log, defaultLimits)
}

func serveListener(ctx context.Context, ln net.Listener, s Sources, log *slog.Logger, lim serverLimits) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(Registry(s), promhttp.HandlerOpts{}))
	mux.HandleFunc("GET "+StatusPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(StatusOf(s))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: lim.ReadHeaderTimeout, ReadTimeout: lim.ReadTimeout,
		WriteTimeout: lim.WriteTimeout, IdleTimeout: lim.IdleTimeout, MaxHeaderBytes: lim.MaxHeaderBytes}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}
