package ring

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// ErrConsumerGone is returned by Push when alive reports that the consumer
// (the plugin process) is gone.
var ErrConsumerGone = errors.New("ring: consumer gone")

// Producer is the writing side of a ring. It is not safe for concurrent use:
// there is exactly one producer goroutine at a time.
type Producer struct {
	r      *Ring
	head   uint64 // local copy: only the producer writes head
	tail   uint64 // cached consumer tail, refreshed when the ring looks full
	wake   *os.File
	wakeFD int
	wakes  atomic.Uint64
}

// NewProducer returns the producer of r. wake is the write end of the wake
// pipe (the consumer holds the read end); it may be nil when the consumer
// never sleeps (tests). The Producer takes ownership of wake.
func NewProducer(r *Ring, wake *os.File) (*Producer, error) {
	p := &Producer{r: r, head: r.Head(), tail: r.Tail(), wake: wake, wakeFD: -1}
	if wake != nil {
		fd := int(wake.Fd())
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, fmt.Errorf("wake pipe nonblocking: %w", err)
		}
		p.wakeFD = fd
	}
	return p, nil
}

// Ring returns the producer's ring.
func (p *Producer) Ring() *Ring { return p.r }

// Wakes returns how many wake-ups the producer wrote to the pipe.
func (p *Producer) Wakes() uint64 { return p.wakes.Load() }

// Free returns the number of free slots (it refreshes the cached tail).
func (p *Producer) Free() int {
	p.tail = atomic.LoadUint64(p.r.tail)
	return int(p.r.capacity - (p.head - p.tail))
}

// free returns at least want free slots if there are, touching the shared tail
// only when the cached one says the ring is too full.
func (p *Producer) free(want int) uint64 {
	free := p.r.capacity - (p.head - p.tail)
	if free < uint64(want) {
		t := atomic.LoadUint64(p.r.tail)
		// A consumer that moves tail backwards or past head is broken; treat the
		// ring as full rather than overwrite unconsumed records.
		if t < p.tail || t > p.head {
			return 0
		}
		p.tail = t
		free = p.r.capacity - (p.head - p.tail)
	}
	return free
}

// TryPush writes as many of recs as fit without waiting and publishes them.
// It returns how many were written (a prefix of recs).
func (p *Producer) TryPush(recs []event.Packet) int {
	n := int(min(uint64(len(recs)), p.free(len(recs))))
	if n == 0 {
		return 0
	}
	done := 0
	for done < n {
		i := p.head + uint64(done)
		slot := i & p.r.mask
		chunk := min(uint64(n-done), p.r.capacity-slot)
		encode(p.r.data[slot*SlotSize:(slot+chunk)*SlotSize], recs[done:done+int(chunk)])
		done += int(chunk)
	}
	p.publish(uint64(n))
	return n
}

// TryPushRaw writes as many whole 64-byte records of b as fit and publishes
// them; it returns the number of records written. Bytes are copied verbatim
// (the consumer decodes them as event.Packet).
func (p *Producer) TryPushRaw(b []byte) int {
	want := len(b) / SlotSize
	n := int(min(uint64(want), p.free(want)))
	if n == 0 {
		return 0
	}
	done := 0
	for done < n {
		slot := (p.head + uint64(done)) & p.r.mask
		chunk := int(min(uint64(n-done), p.r.capacity-slot))
		copy(p.r.data[slot*SlotSize:], b[done*SlotSize:(done+chunk)*SlotSize])
		done += chunk
	}
	p.publish(uint64(n))
	return n
}

// publish makes n written records visible (release store of head), then wakes
// the consumer if it said it was going to sleep.
func (p *Producer) publish(n uint64) {
	p.head += n
	atomic.StoreUint64(p.r.head, p.head)
	p.signal()
}

func (p *Producer) signal() {
	if atomic.LoadUint32(p.r.sleeping) != 0 && atomic.CompareAndSwapUint32(p.r.sleeping, 1, 0) {
		p.writeWake()
	}
}

func (p *Producer) writeWake() {
	if p.wakeFD < 0 {
		return
	}
	p.wakes.Add(1)
	// EAGAIN: the pipe already holds wake-ups. EPIPE: the consumer is gone;
	// the caller learns that from the process, not from here.
	_, _ = unix.Write(p.wakeFD, []byte{1})
}

// Push writes all of recs, waiting for space while the ring is full. While it
// waits it polls alive (e.g. func() bool { return !client.Exited() }) and
// ctx; it returns the number written and ErrConsumerGone or ctx's error if it
// stopped early. The records not written are the caller's to count.
func (p *Producer) Push(ctx context.Context, recs []event.Packet, alive func() bool) (int, error) {
	total := 0
	for {
		n := p.TryPush(recs[total:])
		total += n
		if total == len(recs) {
			return total, nil
		}
		if n > 0 {
			continue
		}
		if err := p.WaitSpace(ctx, alive); err != nil {
			return total, err
		}
	}
}

// WaitSpace waits until at least one slot is free, the consumer is gone
// (ErrConsumerGone) or ctx is done. It spins briefly, then sleeps with an
// exponential backoff of up to one millisecond.
func (p *Producer) WaitSpace(ctx context.Context, alive func() bool) error {
	sleep := 20 * time.Microsecond
	for i := 0; ; i++ {
		if p.free(1) > 0 {
			return nil
		}
		if i < 64 {
			runtime.Gosched()
			continue
		}
		if alive != nil && !alive() {
			return ErrConsumerGone
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for ring space: %w", err)
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, time.Millisecond)
	}
}

// Close marks the ring closed (no more records) and wakes the consumer, which
// drains what is left and then stops. The ring itself stays mapped; close the
// wake pipe with CloseWake when the consumer is gone.
func (p *Producer) Close() {
	atomic.StoreUint32(p.r.closed, 1)
	atomic.StoreUint32(p.r.sleeping, 0)
	p.writeWake()
}

// CloseWake closes the write end of the wake pipe.
func (p *Producer) CloseWake() error {
	if p.wake == nil {
		return nil
	}
	err := p.wake.Close()
	p.wake, p.wakeFD = nil, -1
	if err != nil {
		return fmt.Errorf("close wake pipe: %w", err)
	}
	return nil
}
