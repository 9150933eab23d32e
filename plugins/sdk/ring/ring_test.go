package ring

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// newPair creates a ring and attaches a second mapping of it through a
// duplicated descriptor, as the plugin would, with a wake pipe between them.
func newPair(t testing.TB, slots int, base uint64) (*Producer, *Consumer) {
	t.Helper()
	r, err := Create(slots, base)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(r.File().Fd()))
	if err != nil {
		t.Fatal(err)
	}
	cr, err := Attach(os.NewFile(uintptr(fd), "dup"))
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProducer(r, pw)
	if err != nil {
		t.Fatal(err)
	}
	c := NewConsumer(cr, pr)
	t.Cleanup(func() {
		_ = p.CloseWake()
		_ = c.Close()
		_ = r.Close()
		_ = cr.Close()
	})
	return p, c
}

func randPacket(rng *rand.Rand, seq uint64) event.Packet {
	var b [event.PacketRecordSize]byte
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	var p event.Packet
	_ = p.Unmarshal(b[:])
	p.TimestampNs = int64(seq)
	return p
}

func TestCreateAttachHeader(t *testing.T) {
	p, c := newPair(t, 1024, 77)
	h, err := ParseHeader(c.r.mem, Size(1024))
	if err != nil {
		t.Fatal(err)
	}
	if h.Capacity != 1024 || h.Base != 77 || h.Head != 77 || h.Tail != 77 || h.SlotSize != SlotSize {
		t.Fatalf("header %+v", h)
	}
	if p.Free() != 1024 {
		t.Fatalf("free %d", p.Free())
	}
}

func TestCreateRejectsCapacity(t *testing.T) {
	for _, n := range []int{0, 1, 15, 100, MaxSlots * 2} {
		if r, err := Create(n, 0); err == nil {
			_ = r.Close()
			t.Errorf("Create(%d) succeeded", n)
		}
	}
}

func TestCodecMatchesEvent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, native := range []bool{true, false} {
		if native && !nativeLayout {
			continue
		}
		t.Run(map[bool]string{true: "native", false: "portable"}[native], func(t *testing.T) {
			saved := nativeLayout
			nativeLayout = native
			defer func() { nativeLayout = saved }()
			recs := make([]event.Packet, 50)
			raw := make([]byte, len(recs)*SlotSize)
			for i := range raw {
				raw[i] = byte(rng.Uint32())
			}
			decode(recs, raw)
			for i := range recs {
				var want event.Packet
				_ = want.Unmarshal(raw[i*SlotSize:])
				if recs[i] != want {
					t.Fatalf("record %d: decode %+v, Unmarshal %+v", i, recs[i], want)
				}
			}
			enc := make([]byte, len(raw))
			encode(enc, recs)
			for i := range recs {
				want := make([]byte, SlotSize)
				recs[i].Marshal(want)
				if string(enc[i*SlotSize:(i+1)*SlotSize]) != string(want) {
					t.Fatalf("record %d: encode differs from Marshal", i)
				}
			}
		})
	}
}

// TestRoundTrip pushes records through a small ring (many wrap-arounds) from
// one goroutine and reads them in another, in order and intact.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		slots    int
		base     uint64
		maxDelay time.Duration
		spin     time.Duration
	}{
		{"small-ring", 16, 0, 0, DefaultSpin},
		{"base-offset", 64, 1 << 40, 0, DefaultSpin},
		{"latency-bound", 256, 3, time.Millisecond, DefaultSpin},
		{"always-sleep", 32, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, c := newPair(t, tc.slots, tc.base)
			c.Spin = tc.spin
			const total = 20000
			rng := rand.New(rand.NewPCG(3, 4))
			want := make([]event.Packet, total)
			for i := range want {
				want[i] = randPacket(rng, tc.base+uint64(i))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				prng := rand.New(rand.NewPCG(5, 6))
				for i := 0; i < total; {
					k := min(1+prng.IntN(40), total-i)
					n, err := p.Push(ctx, want[i:i+k], nil)
					if err != nil {
						t.Error(err)
						return
					}
					i += n
					if prng.IntN(8) == 0 {
						time.Sleep(50 * time.Microsecond) // let the consumer sleep sometimes
					}
				}
				p.Close()
			}()
			got := 0
			buf := make([]event.Packet, 24)
			for {
				start, n, err := c.Next(ctx, buf, tc.maxDelay)
				if errors.Is(err, ErrClosed) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if start != tc.base+uint64(got) {
					t.Fatalf("batch start %d, want %d", start, tc.base+uint64(got))
				}
				for i := 0; i < n; i++ {
					if buf[i] != want[got+i] {
						t.Fatalf("record %d differs", got+i)
					}
				}
				got += n
				c.Release(n)
			}
			wg.Wait()
			if got != total {
				t.Fatalf("got %d records, want %d", got, total)
			}
			if c.r.Tail() != tc.base+total || p.r.Head() != tc.base+total {
				t.Fatalf("tail %d head %d", c.r.Tail(), p.r.Head())
			}
		})
	}
}

