// Package ring is the shared-memory event path between the agent and a
// detector plugin: a single-producer, single-consumer ring of fixed 64-byte
// packet records (event.Packet) in a memfd that both processes mmap.
//
// The agent creates the ring (Create) and passes its file and the read end of
// a wake pipe to the plugin as extra files; the plugin attaches (Attach),
// validating the header it did not write. The producer writes records into
// free slots, then publishes them with one atomic store of head; the consumer
// copies them out, and releases them with one atomic store of tail. Head and
// tail are absolute sequence numbers (they never wrap; the slot of sequence s
// is s mod capacity), so after the consumer dies the agent knows exactly which
// records were consumed (< tail) and which were lost (tail..head).
//
// When the ring is empty the consumer spins for a short time, then sets the
// "sleeping" flag, re-checks head, and blocks on the wake pipe; a producer
// writes one byte to the pipe only when it clears that flag, so a busy
// consumer costs the producer no system call.
//
// Layout version 1 (little endian, offsets in bytes):
//
//	0    magic "VIGILRNG"
//	8    layout version u32 (1)       12  slot size u32 (64)
//	16   capacity u64 (slots, power of two)
//	24   data offset u64 (4096)
//	32   record layout version u32 (event.PacketLayoutVersion)
//	40   base u64: the sequence number of the ring's first record
//	128  head u64 (producer; own 128-byte line)
//	256  tail u64 (consumer; own 128-byte line)
//	384  sleeping u32 (consumer sets, producer clears)
//	512  closed u32 (producer: no more records will come)
//	4096 capacity × 64-byte slots
package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// LayoutVersion is the version of the ring layout described in the package
// documentation.
//
// History:
//   - 1: header page + 64-byte slots, absolute head/tail sequences.
const LayoutVersion = 1

// Layout constants.
const (
	Magic       = "VIGILRNG"
	SlotSize    = event.PacketRecordSize
	HeaderSize  = 4096
	MinSlots    = 16
	MaxSlots    = 1 << 22 // 256 MiB of slots
	DefaultSize = 1 << 16 // 64k slots = 4 MiB

	offVersion       = 8
	offSlotSize      = 12
	offCapacity      = 16
	offDataOffset    = 24
	offRecordVersion = 32
	offBase          = 40
	offHead          = 128
	offTail          = 256
	offSleeping      = 384
	offClosed        = 512
)

// Errors.
var (
	// ErrBadHeader means the ring's header is not a valid layout-1 header.
	ErrBadHeader = errors.New("ring: bad header")
	// ErrCorrupt means head and tail are inconsistent (head < tail or
	// head - tail > capacity): the other side wrote garbage.
	ErrCorrupt = errors.New("ring: head/tail corrupt")
	// ErrClosed means the producer closed the ring and every record was read.
	ErrClosed = errors.New("ring: closed")
)

// Header is the decoded, validated static part of a ring header.
type Header struct {
	Version       uint32
	SlotSize      uint32
	Capacity      uint64
	DataOffset    uint64
	RecordVersion uint32
	Base          uint64
	Head, Tail    uint64 // snapshot at validation time
}

