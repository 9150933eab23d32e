package detect

import (
	"context"
	"errors"
	"testing"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestDrainKeepsFindingsTheSinkRefused: drain took the pending findings,
// and when the sink refused them they were gone. Run's loop drains with the
// run's context, so at shutdown a tick that raced the cancellation handed
// the spool a cancelled context (spool.Append refuses it) and lost the
// findings of that tick; the final drain, with a fresh context, then had
// nothing left to append. A refused batch now stays pending for the next
// drain.
func TestDrainKeepsFindingsTheSinkRefused(t *testing.T) {
	p := &Pipeline{}
	p.queue([]*wirev1.Finding{{Detector: DetectorName, Count: 1}, {Detector: DetectorName, Count: 2}})
	refuse := errors.New("context canceled")
	var got []*wirev1.Finding
	sink := sinkFunc(func(ctx context.Context, fs []*wirev1.Finding) error {
		if err := ctx.Err(); err != nil {
			return refuse
		}
		got = append(got, fs...)
		return nil
	})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.drain(cancelled, sink); !errors.Is(err, refuse) {
		t.Fatalf("drain into a refusing sink: %v, want its error", err)
	}
	p.queue([]*wirev1.Finding{{Detector: DetectorName, Count: 3}})
	if err := p.drain(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Count != 1 || got[1].Count != 2 || got[2].Count != 3 {
		var counts []uint64
		for _, f := range got {
			counts = append(counts, f.Count)
		}
		t.Fatalf("findings appended after a refused drain: counts %v, want [1 2 3] (in order)", counts)
	}
}

type sinkFunc func(ctx context.Context, fs []*wirev1.Finding) error

func (f sinkFunc) Append(ctx context.Context, fs []*wirev1.Finding) error { return f(ctx, fs) }
