package pipeline

import (
	"context"
	"errors"
	"slices"
	"testing"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// sink records what it took, or fails while err is set.
type sink struct {
	err  error
	took []uint64 // the findings' Count fields, in order
}

func (s *sink) Append(ctx context.Context, fs []*wirev1.Finding) error {
	if s.err != nil {
		return s.err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, f := range fs {
		s.took = append(s.took, f.Count)
	}
	return nil
}

func finding(n uint64, sev wirev1.Severity) *wirev1.Finding {
	return &wirev1.Finding{Count: n, Severity: sev}
}

// TestOutboxKeepsFindingsWhileTheSinkFails: findings a failing sink refused
// stay, in order and ahead of later ones, until it takes them; a run of
// failures turns Failed once and Recovered once.
func TestOutboxKeepsFindingsWhileTheSinkFails(t *testing.T) {
	var o Outbox
	s := &sink{err: errors.New("no space left on device")}
	o.Add([]*wirev1.Finding{finding(1, wirev1.Severity_SEVERITY_LOW), finding(2, wirev1.Severity_SEVERITY_HIGH)})
	var turns []Turn
	for i := range 3 {
		turn, err := o.Drain(context.Background(), s)
		if err == nil {
			t.Fatalf("drain %d into a failing sink: no error", i)
		}
		turns = append(turns, turn)
		o.Add([]*wirev1.Finding{finding(uint64(3+i), wirev1.Severity_SEVERITY_MEDIUM)})
	}
	s.err = nil
	turn, err := o.Drain(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	turns = append(turns, turn)
	if turn, _ := o.Drain(context.Background(), s); turn != Steady {
		t.Errorf("an empty drain after recovery: turn %v, want Steady", turn)
	}
	if want := []uint64{1, 2, 3, 4, 5}; !slices.Equal(s.took, want) {
		t.Errorf("sink took %v, want %v", s.took, want)
	}
	if want := []Turn{Failed, Steady, Steady, Recovered}; !slices.Equal(turns, want) {
		t.Errorf("turns %v, want %v", turns, want)
	}
	if st := o.Stats(); st.AppendErrors != 3 || st.Lost != 0 || st.Pending != 0 {
		t.Errorf("stats %+v, want 3 append errors, nothing lost or pending", st)
	}
}

// TestOutboxCancelledContextIsNoFailure: at shutdown a tick's drain gets a
// cancelled context; the findings stay for the last drain and no failure of
// the sink is counted.
func TestOutboxCancelledContextIsNoFailure(t *testing.T) {
	var o Outbox
	s := &sink{}
	o.Add([]*wirev1.Finding{finding(1, wirev1.Severity_SEVERITY_LOW)})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	turn, err := o.Drain(ctx, s)
	if !errors.Is(err, context.Canceled) || turn != Steady {
		t.Fatalf("drain with a cancelled context: turn %v, err %v; want Steady, context.Canceled", turn, err)
	}
	if st := o.Stats(); st.AppendErrors != 0 || st.Pending != 1 {
		t.Fatalf("stats %+v, want no append error and 1 pending", st)
	}
	if _, err := o.Drain(context.Background(), s); err != nil || !slices.Equal(s.took, []uint64{1}) {
		t.Fatalf("last drain: %v, took %v", err, s.took)
	}
}

// TestOutboxBound: beyond Max the oldest findings of the lowest severity go
// first, each counted; what stays keeps its order.
func TestOutboxBound(t *testing.T) {
	const (
		low  = wirev1.Severity_SEVERITY_LOW
		med  = wirev1.Severity_SEVERITY_MEDIUM
		high = wirev1.Severity_SEVERITY_HIGH
		crit = wirev1.Severity_SEVERITY_CRITICAL
	)
	tests := []struct {
		name string
		max  int
		add  [][]*wirev1.Finding
		want []uint64
		lost uint64
	}{
		{"within the bound", 3, [][]*wirev1.Finding{{finding(1, low), finding(2, low), finding(3, low)}}, []uint64{1, 2, 3}, 0},
		{"oldest low first", 3, [][]*wirev1.Finding{{finding(1, high), finding(2, low), finding(3, low)}, {finding(4, med)}}, []uint64{1, 3, 4}, 1},
		{"lows, then mediums", 2, [][]*wirev1.Finding{{finding(1, med), finding(2, low), finding(3, crit), finding(4, med), finding(5, low)}}, []uint64{3, 4}, 3},
		{"one batch over the bound", 2, [][]*wirev1.Finding{{finding(1, crit), finding(2, crit), finding(3, crit)}}, []uint64{2, 3}, 1},
		{"unspecified before low", 2, [][]*wirev1.Finding{{finding(1, low), finding(2, 0), finding(3, low)}}, []uint64{1, 3}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := Outbox{Max: tc.max}
			s := &sink{err: errors.New("no space left on device")}
			o.Add([]*wirev1.Finding{finding(0, wirev1.Severity_SEVERITY_CRITICAL)})
			if _, err := o.Drain(context.Background(), s); err == nil { // the sink fails: the bound applies
				t.Fatal("drain into a failing sink: no error")
			}
			o.Take()
			for _, fs := range tc.add {
				o.Add(fs)
			}
			s.err = nil
			if _, err := o.Drain(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.took, tc.want) {
				t.Errorf("kept %v, want %v", s.took, tc.want)
			}
			if st := o.Stats(); st.Lost != tc.lost {
				t.Errorf("lost %d, want %d", st.Lost, tc.lost)
			}
		})
	}
}

// TestOutboxBoundWhileFailing: a sink that keeps failing holds the outbox at
// its bound; the overflow is counted, and what is kept is appended later.
func TestOutboxBoundWhileFailing(t *testing.T) {
	o := Outbox{Max: 10}
	s := &sink{err: errors.New("input/output error")}
	for i := range 25 {
		o.Add([]*wirev1.Finding{finding(uint64(i), wirev1.Severity_SEVERITY_MEDIUM)})
		_, _ = o.Drain(context.Background(), s)
	}
	if st := o.Stats(); st.Pending != 10 || st.Lost != 15 || st.AppendErrors != 25 {
		t.Fatalf("stats %+v, want 10 pending, 15 lost, 25 append errors", st)
	}
	s.err = nil
	if _, err := o.Drain(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{15, 16, 17, 18, 19, 20, 21, 22, 23, 24}; !slices.Equal(s.took, want) {
		t.Fatalf("took %v, want the newest %v", s.took, want)
	}
}

// TestOutboxTake: an offline scan takes every finding at the end.
func TestOutboxTake(t *testing.T) {
	var o Outbox
	o.Add([]*wirev1.Finding{finding(1, 0), finding(2, 0)})
	if got := o.Take(); len(got) != 2 || got[0].Count != 1 || got[1].Count != 2 {
		t.Fatalf("took %v", got)
	}
	if o.Stats().Pending != 0 || len(o.Take()) != 0 {
		t.Fatal("findings left after Take")
	}
}

// TestOutboxUnboundedWhileTheSinkWorks: a working sink drains every tick,
// and between two ticks a fast offline replay (vigil-agent scan) may queue
// more findings than the bound: none is dropped (the bound, meant for a
// failing sink, made offline scans lose findings, depending on timing).
func TestOutboxUnboundedWhileTheSinkWorks(t *testing.T) {
	o := Outbox{Max: 10}
	for i := range 25 {
		o.Add([]*wirev1.Finding{finding(uint64(i), wirev1.Severity_SEVERITY_LOW)})
	}
	s := &sink{}
	if _, err := o.Drain(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if len(s.took) != 25 || o.Stats().Lost != 0 {
		t.Fatalf("took %d of 25, lost %d", len(s.took), o.Stats().Lost)
	}
}
