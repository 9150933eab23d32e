package filedetect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/watch"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

type sinkFunc func(ctx context.Context, fs []*wirev1.Finding) error

func (f sinkFunc) Append(ctx context.Context, fs []*wirev1.Finding) error { return f(ctx, fs) }

// TestDrainKeepsFindingsTheSinkRefused: findings the sink refused (the
// spool refuses a cancelled context, as a tick racing the shutdown hands
// it) stay pending for the next drain, in order; they were dropped.
func TestDrainKeepsFindingsTheSinkRefused(t *testing.T) {
	e := &engine{}
	e.queue([]*wirev1.Finding{{Count: 1}, {Count: 2}})
	var got []uint64
	sink := sinkFunc(func(ctx context.Context, fs []*wirev1.Finding) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, f := range fs {
			got = append(got, f.Count)
		}
		return nil
	})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.drain(cancelled, sink, slog.New(slog.DiscardHandler)); !errors.Is(err, context.Canceled) {
		t.Fatalf("drain into a refusing sink: %v", err)
	}
	e.queue([]*wirev1.Finding{{Count: 3}})
	if err := e.drain(context.Background(), sink, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("appended %v, want [1 2 3]", got)
	}
}

// TestRewatchKeepsWatchCounters: when a lost root makes the pipeline start
// a new watcher, the counters of the one it replaces are kept: the events
// it dropped (watch_dropped), its overflows and rescans went back to zero in
// Status and metrics, which then showed no loss at all (only roots lost was
// carried over).
func TestRewatchKeepsWatchCounters(t *testing.T) {
	root := t.TempDir()
	cfg := Config{Watch: watch.Config{Roots: []string{root}, BatchSize: 1, BatchDelay: time.Millisecond}}
	p := &Pipeline{cfg: cfg, log: slog.New(slog.DiscardHandler), eng: &engine{cfg: &cfg, agg: NewAggregator(AggregatorConfig{})}}
	w, err := watch.New(cfg.Watch, p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.w.Store(w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, make(chan []event.File)) }() // nobody reads: every batch is dropped
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; w.Stats().Dropped == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the watcher dropped nothing")
		}
		if err := os.WriteFile(filepath.Join(root, fmt.Sprintf("f%d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	dropped := w.Stats().Dropped
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	w2 := p.rewatch(rctx)
	if w2 == nil {
		t.Fatal("no new watcher")
	}
	defer func() {
		c, cc := context.WithCancel(context.Background())
		cc()
		_ = w2.Run(c, make(chan []event.File, 1))
	}()
	if got := p.Stats().Watch.Dropped; got < dropped {
		t.Fatalf("watch_dropped went from %d to %d when the watcher was replaced", dropped, got)
	}
	if got := p.Counters()["watch_dropped"]; got < dropped {
		t.Fatalf("counter watch_dropped %d, want at least %d", got, dropped)
	}
}
