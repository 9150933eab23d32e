package uplink

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffCeilingsAndJitter(t *testing.T) {
	b := NewBackoff(200*time.Millisecond, 30*time.Second, rand.New(rand.NewPCG(1, 2)))
	want := []time.Duration{200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000}
	for i, w := range want {
		if c := b.Ceiling(); c != w*time.Millisecond {
			t.Fatalf("attempt %d: ceiling %v, want %v", i, c, w*time.Millisecond)
		}
		d := b.Next()
		if d < 0 || d >= w*time.Millisecond {
			t.Fatalf("attempt %d: delay %v outside [0, %v)", i, d, w*time.Millisecond)
		}
	}
	b.Reset()
	if b.Ceiling() != 200*time.Millisecond || b.Attempts() != 0 {
		t.Fatalf("after reset: ceiling %v", b.Ceiling())
	}
	// Many attempts never overflow.
	for i := 0; i < 200; i++ {
		if d := b.Next(); d < 0 || d >= 30*time.Second {
			t.Fatalf("delay %v", d)
		}
	}
}

func TestBackoffDeterministic(t *testing.T) {
	seq := func() []time.Duration {
		b := NewBackoff(time.Millisecond, time.Second, rand.New(rand.NewPCG(42, 42)))
		var out []time.Duration
		for i := 0; i < 12; i++ {
			out = append(out, b.Next())
		}
		return out
	}
	a, c := seq(), seq()
	for i := range a {
		if a[i] != c[i] {
			t.Fatalf("same seed, different delays at %d: %v vs %v", i, a[i], c[i])
		}
	}
	// Full jitter spreads: the delays are not all at the ceiling.
	spread := false
	for i := range a {
		if a[i] != a[0] {
			spread = true
		}
	}
	if !spread {
		t.Fatalf("no jitter: %v", a)
	}
}
