package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-edge/vigil/server/store"
)

// Retention of findings (Config.Retention): once at start and then every
// Config.RetentionInterval, the server deletes the findings it received
// more than Config.Retention ago, retentionBatch rows per transaction
// (store.PruneFindings says what goes with them and what stays). Zero, the
// default, keeps findings for ever: how long a CERT must (or may) keep
// evidence is its own policy, and deleting it cannot be undone, so the
// operator chooses it. The audit log is never pruned.
const (
	// DefaultRetentionInterval is how often the retention job runs.
	DefaultRetentionInterval = time.Hour
	// MinRetention is the shortest retention the server accepts: anything
	// shorter is more likely a typo (--retention 30m for 30 days) than a
	// policy.
	MinRetention = 24 * time.Hour
	// retentionBatch bounds the findings deleted per transaction, and so
	// how long the job holds the single writer: 110-200 ms per 5,000 on the
	// 2-vCPU VM under load (store.BenchmarkPruneFindings; every findings
	// index loses the rows too). The agents' batches waiting for the writer
	// take it between two transactions (database/sql hands a released
	// connection to a waiting request), so a backlog of years slows ingest
	// down while it is pruned but does not stop it.
	retentionBatch = 5000
)

// findingsPruner is what the retention job needs of the store.
type findingsPruner interface {
	PruneFindings(ctx context.Context, before time.Time, limit int) (int, error)
}

var _ findingsPruner = (*store.DB)(nil)

// retention is the periodic findings retention job.
type retention struct {
	db     findingsPruner
	keep   time.Duration
	batch  int
	now    func() time.Time
	log    *slog.Logger
	pruned prometheus.Counter
	runs   *prometheus.CounterVec
}

func newRetention(db findingsPruner, keep time.Duration, log *slog.Logger) *retention {
	return &retention{
		db: db, keep: keep, batch: retentionBatch, now: time.Now, log: log,
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "vigil", Subsystem: "server",
			Name: "findings_pruned_total", Help: "Findings deleted by the retention job (older than --retention)."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "vigil", Subsystem: "server",
			Name: "retention_runs_total", Help: "Runs of the findings retention job, by result (ok, failed)."},
			[]string{"result"}),
	}
}

func (r *retention) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{r.pruned, r.runs} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register retention metrics: %w", err)
		}
	}
	return nil
}

// prune runs the job once: batches until one deletes nothing, or ctx ends.
// It logs one line and returns how many findings it deleted.
func (r *retention) prune(ctx context.Context) (int, error) {
	start := r.now()
	before := start.Add(-r.keep)
	total, batches := 0, 0
	var err error
	for {
		var n int
		if n, err = r.db.PruneFindings(ctx, before, r.batch); err != nil {
			break
		}
		r.pruned.Add(float64(n)) // per batch: a failed run still counts what it deleted
		total += n
		if n == 0 {
			break
		}
		batches++
	}
	attrs := []any{"deleted", total, "batches", batches, "received_before", before.UTC().Format(time.RFC3339),
		"retention", r.keep.String(), "took", r.now().Sub(start).Round(time.Millisecond).String()}
	if err != nil {
		r.runs.WithLabelValues("failed").Inc()
		if !errors.Is(err, context.Canceled) {
			r.log.Error("findings retention failed", append(attrs, "err", err)...)
		}
		return total, fmt.Errorf("findings retention: %w", err)
	}
	r.runs.WithLabelValues("ok").Inc()
	r.log.Info("findings retention", attrs...)
	return total, nil
}

// run prunes at once, then every interval, until ctx ends.
func (r *retention) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_, _ = r.prune(ctx) // logged; the next run tries again
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// validRetention checks Config.Retention: 0 (keep for ever) or at least
// MinRetention.
func validRetention(d time.Duration) error {
	if d != 0 && d < MinRetention {
		return fmt.Errorf("retention %s: want 0 (keep findings for ever) or at least %s", d, MinRetention)
	}
	return nil
}
