package wirev1

import (
	"bytes"
	"errors"
	"io"
	"testing"

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

// FuzzReadFrame feeds arbitrary bytes to the frame reader for every message
// type a peer can send: it must return a message or an error, never panic.
func FuzzReadFrame(f *testing.F) {
	var seed bytes.Buffer
	_ = Write(&seed, &StreamHeader{Kind: StreamKind_STREAM_KIND_FINDINGS, ProtocolVersion: 1}, 0)
	_ = Write(&seed, &FindingsBatch{FirstSeq: 7, Findings: []*Finding{{Seq: 7}}}, 0)
	f.Add(seed.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
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
