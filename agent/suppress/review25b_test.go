package suppress

import (
	"context"
	"errors"
	"testing"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// failOnce refuses its first Append (the spool at shutdown, with a
// cancelled context) and takes the next ones.
type failOnce struct{ calls, got int }

func (s *failOnce) Append(_ context.Context, fs []*wirev1.Finding) error {
	s.calls++
	if s.calls == 1 {
		return errors.New("refused")
	}
	s.got += len(fs)
	return nil
}

// TestSuppressedCountedOnceWhenRetried: the pipelines keep a batch the
// spool refused and append it again; its suppressed findings were counted
// at every attempt, so findings_suppressed overstated what was dropped.
func TestSuppressedCountedOnceWhenRetried(t *testing.T) {
	next := &failOnce{}
	f := NewFilter(next, Set{Generation: 1, Rules: []Rule{{Detector: "d"}}})
	fs := []*wirev1.Finding{{Detector: "d"}, {Detector: "other"}}
	if err := f.Append(context.Background(), fs); err == nil {
		t.Fatal("first append succeeded")
	}
	if err := f.Append(context.Background(), fs); err != nil {
		t.Fatal(err)
	}
	if next.got != 1 {
		t.Fatalf("next got %d findings, want 1", next.got)
	}
	if got := f.Suppressed(); got != 1 {
		t.Fatalf("Suppressed %d after one suppressed finding appended twice (once refused), want 1", got)
	}
}
