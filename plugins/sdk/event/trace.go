package event

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// A file-event trace is a recording of the file events a watcher produced,
// in order: what `vigil-agent record` writes on a sensor and what
// `vigilctl model train --feature-set fileactivity/v1` and the baseline
// trainer read. It is the batch encoding the agent sends to the plugin
// (MarshalFiles), framed:
//
//	"VGFT" + TraceVersion byte + 3 zero bytes
//	then frames: u32 little-endian length n, then n bytes: one MarshalFiles batch
//
// A whole trace may be gzip-compressed (ReadTrace recognises gzip's magic).
// TraceVersion history:
//   - 1: the layout above; batches of FileLayoutVersion 1.
const TraceVersion = 1

// MaxTraceFrame bounds one frame of a trace (one batch), in bytes.
const MaxTraceFrame = 16 << 20

// traceHeader is the size of a trace's header.
const traceHeader = 8

// Trace errors.
var (
	ErrTraceBadMagic   = errors.New("event: not a file-event trace")
	ErrTraceBadVersion = errors.New("event: unsupported file-event trace version")
	ErrTraceFrame      = errors.New("event: malformed file-event trace frame")
	// ErrTraceLimit is returned with the first maxEvents events of a trace
	// that holds more.
	ErrTraceLimit = errors.New("event: file-event trace longer than the limit")
)

// TraceWriter writes a file-event trace. It is not safe for concurrent use.
type TraceWriter struct {
	w      io.Writer
	buf    []byte
	header bool
	events int
}

// NewTraceWriter returns a writer of a trace to w. Nothing is written until
// the first Write (an empty trace is just the header, written by Flush).
func NewTraceWriter(w io.Writer) *TraceWriter { return &TraceWriter{w: w} }

// Events is the number of events written so far.
func (t *TraceWriter) Events() int { return t.events }

func (t *TraceWriter) writeHeader() error {
	if t.header {
		return nil
	}
	t.header = true
	if _, err := t.w.Write([]byte{'V', 'G', 'F', 'T', TraceVersion, 0, 0, 0}); err != nil {
		return fmt.Errorf("write trace header: %w", err)
	}
	return nil
}

// Write appends evs as one or more frames (at most MaxFileBatch events and
// MaxTraceFrame bytes each).
func (t *TraceWriter) Write(evs []File) error {
	if err := t.writeHeader(); err != nil {
		return err
	}
	for len(evs) > 0 {
		n := min(len(evs), MaxFileBatch)
		for {
			var err error
			t.buf = append(t.buf[:0], 0, 0, 0, 0)
			if t.buf, err = MarshalFiles(t.buf, evs[:n]); err != nil {
				return fmt.Errorf("write trace: %w", err)
			}
			// Long paths: halve the frame until it fits (a record is at
			// most 12,374 bytes, so one always does).
			if len(t.buf)-4 <= MaxTraceFrame {
				break
			}
			n /= 2
		}
		binary.LittleEndian.PutUint32(t.buf, uint32(len(t.buf)-4))
		if _, err := t.w.Write(t.buf); err != nil {
			return fmt.Errorf("write trace: %w", err)
		}
		t.events += n
		evs = evs[n:]
	}
	return nil
}

// Flush writes the header if nothing has been written yet, so that an empty
// recording is still a valid (empty) trace.
func (t *TraceWriter) Flush() error { return t.writeHeader() }

// ReadTrace reads a whole file-event trace (plain or gzip-compressed) and
// returns its events. It reads at most maxEvents events (no bound if
// maxEvents <= 0): a longer trace returns the first maxEvents events and
// ErrTraceLimit. A trace cut short inside a frame (a recorder that was
// killed) returns the events of its complete frames and an error wrapping
// io.ErrUnexpectedEOF. Every frame is checked (MaxTraceFrame, UnmarshalFiles);
// a malformed trace gives an error, never a panic.
func ReadTrace(r io.Reader, maxEvents int) ([]File, error) {
	br := bufio.NewReader(r)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read trace: gzip: %w", err)
		}
		defer zr.Close()
		br = bufio.NewReader(zr)
	}
	var hdr [traceHeader]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrTraceBadMagic
		}
		return nil, fmt.Errorf("read trace: %w", err)
	}
	if !bytes.Equal(hdr[:4], []byte("VGFT")) {
		return nil, ErrTraceBadMagic
	}
	if hdr[4] != TraceVersion || hdr[5]|hdr[6]|hdr[7] != 0 {
		return nil, fmt.Errorf("read trace: version %d: %w", hdr[4], ErrTraceBadVersion)
	}
	var evs []File
	var buf []byte
	for frame := 0; ; frame++ {
		var lb [4]byte
		if _, err := io.ReadFull(br, lb[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return evs, nil
			}
			return evs, fmt.Errorf("read trace frame %d: %w", frame, err)
		}
		n := binary.LittleEndian.Uint32(lb[:])
		if n < fileBatchHeader || n > MaxTraceFrame {
			return evs, fmt.Errorf("read trace frame %d: length %d (want %d..%d): %w", frame, n, fileBatchHeader, MaxTraceFrame, ErrTraceFrame)
		}
		// Grow with what arrives, not with what the length claims.
		buf = buf[:0]
		if _, err := io.CopyN(bytesWriter{&buf}, br, int64(n)); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return evs, fmt.Errorf("read trace frame %d: %w", frame, err)
		}
		before := len(evs)
		var err error
		if evs, err = UnmarshalFiles(buf, evs); err != nil {
			return evs, fmt.Errorf("read trace frame %d: %w", frame, err)
		}
		if maxEvents > 0 && len(evs) >= maxEvents {
			if len(evs) > maxEvents || peekMore(br) {
				return evs[:maxEvents:maxEvents], fmt.Errorf("read trace: %d events read (frame %d had %d): %w", maxEvents, frame, len(evs)-before, ErrTraceLimit)
			}
		}
	}
}

// ReadTraceFile reads the trace at path with ReadTrace. A trace read in part
// (longer than maxEvents, or cut short inside a frame) returns its events
// and, in partial, why it stopped; a file with no readable event is an error
// that names it.
func ReadTraceFile(path string, maxEvents int) (evs []File, partial string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("read trace: %w", err)
	}
	defer f.Close()
	evs, err = ReadTrace(f, maxEvents)
	if err != nil {
		if len(evs) == 0 || errors.Is(err, ErrTraceBadMagic) {
			return nil, "", fmt.Errorf("%s: %w", path, err)
		}
		return evs, err.Error(), nil
	}
	return evs, "", nil
}

// peekMore reports whether br has more bytes.
func peekMore(br *bufio.Reader) bool {
	_, err := br.Peek(1)
	return err == nil
}

// bytesWriter appends to a byte slice.
type bytesWriter struct{ b *[]byte }

func (w bytesWriter) Write(p []byte) (int, error) {
	*w.b = append(*w.b, p...)
	return len(p), nil
}
