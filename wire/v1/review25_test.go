package wirev1

import (
	"bytes"
	"errors"
	"io"
	"math"
	"runtime"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// TestReadAllocatesWhatArrives: a peer that announces a frame of
// MaxFrameSize and sends nothing more (a stalled stream) must not make the
// reader allocate the whole frame up front. Each stream of a connection
// (16 per connection, any number of connections) could otherwise pin 4 MiB
// of server memory for a 5-byte write.
func TestReadAllocatesWhatArrives(t *testing.T) {
	prefix := protowire.AppendVarint(nil, MaxFrameSize)
	src := io.MultiReader(bytes.NewReader(prefix), bytes.NewReader(make([]byte, 100)))
	r := NewReader(src, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := r.Read(&FindingsBatch{})
	runtime.ReadMemStats(&after)
	var pe *ProtocolError
	if !errors.As(err, &pe) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated frame: got %v, want a ProtocolError wrapping io.ErrUnexpectedEOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 512<<10 {
		t.Fatalf("reading 105 bytes of an announced %d-byte frame allocated %d bytes", MaxFrameSize, got)
	}
}

// TestReadLargeFrameInPieces: a frame larger than the read buffer, arriving a
// few bytes at a time, still decodes whole.
func TestReadLargeFrameInPieces(t *testing.T) {
	var buf bytes.Buffer
	in := &FindingsBatch{FirstSeq: 1}
	for i := range 2000 {
		in.Findings = append(in.Findings, &Finding{Seq: uint64(i + 1), Detector: "netflow", Summary: "some summary text"})
	}
	if err := Write(&buf, in, 0); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&trickle{r: &buf, n: 777}, 0)
	got := &FindingsBatch{}
	if err := r.Read(got); err != nil {
		t.Fatal(err)
	}
	if len(got.Findings) != 2000 || got.Findings[1999].Seq != 2000 {
		t.Fatalf("got %d findings", len(got.Findings))
	}
}

type trickle struct {
	r io.Reader
	n int
}

func (t *trickle) Read(p []byte) (int, error) {
	if len(p) > t.n {
		p = p[:t.n]
	}
	return t.r.Read(p)
}

// TestValidLeadInFarPast: a lead-in far before first_seen is refused even
// when first_seen - lead_in overflows int64. It wrapped to a negative
// difference and passed: the server stored a lead-in from 1677 (the
// console's "Active since") for a finding first seen in 2026.
func TestValidLeadInFarPast(t *testing.T) {
	first := int64(1_795_000_000_000_000_000) // 2026
	for _, lead := range []int64{math.MinInt64, math.MinInt64 + 1, -1, first - MaxLeadIn - 1} {
		f := &Finding{FirstSeenUnixNano: first, LeadInUnixNano: lead, LeadInPackets: 3}
		if ValidLeadIn(f) {
			t.Errorf("lead-in at %d, first seen %d: accepted", lead, first)
		}
		g := &Finding{FirstSeenUnixNano: first, LeadInUnixNano: lead, LeadInPackets: 3}
		if !TrimFinding(g) || g.LeadInUnixNano != 0 || g.LeadInPackets != 0 {
			t.Errorf("lead-in at %d: TrimFinding kept %d", lead, g.LeadInUnixNano)
		}
	}
	for _, lead := range []int64{first, first - MaxLeadIn} {
		if f := (&Finding{FirstSeenUnixNano: first, LeadInUnixNano: lead, LeadInPackets: 3}); !ValidLeadIn(f) {
			t.Errorf("lead-in at %d, first seen %d: refused", lead, first)
		}
	}
	// Negative times (before 1970) still compare exactly.
	if f := (&Finding{FirstSeenUnixNano: math.MinInt64 + 10, LeadInUnixNano: math.MinInt64 + 5, LeadInPackets: 1}); !ValidLeadIn(f) {
		t.Error("lead-in 5 ns before a first_seen near the minimum: refused")
	}
}
