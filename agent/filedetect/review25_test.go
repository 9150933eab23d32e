package filedetect

import (
	"context"
	"errors"
	"testing"

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
	if err := e.drain(cancelled, sink); !errors.Is(err, context.Canceled) {
		t.Fatalf("drain into a refusing sink: %v", err)
	}
	e.queue([]*wirev1.Finding{{Count: 3}})
	if err := e.drain(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("appended %v, want [1 2 3]", got)
	}
}
