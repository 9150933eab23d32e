package wirev1

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
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
// and a *ProtocolError for an oversized or malformed frame.
func (r *Reader) Read(m proto.Message) error {
	err := protodelim.UnmarshalOptions{MaxSize: int64(r.max)}.UnmarshalFrom(r.br, m)
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