func TestTryPushFull(t *testing.T) {
	p, c := newPair(t, 16, 0)
	recs := make([]event.Packet, 20)
	if n := p.TryPush(recs); n != 16 {
		t.Fatalf("TryPush = %d, want 16", n)
	}
	if n := p.TryPush(recs); n != 0 {
		t.Fatalf("TryPush on full ring = %d", n)
	}
	ctx := context.Background()
	alive := true
	n, err := p.Push(ctx, recs[:1], func() bool { return alive && false })
	if n != 0 || !errors.Is(err, ErrConsumerGone) {
		t.Fatalf("Push to dead consumer = %d, %v", n, err)
	}
	buf := make([]event.Packet, 5)
	_, k, err := c.Next(ctx, buf, 0)
	if err != nil || k != 5 {
		t.Fatalf("Next = %d, %v", k, err)
	}
	c.Release(k)
	if n := p.TryPushRaw(make([]byte, 7*SlotSize+3)); n != 5 {
		t.Fatalf("TryPushRaw = %d, want 5", n)
	}
}

func TestCorruptHead(t *testing.T) {
	p, c := newPair(t, 16, 0)
	binary.LittleEndian.PutUint64(p.r.mem[offHead:], 1000)
	_, _, err := c.Next(context.Background(), make([]event.Packet, 4), 0)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Next with corrupt head: %v", err)
	}
	// A consumer moving tail backwards must not make the producer overwrite.
	binary.LittleEndian.PutUint64(p.r.mem[offHead:], 0)
	p.head, p.tail = 0, 0
	p.TryPush(make([]event.Packet, 16))
	binary.LittleEndian.PutUint64(c.r.mem[offTail:], 1<<60)
	if n := p.TryPush(make([]event.Packet, 1)); n != 0 {
		t.Fatalf("TryPush with bogus tail = %d", n)
	}
}

func TestInterruptAndWakeEOF(t *testing.T) {
	p, c := newPair(t, 16, 0)
	if err := unix.SetNonblock(int(c.wake.Fd()), true); err != nil {
		t.Fatal(err)
	}
	// Re-wrap so that the file is pollable (deadlines work).
	fd, _ := unix.Dup(int(c.wake.Fd()))
	_ = c.wake.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	c.wake = os.NewFile(uintptr(fd), "wake")
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, c.Interrupt)
	defer stop()
	time.AfterFunc(20*time.Millisecond, cancel)
	_, _, err := c.Next(ctx, make([]event.Packet, 4), 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after cancel: %v", err)
	}
	if c.Sleeps() == 0 {
		t.Fatal("consumer never slept")
	}
	// The producer disappearing (pipe EOF) ends the consumer once drained.
	_ = c.wake.SetReadDeadline(time.Time{})
	p.TryPush(make([]event.Packet, 3))
	_ = p.CloseWake()
	_, n, err := c.Next(context.Background(), make([]event.Packet, 4), 0)
	if err != nil || n != 3 {
		t.Fatalf("Next = %d, %v", n, err)
	}
	c.Release(n)
	if _, _, err := c.Next(context.Background(), make([]event.Packet, 4), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after EOF: %v", err)
	}
}

