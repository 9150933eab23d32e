package uplink

import (
	"math/rand/v2"
	"time"
)

// Backoff is exponential backoff with full jitter: the n-th delay is
// uniformly random in [0, min(Max, Min*2^n)). It is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	rnd      *rand.Rand
	attempt  int
}

// NewBackoff returns a backoff; rnd nil means a randomly seeded source.
func NewBackoff(min, max time.Duration, rnd *rand.Rand) *Backoff {
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Backoff{Min: min, Max: max, rnd: rnd}
}

// Ceiling is the upper bound of the next delay.
func (b *Backoff) Ceiling() time.Duration {
	c := b.Min
	for i := 0; i < b.attempt && c < b.Max; i++ {
		c *= 2
	}
	return min(c, b.Max)
}

// Next returns the next delay and advances.
func (b *Backoff) Next() time.Duration {
	c := b.Ceiling()
	b.attempt++
	if c <= 0 {
		return 0
	}
	return time.Duration(b.rnd.Int64N(int64(c)))
}

// Reset starts over after progress.
func (b *Backoff) Reset() { b.attempt = 0 }

// Attempts is the number of delays since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }
