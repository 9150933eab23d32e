package wirev1

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// ProtocolError is a framing or message error; Code says how to close the
// stream or connection that produced it.
type ProtocolError struct {
	Code ErrorCode
	Err  error
}

func (e *ProtocolError) Error() string { return fmt.Sprintf("%s: %v", e.Code, e.Err) }
func (e *ProtocolError) Unwrap() error { return e.Err }

// Reader reads length-prefixed protobuf messages bounded by a maximum size.
type Reader struct {
	br  *bufio.Reader
	max int
}

// NewReader wraps r. maxSize <= 0 means MaxFrameSize.
func NewReader(r io.Reader, maxSize int) *Reader {
	if maxSize <= 0 {
		maxSize = MaxFrameSize
	}
	return &Reader{br: bufio.NewReaderSize(r, 4<<10), max: maxSize}
}

// Read reads one message into m. It returns io.EOF at a clean end of stream,
// and a *ProtocolError for an oversized or malformed frame, or for one whose
// repeated fields hold more elements than their limits (checkRepeated):
// those are refused before the frame is decoded.
func (r *Reader) Read(m proto.Message) error {
	err := r.read(m)
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	var sizeErr *protodelim.SizeTooLargeError
	if errors.As(err, &sizeErr) {
		return &ProtocolError{Code: CodeFrameTooLarge, Err: fmt.Errorf("read frame: %w", err)}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &ProtocolError{Code: CodeProtocol, Err: fmt.Errorf("read frame: truncated: %w", err)}
	}
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe
	}
	// Stream resets and connection errors from the transport are not
	// protocol errors of the peer's making: pass them through.
	if isTransportError(err) {
		return fmt.Errorf("read frame: %w", err)
	}
	return &ProtocolError{Code: CodeProtocol, Err: fmt.Errorf("read frame: %w", err)}
}

// read is protodelim.UnmarshalFrom with the scan of checkRepeated between
// reading the frame and decoding it. Errors are as UnmarshalFrom's: io.EOF
// only if no byte was read.
func (r *Reader) read(m proto.Message) error {
	var sizeBuf [binary.MaxVarintLen64]byte
	n := 0
	for n < len(sizeBuf) {
		c, err := r.br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && n > 0 {
				break // a truncated varint: ConsumeVarint reports it
			}
			return err
		}
		sizeBuf[n] = c
		n++
		if c < 0x80 {
			break
		}
	}
	size, k := protowire.ConsumeVarint(sizeBuf[:n])
	if k < 0 {
		return protowire.ParseError(k)
	}
	if size > uint64(r.max) {
		return &protodelim.SizeTooLargeError{Size: size, MaxSize: uint64(r.max)}
	}
	// Peek avoids a copy when the frame fits in the buffer; proto.Unmarshal
	// copies what it keeps, so the buffer may be reused after Discard.
	b, err := r.br.Peek(int(size))
	if err == nil {
		defer func() { _, _ = r.br.Discard(len(b)) }()
	} else if b, err = readGrowing(r.br, int(size)); err != nil {
		return err
	}
	if err := checkRepeated(b, m.ProtoReflect().Descriptor(), 0); err != nil {
		return &ProtocolError{Code: CodeProtocol, Err: fmt.Errorf("read frame: %w", err)}
	}
	return proto.Unmarshal(b, m)
}

// readGrowing reads exactly size bytes, growing its buffer as they arrive
// (doubling from 64 KiB) rather than allocating size up front: a peer that
// announces a frame of the maximum size and then stalls holds no more memory
// than it sent. A short read is io.ErrUnexpectedEOF.
func readGrowing(r io.Reader, size int) ([]byte, error) {
	b := make([]byte, 0, min(size, 64<<10))
	for len(b) < size {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(size-len(b), len(b)))
		}
		n, err := r.Read(b[len(b):min(cap(b), size)])
		b = b[:len(b)+n]
		if err != nil && len(b) < size {
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return b, nil
}

// transportError is implemented by quic-go's stream and connection errors.
type transportError interface{ IsApplicationError() bool }

