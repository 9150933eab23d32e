package suppress

import (
	"context"
	"sync/atomic"

	"github.com/vigil-edge/vigil/agent/pipeline"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Filter is a pipeline.Sink that drops the findings a rule of the current
// set matches and passes the others on to next. Replace swaps the set at
// once; Append is safe for concurrent use.
type Filter struct {
	next       pipeline.Sink
	cur        atomic.Pointer[index]
	suppressed atomic.Uint64
}

var _ pipeline.Sink = (*Filter)(nil)

// index is a set by detector (a finding is only compared with its
// detector's rules).
type index struct {
	gen        uint64
	n          int
	byDetector map[string][]Rule
}

func newIndex(s Set) *index {
	ix := &index{gen: s.Generation, n: len(s.Rules), byDetector: map[string][]Rule{}}
	for _, r := range s.Rules {
		ix.byDetector[r.Detector] = append(ix.byDetector[r.Detector], r)
	}
	return ix
}

func (ix *index) matches(f *wirev1.Finding) bool {
	detector, c := serverView(f)
	for _, r := range ix.byDetector[detector] {
		if r.Matches(detector, c) {
			return true
		}
	}
	return false
}

// serverView returns f's detector and context as the server stores them:
// the spool fits findings into the protocol's limits (wirev1.TrimFinding)
// after this filter, and the server's rules are made of the stored
// findings, cut.
func serverView(f *wirev1.Finding) (string, *wirev1.FindingContext) {
	c := f.GetContext()
	if len(f.Detector) <= wirev1.MaxDetectorLen && (c == nil || (len(c.SrcIp) <= wirev1.MaxShortStringLen &&
		len(c.DstIp) <= wirev1.MaxShortStringLen && len(c.Proto) <= wirev1.MaxShortStringLen && len(c.Path) <= wirev1.MaxPathLen)) {
		return f.Detector, c
	}
	t := &wirev1.Finding{Detector: f.Detector, Context: c}
	wirev1.TrimFinding(t) // copies the context before cutting it
	return t.Detector, t.Context
}

// NewFilter returns a filter in front of next applying s.
func NewFilter(next pipeline.Sink, s Set) *Filter {
	f := &Filter{next: next}
	f.cur.Store(newIndex(s))
	return f
}

// Replace makes s the set that applies (the whole set: nothing is merged).
func (f *Filter) Replace(s Set) { f.cur.Store(newIndex(s)) }

// Len is the number of rules that apply.
func (f *Filter) Len() int { return f.cur.Load().n }

// Generation is the generation of the set that applies.
func (f *Filter) Generation() uint64 { return f.cur.Load().gen }

// Suppressed is the number of findings dropped so far.
func (f *Filter) Suppressed() uint64 { return f.suppressed.Load() }

// Append passes the findings no rule matches on to next (all of them when
// the set is empty; nothing when every one is suppressed). The caller's
// slice is not modified.
func (f *Filter) Append(ctx context.Context, fs []*wirev1.Finding) error {
	ix := f.cur.Load()
	if ix.n == 0 {
		return f.next.Append(ctx, fs)
	}
	var kept []*wirev1.Finding
	var n uint64
	for i, fd := range fs {
		if fd == nil || !ix.matches(fd) {
			if kept != nil {
				kept = append(kept, fd)
			}
			continue
		}
		n++
		if kept == nil {
			kept = make([]*wirev1.Finding, i, len(fs))
			copy(kept, fs[:i])
		}
	}
	if kept == nil {
		return f.next.Append(ctx, fs)
	}
	// Counted once the batch is taken: a caller whose append failed
	// appends the same findings again (the pipelines keep them pending).
	if len(kept) > 0 {
		if err := f.next.Append(ctx, kept); err != nil {
			return err
		}
	}
	f.suppressed.Add(n)
	return nil
}
