package event

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"testing"
)

func writeTrace(t testing.TB, batches ...[]File) []byte {
	t.Helper()
	var b bytes.Buffer
	w := NewTraceWriter(&b)
	for _, evs := range batches {
		if err := w.Write(evs); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestTraceRoundTrip(t *testing.T) {
	a, b := sampleFiles(), sampleFiles()[1:3]
	want := append(append([]File{}, a...), b...)
	raw := writeTrace(t, a, nil, b)
	if got := string(raw[:8]); got != "VGFT\x01\x00\x00\x00" {
		t.Fatalf("header %q", got)
	}
	for name, data := range map[string][]byte{"plain": raw, "gzip": gz(t, raw)} {
		got, err := ReadTrace(bytes.NewReader(data), 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: events differ:\n got %+v\nwant %+v", name, got, want)
		}
	}
	// An empty recording is a valid, empty trace.
	empty := writeTrace(t)
	if len(empty) != traceHeader {
		t.Fatalf("empty trace is %d bytes", len(empty))
	}
	if got, err := ReadTrace(bytes.NewReader(empty), 0); err != nil || len(got) != 0 {
		t.Fatalf("empty trace: %d events, %v", len(got), err)
	}
}

// A batch larger than MaxFileBatch is split into frames, and so is one
// whose encoding would pass MaxTraceFrame.
func TestTraceSplitsFrames(t *testing.T) {
	long := sampleFiles()[3] // three paths of MaxPathLen
	big := make([]File, 2000)
	for i := range big {
		big[i] = long
	}
	raw := writeTrace(t, big)
	if n := binary.LittleEndian.Uint32(raw[traceHeader:]); n > MaxTraceFrame || binary.LittleEndian.Uint32(raw[traceHeader+8:]) >= 2000 {
		t.Fatalf("first frame: %d bytes, %d events", n, binary.LittleEndian.Uint32(raw[traceHeader+8:]))
	}
	if got, err := ReadTrace(bytes.NewReader(raw), 0); err != nil || len(got) != len(big) {
		t.Fatalf("long paths: read back %d events, %v", len(got), err)
	}

	evs := make([]File, MaxFileBatch+5)
	for i := range evs {
		evs[i] = File{TimeNs: int64(i), Op: FileWrite, Root: "/r", Path: "/r/f"}
	}
	var b bytes.Buffer
	w := NewTraceWriter(&b)
	if err := w.Write(evs); err != nil {
		t.Fatal(err)
	}
	if w.Events() != len(evs) {
		t.Fatalf("Events() = %d", w.Events())
	}
	raw = b.Bytes()
	first := binary.LittleEndian.Uint32(raw[traceHeader:])
	if n := binary.LittleEndian.Uint32(raw[traceHeader+4+4:]); n != MaxFileBatch {
		t.Fatalf("first frame holds %d events, want %d", n, MaxFileBatch)
	}
	if rest := len(raw) - traceHeader - 4 - int(first); rest <= 0 {
		t.Fatal("no second frame")
	}
	got, err := ReadTrace(bytes.NewReader(raw), 0)
	if err != nil || len(got) != len(evs) || got[len(got)-1].TimeNs != int64(len(evs)-1) {
		t.Fatalf("read back %d events, %v", len(got), err)
	}
}

func TestTraceLimit(t *testing.T) {
	raw := writeTrace(t, sampleFiles(), sampleFiles())
	for _, tc := range []struct {
		max     int
		n       int
		limited bool
	}{{0, 8, false}, {8, 8, false}, {9, 8, false}, {5, 5, true}, {4, 4, true}, {1, 1, true}} {
		got, err := ReadTrace(bytes.NewReader(raw), tc.max)
		if len(got) != tc.n || errors.Is(err, ErrTraceLimit) != tc.limited || (!tc.limited && err != nil) {
			t.Errorf("max %d: %d events, %v; want %d, limited %v", tc.max, len(got), err, tc.n, tc.limited)
		}
	}
}

func TestTraceErrors(t *testing.T) {
	good := writeTrace(t, sampleFiles()[:2], sampleFiles()[2:])
	firstFrame := 4 + int(binary.LittleEndian.Uint32(good[traceHeader:]))
	badLen := bytes.Clone(good)
	binary.LittleEndian.PutUint32(badLen[traceHeader:], MaxTraceFrame+1)
	shortLen := bytes.Clone(good)
	binary.LittleEndian.PutUint32(shortLen[traceHeader:], 3)
	badBatch := bytes.Clone(good)
	badBatch[traceHeader+4] = 'X' // the batch's magic
	for _, tc := range []struct {
		name string
		in   []byte
		keep int // events returned with the error
		want error
	}{
		{"empty", nil, 0, ErrTraceBadMagic},
		{"short header", []byte("VGF"), 0, ErrTraceBadMagic},
		{"a batch, not a trace", good[traceHeader+4:], 0, ErrTraceBadMagic},
		{"pcap", []byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0}, 0, ErrTraceBadMagic},
		{"version", append([]byte("VGFT\x02\x00\x00\x00"), good[traceHeader:]...), 0, ErrTraceBadVersion},
		{"reserved bytes", append([]byte("VGFT\x01\x00\x01\x00"), good[traceHeader:]...), 0, ErrTraceBadVersion},
		{"frame too long", badLen, 0, ErrTraceFrame},
		{"frame shorter than a batch header", shortLen, 0, ErrTraceFrame},
		{"bad batch", badBatch, 0, ErrFileBadMagic},
		{"cut in a length", good[:firstFrame+traceHeader+2], 2, io.ErrUnexpectedEOF},
		{"cut in a frame", good[:len(good)-1], 2, io.ErrUnexpectedEOF},
		{"bad gzip", []byte{0x1f, 0x8b, 0, 0}, 0, io.ErrUnexpectedEOF},
	} {
		got, err := ReadTrace(bytes.NewReader(tc.in), 0)
		if !errors.Is(err, tc.want) || len(got) != tc.keep {
			t.Errorf("%s: %d events, error %v; want %d events, %v", tc.name, len(got), err, tc.keep, tc.want)
		}
	}
}

func FuzzReadTrace(f *testing.F) {
	good := writeTrace(f, sampleFiles()[:2], sampleFiles()[2:])
	f.Add(good)
	f.Add(gz(f, good))
	f.Add(writeTrace(f))
	f.Add([]byte("VGFT\x01\x00\x00\x00\xff\xff\xff\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := ReadTrace(bytes.NewReader(b), 1000)
		if len(evs) > 1000 {
			t.Fatalf("%d events past the limit", len(evs))
		}
		if err != nil {
			return
		}
		// What was read writes back to a trace that reads the same (compared
		// encoded: a decoded float may be NaN).
		again, err := ReadTrace(bytes.NewReader(writeTrace(t, evs)), 0)
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		b1, _ := MarshalFiles(nil, evs)
		b2, _ := MarshalFiles(nil, again)
		if !bytes.Equal(b1, b2) {
			t.Fatal("re-read trace differs")
		}
	})
}
