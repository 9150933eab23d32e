package ring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// DefaultSpin is how long an idle consumer polls before it sleeps on the
// wake pipe.
const DefaultSpin = 20 * time.Microsecond

// Consumer is the reading side of a ring. It is not safe for concurrent use.
type Consumer struct {
	r    *Ring
	tail uint64
	wake *os.File
	buf  [64]byte

	// Spin is how long Next polls an empty ring before sleeping.
	Spin time.Duration

	sleeps atomic.Uint64
}

// NewConsumer returns the consumer of r. wake is the read end of the wake
// pipe; it should be in non-blocking mode (so that deadlines work, see
// Interrupt). The Consumer takes ownership of wake. With a nil wake the
// consumer polls with short sleeps instead (tests only).
func NewConsumer(r *Ring, wake *os.File) *Consumer {
	return &Consumer{r: r, tail: r.Tail(), wake: wake, Spin: DefaultSpin}
}

// Sleeps returns how many times the consumer blocked on the wake pipe.
func (c *Consumer) Sleeps() uint64 { return c.sleeps.Load() }

// Tail returns the consumer's released sequence.
func (c *Consumer) Tail() uint64 { return c.tail }

// available returns the number of published, unreleased records.
func (c *Consumer) available() (uint64, error) {
	h := atomic.LoadUint64(c.r.head)
	if h < c.tail || h-c.tail > c.r.capacity {
		return 0, fmt.Errorf("head %d tail %d capacity %d: %w", h, c.tail, c.r.capacity, ErrCorrupt)
	}
	return h - c.tail, nil
}

// Next waits for records and copies up to len(dst) of them into dst, without
// releasing them. It returns the sequence number of dst[0] and the count.
// When fewer than len(dst) records are available it waits up to maxDelay
// from the moment it first saw a record for the batch to fill, so a batch is
// never held longer than maxDelay (plus scheduling). It returns ErrClosed
// when the producer closed the ring and everything was read, ctx's error
// when ctx is done, and ErrCorrupt when head is inconsistent.
func (c *Consumer) Next(ctx context.Context, dst []event.Packet, maxDelay time.Duration) (uint64, int, error) {
	if len(dst) == 0 {
		return c.tail, 0, nil
	}
	avail, err := c.available()
	if err != nil {
		return c.tail, 0, err
	}
	if avail == 0 {
		if avail, err = c.waitAny(ctx); err != nil {
			return c.tail, 0, err
		}
	}
	if avail < uint64(len(dst)) && maxDelay > 0 {
		deadline := time.Now().Add(maxDelay)
		step := max(maxDelay/8, 50*time.Microsecond)
		for avail < uint64(len(dst)) && !c.r.Closed() && ctx.Err() == nil {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			time.Sleep(min(left, step))
			if avail, err = c.available(); err != nil {
				return c.tail, 0, err
			}
		}
	}
	n := min(avail, uint64(len(dst)))
	done := uint64(0)
	for done < n {
		slot := (c.tail + done) & c.r.mask
		chunk := min(n-done, c.r.capacity-slot)
		decode(dst[done:done+chunk], c.r.data[slot*SlotSize:(slot+chunk)*SlotSize])
		done += chunk
	}
	return c.tail, int(n), nil
}

// Release frees the n oldest read records (release store of tail): the
// producer may overwrite them, and they count as consumed.
func (c *Consumer) Release(n int) {
	c.tail += uint64(n)
	atomic.StoreUint64(c.r.tail, c.tail)
}

// waitAny blocks until at least one record is available.
func (c *Consumer) waitAny(ctx context.Context) (uint64, error) {
	spinUntil := time.Now().Add(c.Spin)
	for i := 0; ; i++ {
		avail, err := c.available()
		if err != nil || avail > 0 {
			return avail, err
		}
		if c.r.Closed() {
			// The producer publishes head before it sets closed, so head read
			// after closed is final: records pushed between the first read
			// and the close are not lost.
			if avail, err = c.available(); err != nil || avail > 0 {
				return avail, err
			}
			return 0, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("wait for records: %w", err)
		}
		if i&63 != 0 || time.Now().Before(spinUntil) {
			continue
		}
		if err := c.sleep(ctx); err != nil {
			return 0, err
		}
		spinUntil = time.Now().Add(c.Spin)
	}
}

// sleep announces that the consumer is sleeping, re-checks head (the
// producer publishes head before it looks at the flag, so one of the two sees
// the other), and blocks on the wake pipe.
func (c *Consumer) sleep(ctx context.Context) error {
	if c.wake == nil {
		time.Sleep(50 * time.Microsecond)
		return nil
	}
	atomic.StoreUint32(c.r.sleeping, 1)
	if atomic.LoadUint64(c.r.head) != c.tail || c.r.Closed() {
		// The producer may have cleared the flag and written a byte already;
		// a stale byte only causes one spurious wake-up later.
		atomic.CompareAndSwapUint32(c.r.sleeping, 1, 0)
		return nil
	}
	c.sleeps.Add(1)
	_, err := c.wake.Read(c.buf[:])
	atomic.StoreUint32(c.r.sleeping, 0)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF):
		// The producer's end is closed: no more wake-ups will come. Treat it as
		// closed once the ring is drained.
		atomic.StoreUint32(c.r.closed, 1)
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		return fmt.Errorf("wait for records: %w", ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil
	default:
		return fmt.Errorf("read wake pipe: %w", err)
	}
}

// Interrupt makes a consumer blocked on the wake pipe return (used on
// cancellation: pass it to context.AfterFunc). It requires a pollable
// (non-blocking) wake file.
func (c *Consumer) Interrupt() {
	if c.wake != nil {
		_ = c.wake.SetReadDeadline(time.Unix(1, 0))
	}
}

// Close closes the wake pipe (the ring is closed separately).
func (c *Consumer) Close() error {
	if c.wake == nil {
		return nil
	}
	err := c.wake.Close()
	c.wake = nil
	if err != nil {
		return fmt.Errorf("close wake pipe: %w", err)
	}
	return nil
}