func isTransportError(err error) bool {
	var te interface{ Timeout() bool }
	if errors.As(err, &te) {
		return true
	}
	var ae transportError
	return errors.As(err, &ae)
}

// Write writes m as one length-prefixed frame. It refuses messages above
// maxSize (<= 0 means MaxFrameSize) so that a peer never receives a frame it
// must reject.
func Write(w io.Writer, m proto.Message, maxSize int) error {
	if maxSize <= 0 {
		maxSize = MaxFrameSize
	}
	if n := proto.Size(m); n > maxSize {
		return &ProtocolError{Code: CodeFrameTooLarge, Err: fmt.Errorf("write frame: %d bytes above limit %d", n, maxSize)}
	}
	if _, err := protodelim.MarshalTo(w, m); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// MaxRepeated bounds the elements of a repeated field (and the entries of a
// map) of one message in a frame, where no tighter limit applies
// (repeatedLimit). It is above every legitimate count (the server sends at
// most 10000 suppressions) and keeps what a peer can make the reader decode
// in bounds: decoding allocates a Go value for every element, and an empty
// message of 2 bytes on the wire becomes a struct of up to some 200 bytes.
const MaxRepeated = 1 << 16

// maxScanDepth bounds the nesting checkRepeated descends into. The messages
// of this protocol nest a few levels deep; none is recursive.
const maxScanDepth = 16

// repeatedLimit is the most elements the repeated field fd may hold in one
// message: the server's limits for a FindingsBatch, MaxRepeated otherwise.
func repeatedLimit(fd protoreflect.FieldDescriptor) int {
	switch fd.FullName() {
	case "vigil.wire.v1.FindingsBatch.findings":
		return MaxBatchFindings
	case "vigil.wire.v1.Finding.top_features":
		return MaxTopFeatures
	}
	return MaxRepeated
}

// checkRepeated walks the encoded message b of type md without decoding it
// and refuses it if one message in it holds more elements in a repeated
// field than repeatedLimit allows. It descends only into the known fields
// of message type that can hold a repeated field, so it costs a fraction of
// the decoding it guards. Malformed bytes are left to proto.Unmarshal.
func checkRepeated(b []byte, md protoreflect.MessageDescriptor, depth int) error {
	if depth > maxScanDepth {
		return fmt.Errorf("%s: nested more than %d levels deep", md.FullName(), maxScanDepth)
	}
	fields := md.Fields()
	var small [32]int // this protocol's messages have fewer fields
	var counts []int
	if fields.Len() <= len(small) {
		counts = small[:fields.Len()]
	} else {
		counts = make([]int, fields.Len())
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil
		}
		value := b[:m]
		b = b[m:]
		fd := fields.ByNumber(num)
		if fd == nil {
			continue // an unknown field is kept as bytes, not decoded
		}
		if fd.Cardinality() == protoreflect.Repeated {
			i := fd.Index()
			counts[i]++
			if limit := repeatedLimit(fd); counts[i] > limit {
				return fmt.Errorf("%s: more than %d elements in one message", fd.FullName(), limit)
			}
		}
		if fd.Kind() != protoreflect.MessageKind || typ != protowire.BytesType || !canRepeat(fd.Message()) {
			continue
		}
		inner, _ := protowire.ConsumeBytes(value)
		if err := checkRepeated(inner, fd.Message(), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// repeats caches canRepeat by message descriptor.
var repeats sync.Map // protoreflect.MessageDescriptor -> bool

// canRepeat reports whether a message of type md can hold a repeated field,
// itself or in a message field at any depth.
func canRepeat(md protoreflect.MessageDescriptor) bool {
	if v, ok := repeats.Load(md); ok {
		return v.(bool)
	}
	v := canRepeatUncached(md, 0)
	repeats.Store(md, v)
	return v
}

func canRepeatUncached(md protoreflect.MessageDescriptor, depth int) bool {
	if depth > maxScanDepth {
		return true // deeper than any message of this protocol: scan it
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Cardinality() == protoreflect.Repeated {
			return true
		}
		if fd.Kind() == protoreflect.MessageKind && canRepeatUncached(fd.Message(), depth+1) {
			return true
		}
	}
	return false
}
