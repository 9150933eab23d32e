package capture

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync/atomic"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// File magics (as read little endian from the first 4 bytes).
const (
	magicPcapMicroLE = 0xa1b2c3d4
	magicPcapMicroBE = 0xd4c3b2a1
	magicPcapNanoLE  = 0xa1b23c4d
	magicPcapNanoBE  = 0x4d3cb2a1
	magicPcapNG      = 0x0a0d0d0a
)

// ctxCheckEvery is how many records a file source reads between checks of
// its context.
const ctxCheckEvery = 1024

// counters are a source's statistics, updated once per batch.
type counters struct {
	packets, bytes, decoded, decodeErrors, truncated, unknown, kernelDrops, ourDrops atomic.Uint64
}

func (c *counters) add(s *Stats) {
	c.packets.Add(s.Packets)
	c.bytes.Add(s.Bytes)
	c.decoded.Add(s.Decoded)
	c.decodeErrors.Add(s.DecodeErrors)
	c.truncated.Add(s.Truncated)
	c.unknown.Add(s.UnknownLinkType)
	c.kernelDrops.Add(s.KernelDrops)
	c.ourDrops.Add(s.OurDrops)
}

func (c *counters) load() Stats {
	return Stats{
		Packets: c.packets.Load(), Bytes: c.bytes.Load(), Decoded: c.decoded.Load(),
		DecodeErrors: c.decodeErrors.Load(), Truncated: c.truncated.Load(), UnknownLinkType: c.unknown.Load(),
		KernelDrops: c.kernelDrops.Load(), OurDrops: c.ourDrops.Load(),
	}
}

// countingReader counts the bytes taken from the file (for error messages:
// with pcapng the reader buffers ahead, so this is where reading stopped,
// not the record's exact start).
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type fileSource struct {
	path    string
	f       *os.File
	cr      *countingReader
	pcap    *pcapReader // classic pcap; pcapgo reads pcapng
	ng      *pcapgo.NgReader
	link    layers.LinkType // classic pcap: the file's link type
	dec     *Decoder
	stats   counters
	records uint64 // records read so far
	offset  int64  // classic pcap: byte offset of the next record
	err     error  // sticky end-of-stream error
	// pcapng: delivered and skipped frames, to report a file made only of
	// unsupported link types.
	delivered      uint64
	unknownSkipped uint64
	firstUnknown   layers.LinkType
}

// OpenFile opens a pcap (microsecond or nanosecond, either byte order) or
// pcapng file, detected by its magic number. Compressed files are not
// supported. A classic pcap file of an unsupported link type is refused
// with ErrUnsupportedLinkType; pcapng interfaces of unsupported link types
// are skipped and counted.
func OpenFile(path string) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	s, err := newFileSource(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func newFileSource(path string, f *os.File) (*fileSource, error) {
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return nil, fmt.Errorf("open capture %s: read magic: %w", path, ErrUnknownFormat)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("open capture %s: %w", path, err)
	}
	s := &fileSource{path: path, f: f, cr: &countingReader{r: f}, dec: NewDecoder()}
	switch binary.LittleEndian.Uint32(magic[:]) {
	case magicPcapMicroLE, magicPcapMicroBE, magicPcapNanoLE, magicPcapNanoBE:
		r, err := newPcapFileReader(f)
		if err != nil {
			return nil, fmt.Errorf("open capture %s: pcap header: %w: %w", path, ErrCorrupt, err)
		}
		s.pcap, s.link, s.offset = r, r.link, 24
		if !SupportedLinkType(s.link) {
			return nil, fmt.Errorf("open capture %s: link type %d (%s): %w", path, uint16(s.link), s.link, ErrUnsupportedLinkType)
		}
	case magicPcapNG:
		r, err := pcapgo.NewNgReader(s.cr, pcapgo.NgReaderOptions{WantMixedLinkType: true, SkipUnknownVersion: true})
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("open capture %s: pcapng section header: %w: %w", path, ErrTruncated, err)
			}
			return nil, fmt.Errorf("open capture %s: pcapng section header: %w: %w", path, ErrCorrupt, err)
		}
		s.ng = r
	default:
		return nil, fmt.Errorf("open capture %s: magic %x: %w", path, magic, ErrUnknownFormat)
	}
	return s, nil
}

// errFileShrank: a mapped capture file became shorter while it was read.
var errFileShrank = errors.New("capture file shrank while being read")

