package wirev1

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	in := []*FindingsBatch{
		{FirstSeq: 1, Findings: []*Finding{{Seq: 1, Detector: "netflow", Score: 3.5}}},
		{FirstSeq: 2},
	}
	for _, m := range in {
		if err := Write(&buf, m, 0); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf, 0)
	for i, want := range in {
		got := &FindingsBatch{}
		if err := r.Read(got); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("read %d: got %v want %v", i, got, want)
		}
	}
	if err := r.Read(&FindingsBatch{}); !errors.Is(err, io.EOF) {
		t.Fatalf("at end: got %v, want io.EOF", err)
	}
}

func TestFrameErrors(t *testing.T) {
	big := &FindingsBatch{Findings: []*Finding{{Summary: string(bytes.Repeat([]byte("x"), 2000))}}}
	var bigBuf bytes.Buffer
	if err := Write(&bigBuf, big, 0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		max  int
		code ErrorCode
	}{
		{"oversized", bigBuf.Bytes(), 1000, CodeFrameTooLarge},
		{"huge length prefix", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, 0, CodeFrameTooLarge},
		{"truncated body", []byte{10, 1, 2}, 0, CodeProtocol},
		{"garbage body", []byte{3, 0xff, 0xff, 0xff}, 0, CodeProtocol},
		{"bad varint", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0, CodeProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := NewReader(bytes.NewReader(tt.in), tt.max).Read(&FindingsBatch{})
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want a ProtocolError", err)
			}
			if pe.Code != tt.code {
				t.Fatalf("got code %s, want %s (%v)", pe.Code, tt.code, err)
			}
		})
	}
	if err := Write(io.Discard, big, 100); err == nil {
		t.Fatal("Write accepted a message above the limit")
	}
}

// frameOf frames body (a length prefix and the bytes).
func frameOf(body []byte) []byte {
	return append(protowire.AppendVarint(nil, uint64(len(body))), body...)
}

// repeatedField is body with n more copies of field num holding elem.
func repeatedField(body []byte, num protowire.Number, elem []byte, n int) []byte {
	for range n {
		body = protowire.AppendTag(body, num, protowire.BytesType)
		body = protowire.AppendBytes(body, elem)
	}
	return body
}

// TestFrameRepeatedLimits: a frame whose repeated fields hold more elements
// than their limits is refused before it is decoded, with CodeProtocol;
// one at the limits is read.
func TestFrameRepeatedLimits(t *testing.T) {
	finding := func(tops int) []byte {
		return repeatedField(nil, 12, nil, tops) // Finding.top_features
	}
	batch := func(findings int, elem []byte) []byte {
		return repeatedField(nil, 2, elem, findings) // FindingsBatch.findings
	}
	tests := []struct {
		name string
		body []byte
		msg  proto.Message
		ok   bool
	}{
		{"findings at the limit", batch(MaxBatchFindings, nil), &FindingsBatch{}, true},
		{"findings above the limit", batch(MaxBatchFindings+1, nil), &FindingsBatch{}, false},
		{"top features at the limit", batch(2, finding(MaxTopFeatures)), &FindingsBatch{}, true},
		{"top features above the limit", batch(2, finding(MaxTopFeatures+1)), &FindingsBatch{}, false},
		// Suppressions.items: the default limit of any repeated field.
		{"suppressions at the limit", repeatedField(nil, 1, nil, MaxRepeated), &Suppressions{}, true},
		{"suppressions above the limit", repeatedField(nil, 1, nil, MaxRepeated+1), &Suppressions{}, false},
		// ServerControl.suppressions (a oneof) holding too many items.
		{"nested above the limit", repeatedField(nil, 6, repeatedField(nil, 1, nil, MaxRepeated+1), 1), &ServerControl{}, false},
		// Status.counters: map entries count as elements.
		{"map above the limit", repeatedField(nil, 3, nil, MaxRepeated+1), &Status{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := NewReader(bytes.NewReader(frameOf(tt.body)), 0).Read(tt.msg)
			if tt.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Code != CodeProtocol {
				t.Fatalf("got %v, want a ProtocolError with code %s", err, CodeProtocol)
			}
			if !strings.Contains(err.Error(), "more than") {
				t.Fatalf("unclear error: %v", err)
			}
		})
	}
}

// TestFrameEmptyFindingsCheap: a frame of MaxFrameSize holding 2M empty
// findings (2 bytes each) is refused without decoding them: it allocates
// about the frame, not the ~470 MB its decoded findings would take.
func TestFrameEmptyFindingsCheap(t *testing.T) {
	body := batch2M()
	in := frameOf(body)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := NewReader(bytes.NewReader(in), 0).Read(&FindingsBatch{})
	runtime.ReadMemStats(&after)
	var pe *ProtocolError
	if !errors.As(err, &pe) || pe.Code != CodeProtocol {
		t.Fatalf("got %v, want a ProtocolError with code %s", err, CodeProtocol)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*MaxFrameSize {
		t.Fatalf("refusing the frame allocated %d MB", alloc>>20)
	}
}

func batch2M() []byte {
	body := make([]byte, 0, MaxFrameSize)
	for len(body)+2 <= MaxFrameSize {
		body = append(body, 0x12, 0x00) // FindingsBatch.findings: an empty Finding
	}
	return body
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader for every message
// type a peer can send: it must return a message or an error, never panic.
func FuzzReadFrame(f *testing.F) {
	var seed bytes.Buffer
	_ = Write(&seed, &StreamHeader{Kind: StreamKind_STREAM_KIND_FINDINGS, ProtocolVersion: 1}, 0)
	_ = Write(&seed, &FindingsBatch{FirstSeq: 7, Findings: []*Finding{{Seq: 7}}}, 0)
	f.Add(seed.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	// Repeated fields at and just above their limits (the 64 KiB reader
	// limit below leaves room for the top features only).
	f.Add(frameOf(repeatedField(nil, 2, repeatedField(nil, 12, nil, MaxTopFeatures), 1)))
	f.Add(frameOf(repeatedField(nil, 2, repeatedField(nil, 12, nil, MaxTopFeatures+1), 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs := []proto.Message{&StreamHeader{}, &EnrollRequest{}, &AgentControl{}, &FindingsBatch{}, &FetchRequest{},
			&EnrollResponse{}, &ServerControl{}, &Ack{}, &FetchChunk{}}
		for _, m := range msgs {
			r := NewReader(bytes.NewReader(data), 1<<16)
			for i := 0; i < 64; i++ {
				if err := r.Read(m); err != nil {
					break
				}
			}
		}
	})
}
