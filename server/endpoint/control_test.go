package endpoint

import (
	"testing"
	"time"
)

// TestStatusLimiter checks the ModelStatus token bucket: a burst of modelStatusBurst reports
// passes at once, the next is dropped and counted, and one report per modelStatusEvery passes
// again afterwards (with no credit beyond the burst after a long pause).
func TestStatusLimiter(t *testing.T) {
	var l statusLimiter
	t0 := time.Unix(1000, 0)
	for i := range modelStatusBurst {
		if !l.allow(t0) {
			t.Fatalf("report %d of the burst dropped", i)
		}
	}
	if l.allow(t0) || l.allow(t0) || l.dropped != 2 {
		t.Fatalf("reports beyond the burst allowed (dropped %d)", l.dropped)
	}
	if !l.allow(t0.Add(modelStatusEvery)) {
		t.Fatal("no report allowed one interval later")
	}
	if l.allow(t0.Add(modelStatusEvery)) {
		t.Fatal("two reports allowed in one interval after the burst")
	}
	// A long pause refills the bucket up to the burst, not beyond.
	t1 := t0.Add(time.Hour)
	n := 0
	for l.allow(t1) {
		n++
		if n > 10*modelStatusBurst {
			break
		}
	}
	if n != modelStatusBurst {
		t.Fatalf("%d reports allowed after a long pause, want %d", n, modelStatusBurst)
	}
}