// faultError returns the error for a recovered panic r that is a memory
// fault (with debug.SetPanicOnFault: a mapped file that shrank, see
// fileMap), or nil for any other panic.
func faultError(r any) error {
	f, ok := r.(interface{ Addr() uintptr })
	if !ok {
		return nil
	}
	return fmt.Errorf("%w (fault at %#x): %w", errFileShrank, f.Addr(), io.ErrUnexpectedEOF)
}

// faultSafe runs f with faults turned into panics and returns such a fault
// as an error (faultError).
func faultSafe[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			if err = faultError(r); err == nil {
				panic(r) // not a fault: a bug, not outside input
			}
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return f()
}

// read returns the next frame, its timestamp (Unix ns, 0 if none) and
// original length. A panic in the file readers (outside input) is
// recovered by batch, in Next.
func (s *fileSource) read() (data []byte, ts int64, origLen int, lt layers.LinkType, err error) {
	if s.pcap != nil {
		data, ts, origLen, err = s.pcap.next()
		return data, ts, origLen, s.link, err
	}
	var ci gopacket.CaptureInfo
	data, ci, err = s.ng.ZeroCopyReadPacketData()
	lt = layers.LinkType(0xffff) // unknown unless the reader says
	if err == nil && len(ci.AncillaryData) > 0 {
		if l, ok := ci.AncillaryData[0].(layers.LinkType); ok {
			lt = l
		}
	}
	if !ci.Timestamp.IsZero() {
		ts = ci.Timestamp.UnixNano()
	}
	return data, ts, ci.Length, lt, err
}

func (s *fileSource) wrap(err error) error {
	if err == io.EOF {
		if s.ng != nil && s.delivered == 0 && s.unknownSkipped > 0 {
			return fmt.Errorf("read %s: all %d frames have unsupported link types (first: %d %s): %w",
				s.path, s.unknownSkipped, uint16(s.firstUnknown), s.firstUnknown, ErrUnsupportedLinkType)
		}
		return io.EOF
	}
	kind := ErrCorrupt
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrTruncated) {
		kind = ErrTruncated
	}
	if s.pcap != nil {
		return fmt.Errorf("read %s: record %d at byte offset %d: %w: %w", s.path, s.records, s.offset, kind, err)
	}
	return fmt.Errorf("read %s: record %d (file read up to byte %d): %w: %w", s.path, s.records, s.cr.n, kind, err)
}

func (s *fileSource) Next(ctx context.Context, buf []event.Packet) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	var st Stats
	n, err := s.batch(ctx, buf, &st)
	s.stats.add(&st)
	s.delivered += uint64(n)
	if n > 0 {
		return n, nil
	}
	if err != nil {
		return 0, err
	}
	return 0, s.err
}

// batch fills buf; it returns the context's error if that ended it, and
// sets s.err at the end of the stream. It never panics: a panic in the file
// readers (outside input) becomes a corrupt-file error after the packets
// before it (one deferred recover per batch, not per packet).
func (s *fileSource) batch(ctx context.Context, buf []event.Packet, st *Stats) (n int, ctxErr error) {
	defer func() {
		if r := recover(); r != nil {
			if fe := faultError(r); fe != nil {
				s.err = s.wrap(fe)
				return
			}
			s.err = s.wrap(fmt.Errorf("reader panic: %v: %w", r, ErrCorrupt))
		}
	}()
	if s.pcap != nil && s.pcap.m != nil { // a mapped file: a fault becomes a panic (see fileMap)
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	}
	for n < len(buf) {
		if s.records%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return n, err
			}
		}
		data, ts, origLen, lt, err := s.read()
		if err != nil {
			s.err = s.wrap(err)
			return n, nil
		}
		s.records++
		s.offset += 16 + int64(len(data))
		st.Packets++
		st.Bytes += uint64(len(data))
		switch s.dec.Decode(lt, data, ts, origLen, &buf[n]) {
		case Decoded:
			st.Decoded++
			n++
		case DecodedTruncated:
			st.Decoded++
			st.Truncated++
			n++
		case DecodeFailed:
			st.DecodeErrors++
		case UnknownLinkType:
			if s.unknownSkipped == 0 {
				s.firstUnknown = lt
			}
			s.unknownSkipped++
			st.UnknownLinkType++
		}
	}
	return n, nil
}

func (s *fileSource) Stats() Stats {
	st := s.stats.load()
	st.CookiesUntracked = s.dec.cookies.Untracked()
	return st
}

func (s *fileSource) Close() error {
	if s.pcap != nil {
		s.pcap.close()
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("close capture %s: %w", s.path, err)
	}
	return nil
}