func TestParseHeader(t *testing.T) {
	good := func() []byte {
		b := make([]byte, HeaderSize)
		copy(b, Magic)
		le := binary.LittleEndian
		le.PutUint32(b[offVersion:], LayoutVersion)
		le.PutUint32(b[offSlotSize:], SlotSize)
		le.PutUint64(b[offCapacity:], 64)
		le.PutUint64(b[offDataOffset:], HeaderSize)
		le.PutUint32(b[offRecordVersion:], event.PacketLayoutVersion)
		le.PutUint64(b[offBase:], 10)
		le.PutUint64(b[offTail:], 10)
		le.PutUint64(b[offHead:], 20)
		return b
	}
	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		mod  func(b []byte)
		size int64
		want error
	}{
		{"ok", func([]byte) {}, Size(64), nil},
		{"short file", func([]byte) {}, Size(63), ErrBadHeader},
		{"magic", func(b []byte) { b[0] = 'X' }, Size(64), ErrBadHeader},
		{"version", func(b []byte) { le.PutUint32(b[offVersion:], 2) }, Size(64), ErrBadHeader},
		{"slot size", func(b []byte) { le.PutUint32(b[offSlotSize:], 32) }, Size(64), ErrBadHeader},
		{"record version", func(b []byte) { le.PutUint32(b[offRecordVersion:], 9) }, Size(64), ErrBadHeader},
		{"capacity not power of two", func(b []byte) { le.PutUint64(b[offCapacity:], 48) }, Size(64), ErrBadHeader},
		{"capacity huge", func(b []byte) { le.PutUint64(b[offCapacity:], 1<<62) }, Size(64), ErrBadHeader},
		{"data offset", func(b []byte) { le.PutUint64(b[offDataOffset:], 0) }, Size(64), ErrBadHeader},
		{"tail after head", func(b []byte) { le.PutUint64(b[offTail:], 21) }, Size(64), ErrCorrupt},
		{"tail before base", func(b []byte) { le.PutUint64(b[offTail:], 9) }, Size(64), ErrCorrupt},
		{"overfull", func(b []byte) { le.PutUint64(b[offHead:], 10+65) }, Size(64), ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := good()
			tc.mod(b)
			_, err := ParseHeader(b, tc.size)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("ParseHeader: %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := ParseHeader(good()[:100], Size(64)); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("short buffer: %v", err)
	}
}

func TestAttachRejectsUnsealed(t *testing.T) {
	fd, err := unix.MemfdCreate("plain", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "plain")
	defer f.Close()
	if err := unix.Ftruncate(fd, Size(16)); err != nil {
		t.Fatal(err)
	}
	if _, err := Attach(f); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("Attach of unsealed file: %v", err)
	}
}

// FuzzRingAttach feeds arbitrary bytes as a ring file to Attach, as a plugin
// receives it from the other side, and reads from whatever it accepts.
func FuzzRingAttach(f *testing.F) {
	r, err := Create(16, 5)
	if err != nil {
		f.Fatal(err)
	}
	seed := make([]byte, Size(16))
	copy(seed, r.mem)
	_ = r.Close()
	f.Add(seed)
	f.Add(seed[:HeaderSize])
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		fd, err := unix.MemfdCreate("fuzz", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Skip(err)
		}
		file := os.NewFile(uintptr(fd), "fuzz")
		if _, err := file.Write(b); err != nil {
			_ = file.Close()
			t.Fatal(err)
		}
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW)
		ring, err := Attach(file)
		if err != nil {
			_ = file.Close()
			return
		}
		defer ring.Close()
		c := NewConsumer(ring, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		buf := make([]event.Packet, 8)
		if _, n, err := c.Next(ctx, buf, 0); err == nil {
			c.Release(n)
		}
	})
}

// BenchmarkRingPushPop moves records through a 64k-slot ring between two
// goroutines of one process (batches of 256 pushed, up to 4096 popped).
// ns/op is per record.
func BenchmarkRingPushPop(b *testing.B) {
	p, c := newPair(b, DefaultSize, 0)
	recs := make([]event.Packet, 256)
	for i := range recs {
		recs[i] = randPacket(rand.New(rand.NewPCG(1, uint64(i))), uint64(i))
	}
	ctx := context.Background()
	b.SetBytes(SlotSize)
	b.ResetTimer()
	done := make(chan int)
	go func() {
		buf := make([]event.Packet, 4096)
		got := 0
		for {
			_, n, err := c.Next(ctx, buf, 0)
			if err != nil {
				done <- got
				return
			}
			got += n
			c.Release(n)
		}
	}()
	for left := b.N; left > 0; {
		k := min(left, len(recs))
		n, err := p.Push(ctx, recs[:k], nil)
		if err != nil {
			b.Fatal(err)
		}
		left -= n
	}
	p.Close()
	if got := <-done; got != b.N {
		b.Fatalf("consumed %d of %d", got, b.N)
	}
}
