package pipeline

import (
	"context"
	"fmt"
	"sync"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// DefaultOutboxMax bounds the findings an Outbox holds while its sink fails:
// about 4 MiB of findings at their usual size.
const DefaultOutboxMax = 4096

// Outbox holds a source's findings on their way to its sink (the spool).
// A failed append keeps them for the next Drain, so that a sink that fails
// for a while (a full or failing disk) loses nothing until the outbox is
// full; then it drops the oldest finding of the lowest severity, as the
// spool does, and counts it. While the sink works nothing is dropped. The zero value holds DefaultOutboxMax.
type Outbox struct {
	// Max bounds the findings held (DefaultOutboxMax if ≤ 0). Set it before
	// the first Add.
	Max int

	mu      sync.Mutex
	pending []*wirev1.Finding
	failing bool   // the last append failed
	errs    uint64 // failed appends
	lost    uint64 // findings dropped because the outbox was full
}

// Add queues findings for the next Drain. The bound applies while the
// sink fails: between the drains of a working sink, a fast offline replay
// may queue more than Max, and none of those may be dropped.
func (o *Outbox) Add(fs []*wirev1.Finding) {
	if len(fs) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pending = append(o.pending, fs...)
	if o.failing {
		o.trim()
	}
}

// trim drops the findings beyond max: the oldest of the lowest severity
// first. Called with mu held.
func (o *Outbox) trim() {
	limit := o.Max
	if limit <= 0 {
		limit = DefaultOutboxMax
	}
	excess := len(o.pending) - limit
	if excess <= 0 {
		return
	}
	drop := make([]bool, len(o.pending))
	for sev := wirev1.Severity(0); excess > 0 && sev <= wirev1.Severity_SEVERITY_CRITICAL; sev++ {
		for i, f := range o.pending {
			if excess == 0 {
				break
			}
			if f.GetSeverity() == sev {
				drop[i] = true
				excess--
			}
		}
	}
	for i := 0; excess > 0 && i < len(o.pending); i++ { // severities beyond the known ones
		if !drop[i] {
			drop[i] = true
			excess--
		}
	}
	kept := o.pending[:0]
	for i, f := range o.pending {
		if drop[i] {
			o.lost++
			continue
		}
		kept = append(kept, f)
	}
	clear(o.pending[len(kept):])
	o.pending = kept
}

// Turn tells whether a Drain changed the sink's state, so that a caller
// logs a run of failures once, and its end.
type Turn int

// The turns of a Drain.
const (
	Steady    Turn = iota // as the drain before: working, or failing again
	Failed                // the first failure after a working append (or the first append)
	Recovered             // a working append after failed ones
)

// Drain appends the queued findings to sink. If the sink fails they stay
// queued (ahead of any added meanwhile) and the error is returned; the
// caller retries with a later Drain. A context that ended is not counted as
// the sink's failure: at shutdown the last drain, with a context of its
// own, appends them.
func (o *Outbox) Drain(ctx context.Context, sink Sink) (Turn, error) {
	o.mu.Lock()
	fs := o.pending
	o.pending = nil
	o.mu.Unlock()
	if len(fs) == 0 {
		return Steady, nil
	}
	err := sink.Append(ctx, fs)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.pending = append(fs, o.pending...)
		o.trim()
		if ctx.Err() != nil {
			return Steady, fmt.Errorf("append %d findings: %w", len(fs), err)
		}
		o.errs++
		turn := Steady
		if !o.failing {
			turn = Failed
		}
		o.failing = true
		return turn, fmt.Errorf("append %d findings: %w", len(fs), err)
	}
	turn := Steady
	if o.failing {
		turn = Recovered
	}
	o.failing = false
	return turn, nil
}

// Take removes and returns every queued finding (an offline scan's result).
func (o *Outbox) Take() []*wirev1.Finding {
	o.mu.Lock()
	defer o.mu.Unlock()
	fs := o.pending
	o.pending = nil
	return fs
}

// OutboxStats are an outbox's counters.
type OutboxStats struct {
	Pending      int    // findings waiting for the sink
	AppendErrors uint64 // failed appends (each retried by the next Drain)
	Lost         uint64 // findings dropped because the outbox was full
}

// Stats returns the outbox's counters.
func (o *Outbox) Stats() OutboxStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return OutboxStats{Pending: len(o.pending), AppendErrors: o.errs, Lost: o.lost}
}
