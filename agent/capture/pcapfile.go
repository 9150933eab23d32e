package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/gopacket/gopacket/layers"
)

// pcapReader reads classic pcap files (microsecond or nanosecond, either
// byte order) with large reads into one buffer and hands out each record's
// data as a sub-slice of that buffer: no per-packet copy. pcapgo stays the
// reader of pcapng files and the reference this one is tested against
// (TestPcapReaderMatchesPcapgo, FuzzPcapReader): the same packets, lengths
// and timestamps, and the same record checks.
//
// Why not only pcapgo: its Reader wraps the file in its own 4 KiB bufio
// and copies every record header and every packet's data out of it with
// io.ReadFull (and our 64 KiB bufio below it copied once more), and builds
// a time.Time per record. Measured on the first 200,000 packets of the 1M
// reference capture (callgrind, OpenFile + Next): read + decode took 1,943
// instructions per packet with pcapgo and 1,329 with this reader (plus the
// per-batch recover in fileSource), and `go test -bench PcapRead` reads 167
// (pcapgo) against 82 ns per packet. Here a record costs a bounds check
// and a few loads; the only copy left is the kernel's into the buffer.
//
// A regular file is memory-mapped instead, one window at a time (fileMap):
// the records are then read in place and the kernel copies nothing. The
// copy was 7% of read + decode + netflow/v1 features in `perf` and reads
// every payload byte, which the decoder never looks at. Other files (pipes)
// and files that cannot be mapped are read with large reads.
type pcapReader struct {
	r          io.Reader
	m          *fileMap // non-nil: buf is a mapped window of the file
	base       int64    // mapped: the file offset of buf[0]
	buf        []byte
	start, end int              // unread bytes: buf[start:end]
	eof        bool             // r returned io.EOF; mapped: buf reaches the file's end
	order      binary.ByteOrder // the file header's byte order
	bigEndian  bool             // order, for the per-record path (no interface call)
	nanoFactor uint32           // 1000 for microsecond files, 1 for nanosecond
	snaplen    uint32
	link       layers.LinkType
}

const (
	// pcapReadSize is the read buffer: large enough that reads are few,
	// small enough that the packets just read are still in the L2 cache
	// when they are decoded.
	pcapReadSize = 256 << 10
	// pcapMaxRecord is the longest record taken when the file's snap length
	// is smaller (pcapgo's eagerReadMax: writers that do not truncate to
	// their declared snap length exist, and tcpdump reads them too).
	pcapMaxRecord = 262144
	// pcapMaxEmptyReads bounds reads that return nothing and no error.
	pcapMaxEmptyReads = 100
)

// errRecordTruncated: the file ends inside a record (io.ErrUnexpectedEOF, so
// that callers classify it as truncated).
var errRecordTruncated = fmt.Errorf("file ends inside a record: %w", io.ErrUnexpectedEOF)

// newPcapReader reads and checks the 24-byte file header.
func newPcapReader(r io.Reader) (*pcapReader, error) {
	return (&pcapReader{r: r, buf: make([]byte, pcapReadSize)}).header()
}

// newPcapFileReader is newPcapReader on a file, which it maps if it can
// (see pcapReader). Close releases the mapping.
func newPcapFileReader(f *os.File) (*pcapReader, error) {
	m := newFileMap(f)
	if m == nil {
		return newPcapReader(f)
	}
	p, err := faultSafe((&pcapReader{m: m}).header)
	if err != nil {
		m.unmap()
		return nil, err
	}
	return p, nil
}

// close releases the mapped window, if any. Records returned before are
// invalid after it.
func (p *pcapReader) close() {
	if p.m != nil {
		p.m.unmap()
		p.buf, p.start, p.end = nil, 0, 0
	}
}

// header reads and checks the 24-byte file header.
func (p *pcapReader) header() (*pcapReader, error) {
	if err := p.fill(24); err != nil {
		return nil, err
	}
	if p.end-p.start < 24 {
		return nil, fmt.Errorf("file header of %d bytes: %w", p.end-p.start, io.ErrUnexpectedEOF)
	}
	h := p.buf[p.start : p.start+24]
	p.start += 24
	switch magic := binary.LittleEndian.Uint32(h[0:4]); magic {
	case magicPcapMicroLE:
		p.order, p.nanoFactor = binary.LittleEndian, 1000
	case magicPcapMicroBE:
		p.order, p.nanoFactor = binary.BigEndian, 1000
	case magicPcapNanoLE:
		p.order, p.nanoFactor = binary.LittleEndian, 1
	case magicPcapNanoBE:
		p.order, p.nanoFactor = binary.BigEndian, 1
	default:
		return nil, fmt.Errorf("unknown magic %x", magic)
	}
	if v := p.order.Uint16(h[4:6]); v != 2 {
		return nil, fmt.Errorf("unknown major version %d", v)
	}
	if v := p.order.Uint16(h[6:8]); v != 4 {
		return nil, fmt.Errorf("unknown minor version %d", v)
	}
	p.bigEndian = p.order == binary.BigEndian
	p.snaplen = p.order.Uint32(h[16:20])
	p.link = layers.LinkType(p.order.Uint32(h[20:24]))
	return p, nil
}