// ParseHeader validates a ring header read from b, where size is the size of
// the whole shared file. It never panics on any input.
func ParseHeader(b []byte, size int64) (Header, error) {
	var h Header
	if len(b) < HeaderSize || size < HeaderSize {
		return h, fmt.Errorf("header of %d bytes (file %d): %w", len(b), size, ErrBadHeader)
	}
	if string(b[:8]) != Magic {
		return h, fmt.Errorf("magic %q: %w", b[:8], ErrBadHeader)
	}
	le := binary.LittleEndian
	h.Version = le.Uint32(b[offVersion:])
	h.SlotSize = le.Uint32(b[offSlotSize:])
	h.Capacity = le.Uint64(b[offCapacity:])
	h.DataOffset = le.Uint64(b[offDataOffset:])
	h.RecordVersion = le.Uint32(b[offRecordVersion:])
	h.Base = le.Uint64(b[offBase:])
	h.Head = le.Uint64(b[offHead:])
	h.Tail = le.Uint64(b[offTail:])
	switch {
	case h.Version != LayoutVersion:
		return h, fmt.Errorf("layout version %d, want %d: %w", h.Version, LayoutVersion, ErrBadHeader)
	case h.SlotSize != SlotSize:
		return h, fmt.Errorf("slot size %d, want %d: %w", h.SlotSize, SlotSize, ErrBadHeader)
	case h.RecordVersion != event.PacketLayoutVersion:
		return h, fmt.Errorf("record layout %d, want %d: %w", h.RecordVersion, event.PacketLayoutVersion, ErrBadHeader)
	case h.Capacity < MinSlots || h.Capacity > MaxSlots || h.Capacity&(h.Capacity-1) != 0:
		return h, fmt.Errorf("capacity %d (power of two in [%d, %d]): %w", h.Capacity, MinSlots, MaxSlots, ErrBadHeader)
	case h.DataOffset != HeaderSize:
		return h, fmt.Errorf("data offset %d: %w", h.DataOffset, ErrBadHeader)
	case uint64(size) < h.DataOffset+h.Capacity*SlotSize:
		return h, fmt.Errorf("file of %d bytes too small for %d slots: %w", size, h.Capacity, ErrBadHeader)
	case h.Tail < h.Base || h.Head < h.Tail || h.Head-h.Tail > h.Capacity:
		return h, fmt.Errorf("base %d tail %d head %d: %w", h.Base, h.Tail, h.Head, ErrCorrupt)
	}
	return h, nil
}

// Ring is one mapping of a ring file. Use a Producer or a Consumer on it.
type Ring struct {
	f        *os.File
	mem      []byte
	data     []byte
	capacity uint64
	mask     uint64
	base     uint64

	head     *uint64
	tail     *uint64
	sleeping *uint32
	closed   *uint32
}

// Size returns the size in bytes of a ring file with the given capacity.
func Size(slots int) int64 { return HeaderSize + int64(slots)*SlotSize }

// Create makes a new ring of the given capacity (a power of two) in an
// anonymous memfd, with head = tail = base. The returned ring's File is what
// the plugin receives.
func Create(slots int, base uint64) (*Ring, error) {
	if slots < MinSlots || slots > MaxSlots || slots&(slots-1) != 0 {
		return nil, fmt.Errorf("create ring of %d slots: capacity must be a power of two in [%d, %d]", slots, MinSlots, MaxSlots)
	}
	fd, err := unix.MemfdCreate("vigil-ring", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("create ring: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "vigil-ring")
	size := Size(slots)
	if err := unix.Ftruncate(fd, size); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("create ring: ftruncate: %w", err)
	}
	// The size is fixed for the ring's life: the plugin may not shrink the file
	// under the agent's mapping (which would SIGBUS the agent).
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("create ring: seal: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("create ring: mmap: %w", err)
	}
	copy(mem, Magic)
	le := binary.LittleEndian
	le.PutUint32(mem[offVersion:], LayoutVersion)
	le.PutUint32(mem[offSlotSize:], SlotSize)
	le.PutUint64(mem[offCapacity:], uint64(slots))
	le.PutUint64(mem[offDataOffset:], HeaderSize)
	le.PutUint32(mem[offRecordVersion:], event.PacketLayoutVersion)
	le.PutUint64(mem[offBase:], base)
	r := newRing(f, mem, uint64(slots), base)
	atomic.StoreUint64(r.tail, base)
	atomic.StoreUint64(r.head, base)
	return r, nil
}

// Attach maps a ring file received from the other side and validates its
// header. The ring takes ownership of f.
func Attach(f *os.File) (*Ring, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("attach ring: fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("attach ring: not a regular file: %w", ErrBadHeader)
	}
	if st.Size < HeaderSize || st.Size > Size(MaxSlots) {
		return nil, fmt.Errorf("attach ring: file size %d: %w", st.Size, ErrBadHeader)
	}
	// Refuse a file whose size can change under our mapping (SIGBUS).
	if seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err != nil || seals&unix.F_SEAL_SHRINK == 0 {
		return nil, fmt.Errorf("attach ring: file not sealed against shrinking: %w", ErrBadHeader)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("attach ring: mmap: %w", err)
	}
	h, err := ParseHeader(mem, st.Size)
	if err != nil {
		_ = unix.Munmap(mem)
		return nil, fmt.Errorf("attach ring: %w", err)
	}
	return newRing(f, mem, h.Capacity, h.Base), nil
}

func newRing(f *os.File, mem []byte, capacity, base uint64) *Ring {
	return &Ring{
		f:        f,
		mem:      mem,
		data:     mem[HeaderSize : HeaderSize+capacity*SlotSize],
		capacity: capacity,
		mask:     capacity - 1,
		base:     base,
		head:     (*uint64)(unsafe.Pointer(&mem[offHead])),
		tail:     (*uint64)(unsafe.Pointer(&mem[offTail])),
		sleeping: (*uint32)(unsafe.Pointer(&mem[offSleeping])),
		closed:   (*uint32)(unsafe.Pointer(&mem[offClosed])),
	}
}

// File returns the ring's file (to pass to the other process).
func (r *Ring) File() *os.File { return r.f }

// Capacity returns the number of slots.
func (r *Ring) Capacity() int { return int(r.capacity) }

// Base returns the sequence number of the ring's first record.
func (r *Ring) Base() uint64 { return r.base }

// Head returns the published sequence: records below it were written.
func (r *Ring) Head() uint64 { return atomic.LoadUint64(r.head) }

// Tail returns the consumed sequence: records below it were released by the
// consumer.
func (r *Ring) Tail() uint64 { return atomic.LoadUint64(r.tail) }

// Closed reports whether the producer closed the ring.
func (r *Ring) Closed() bool { return atomic.LoadUint32(r.closed) != 0 }

// Close unmaps the ring and closes its file. No Producer or Consumer on it may
// be used afterwards.
func (r *Ring) Close() error {
	var errs []error
	if r.mem != nil {
		if err := unix.Munmap(r.mem); err != nil {
			errs = append(errs, fmt.Errorf("munmap ring: %w", err))
		}
		r.mem, r.data = nil, nil
	}
	if r.f != nil {
		if err := r.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close ring file: %w", err))
		}
		r.f = nil
	}
	return errors.Join(errs...)
}

