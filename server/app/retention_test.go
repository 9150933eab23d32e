package app

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestRetentionPrune: one run of the job on a real store, with the job's
// clock moved instead of waiting: findings younger than the retention stay;
// older ones go in bounded batches, counted and logged; the agents'
// HighestSeq stays.
func TestRetentionPrune(t *testing.T) {
	const day = 24 * time.Hour
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		ahead       time.Duration // the job's clock, ahead of the store's
		wantDeleted int
		wantLog     string
	}{
		{"young findings stay", 30 * day, 0, "deleted=0 batches=0"},
		{"old findings go", 366 * day, 12, "deleted=12 batches=3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := store.Open(ctx, filepath.Join(t.TempDir(), DBFile), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for _, agent := range []string{"a1", "a2"} {
				var fs []*wirev1.Finding
				for seq := uint64(1); seq <= 6; seq++ {
					fs = append(fs, &wirev1.Finding{Seq: seq, Detector: "netflow"})
				}
				if _, err := db.InsertFindings(ctx, agent, "e1", fs); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			r := newRetention(db, 365*day, slog.New(slog.NewTextHandler(&logs, nil)))
			r.batch = 5
			now := time.Now().Add(tc.ahead)
			r.now = func() time.Time { return now }

			n, err := r.prune(ctx)
			if err != nil || n != tc.wantDeleted {
				t.Fatalf("prune = %d, %v; want %d", n, err, tc.wantDeleted)
			}
			if got := retentionMetric(t, r, "vigil_server_findings_pruned_total", ""); got != float64(tc.wantDeleted) {
				t.Errorf("findings_pruned_total = %v, want %d", got, tc.wantDeleted)
			}
			if got := retentionMetric(t, r, "vigil_server_retention_runs_total", "ok"); got != 1 {
				t.Errorf("retention_runs_total{ok} = %v, want 1", got)
			}
			if !strings.Contains(logs.String(), "msg=\"findings retention\"") || !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log %q, want a line with %q", logs.String(), tc.wantLog)
			}
			for _, agent := range []string{"a1", "a2"} {
				if hs, err := db.HighestSeq(ctx, agent); err != nil || hs != 6 {
					t.Errorf("HighestSeq(%s) = %d, %v; want 6", agent, hs, err)
				}
			}
		})
	}
}

type failingPruner struct{ calls int }

func (p *failingPruner) PruneFindings(context.Context, time.Time, int) (int, error) {
	p.calls++
	if p.calls == 1 {
		return 7, nil
	}
	return 0, errors.New("disk I/O error")
}

// TestRetentionPruneFails: a run that fails after a batch counts the rows
// that batch deleted, counts the failed run and logs the error.
func TestRetentionPruneFails(t *testing.T) {
	var logs bytes.Buffer
	r := newRetention(&failingPruner{}, 30*24*time.Hour, slog.New(slog.NewTextHandler(&logs, nil)))
	n, err := r.prune(context.Background())
	if err == nil || n != 7 {
		t.Fatalf("prune = %d, %v; want 7 and an error", n, err)
	}
	if got := retentionMetric(t, r, "vigil_server_findings_pruned_total", ""); got != 7 {
		t.Errorf("findings_pruned_total = %v, want 7", got)
	}
	if got := retentionMetric(t, r, "vigil_server_retention_runs_total", "failed"); got != 1 {
		t.Errorf("retention_runs_total{failed} = %v, want 1", got)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "disk I/O error") {
		t.Errorf("log %q", logs.String())
	}
}

// TestRetentionConfig: Start refuses a retention shorter than a day
// (before it opens anything), and accepts 0 (off).
func TestRetentionConfig(t *testing.T) {
	for _, tc := range []struct {
		d  time.Duration
		ok bool
	}{{0, true}, {MinRetention, true}, {365 * 24 * time.Hour, true}, {time.Hour, false}, {-time.Hour, false}} {
		if err := validRetention(tc.d); (err == nil) != tc.ok {
			t.Errorf("validRetention(%s) = %v", tc.d, err)
		}
	}
	_, err := Start(context.Background(), Config{DataDir: t.TempDir(), Retention: 30 * time.Minute})
	if err == nil || !strings.Contains(err.Error(), "retention 30m0s") {
		t.Errorf("Start with 30m retention: %v", err)
	}
}

// retentionMetric reads one of the job's counters as the server's registry
// exposes it (result: the label's value, "" for none).
func retentionMetric(t *testing.T, r *retention, name, result string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := r.register(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if result == "" && len(m.GetLabel()) == 0 {
				return m.GetCounter().GetValue()
			}
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "result" && lp.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