// maxCaptureLength is pcapgo's bound on a record's captured length.
func (p *pcapReader) maxCaptureLength() uint64 {
	if p.snaplen > pcapMaxRecord {
		return uint64(p.snaplen)
	}
	return pcapMaxRecord
}

// next returns the next record's data (valid until the next call), its
// timestamp in Unix nanoseconds (computed exactly as pcapgo's
// time.Unix(sec, frac*factor).UnixNano(), 32-bit product included) and its
// original length. At the end of the file it returns io.EOF; a file that
// ends inside a record gives an error wrapping io.ErrUnexpectedEOF.
func (p *pcapReader) next() (data []byte, ts int64, origLen int, err error) {
	if p.end-p.start < 16 {
		if err := p.fill(16); err != nil {
			return nil, 0, 0, err
		}
		switch n := p.end - p.start; {
		case n == 0:
			return nil, 0, 0, io.EOF
		case n < 16:
			return nil, 0, 0, fmt.Errorf("record header of %d bytes: %w", n, errRecordTruncated)
		}
	}
	h := (*[16]byte)(p.buf[p.start : p.start+16])
	var sec, frac uint32
	var capLen, wireLen uint64
	if p.bigEndian {
		sec, frac = binary.BigEndian.Uint32(h[0:4]), binary.BigEndian.Uint32(h[4:8])
		capLen, wireLen = uint64(binary.BigEndian.Uint32(h[8:12])), uint64(binary.BigEndian.Uint32(h[12:16]))
	} else {
		sec, frac = binary.LittleEndian.Uint32(h[0:4]), binary.LittleEndian.Uint32(h[4:8])
		capLen, wireLen = uint64(binary.LittleEndian.Uint32(h[8:12])), uint64(binary.LittleEndian.Uint32(h[12:16]))
	}
	if capLen > p.maxCaptureLength() {
		return nil, 0, 0, fmt.Errorf("capture length exceeds snap length: %d > %d", capLen, p.snaplen)
	}
	if capLen > wireLen {
		return nil, 0, 0, fmt.Errorf("capture length exceeds original packet length: %d > %d", capLen, wireLen)
	}
	need := 16 + int(capLen)
	if p.end-p.start < need {
		if err := p.fill(need); err != nil {
			return nil, 0, 0, err
		}
		if n := p.end - p.start; n < need {
			return nil, 0, 0, fmt.Errorf("record of %d bytes, %d in the file: %w", need, n, errRecordTruncated)
		}
	}
	data = p.buf[p.start+16 : p.start+need : p.start+need]
	p.start += need
	ts = int64(sec)*1_000_000_000 + int64(frac*p.nanoFactor)
	return data, ts, int(wireLen), nil
}

// fill reads until at least need bytes are unread or the file ends. The
// buffer grows (doubling) only once it is full of file data, so a record
// length read from a short file cannot make it allocate more than twice
// what the file holds.
func (p *pcapReader) fill(need int) error {
	if p.m != nil {
		return p.fillMapped(need)
	}
	empty := 0
	for p.end-p.start < need && !p.eof {
		if p.end == len(p.buf) {
			if p.start > 0 {
				p.end = copy(p.buf, p.buf[p.start:p.end])
				p.start = 0
			} else {
				nb := make([]byte, min(2*len(p.buf), max(need, len(p.buf))))
				p.end = copy(nb, p.buf[p.start:p.end])
				p.buf = nb
			}
			continue
		}
		n, err := p.r.Read(p.buf[p.end:])
		p.end += n
		switch {
		case errors.Is(err, io.EOF):
			p.eof = true
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case n == 0:
			if empty++; empty >= pcapMaxEmptyReads {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

// fillMapped is fill for a mapped file: it maps the window that starts at
// the page of the next unread byte and holds at least need bytes, or all
// the file has from there (then eof is set).
func (p *pcapReader) fillMapped(need int) error {
	if p.eof {
		return nil
	}
	size, err := p.m.size()
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if size <= p.base+int64(p.end) { // nothing beyond the window (or the file shrank)
		p.eof = true
		return nil
	}
	pos := p.base + int64(p.start)
	off := pos &^ (pageSize - 1)
	length := min(size-off, max(mapWindow, int64(need)+pos-off))
	if length > math.MaxInt {
		return fmt.Errorf("read: record of %d bytes does not fit in memory", need)
	}
	data, err := p.m.window(off, int(length))
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	p.buf, p.base, p.start, p.end = data, off, int(pos-off), len(data)
	p.eof = off+length >= size
	return nil
}