// nativeLayout reports whether event.Packet's in-memory layout is exactly its
// 64-byte wire layout (true on little-endian machines with Go's usual field
// alignment), so records can be moved with one memmove instead of field by
// field.
var nativeLayout = func() bool {
	var p event.Packet
	return unsafe.Sizeof(p) == SlotSize &&
		unsafe.Offsetof(p.SrcMAC) == 8 && unsafe.Offsetof(p.DstMAC) == 14 &&
		unsafe.Offsetof(p.SrcIP) == 20 && unsafe.Offsetof(p.DstIP) == 36 &&
		unsafe.Offsetof(p.SrcPort) == 52 && unsafe.Offsetof(p.DstPort) == 54 &&
		unsafe.Offsetof(p.Length) == 56 && unsafe.Offsetof(p.Proto) == 58 &&
		unsafe.Offsetof(p.TCPFlags) == 59 && unsafe.Offsetof(p.TTL) == 60 &&
		unsafe.Offsetof(p.Flags) == 61 && unsafe.Offsetof(p.VLAN) == 62 &&
		binary.NativeEndian.Uint16([]byte{1, 0}) == 1
}()

func packetBytes(p []event.Packet) []byte {
	if len(p) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&p[0])), len(p)*SlotSize)
}

// encode writes recs into dst (len(dst) == len(recs)*SlotSize).
func encode(dst []byte, recs []event.Packet) {
	if nativeLayout {
		copy(dst, packetBytes(recs))
		return
	}
	for i := range recs {
		recs[i].Marshal(dst[i*SlotSize:])
	}
}

// decode reads len(dst) records from src, exactly as event.Packet.Unmarshal.
func decode(dst []event.Packet, src []byte) {
	if nativeLayout {
		copy(packetBytes(dst), src)
		for i := range dst {
			dst[i].VLAN &= event.VLANKnownBits
		}
		return
	}
	for i := range dst {
		_ = dst[i].Unmarshal(src[i*SlotSize:])
	}
}
