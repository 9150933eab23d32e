package event

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
)

func sampleFiles() []File {
	return []File{
		{TimeNs: 1700000000123456789, Size: 1 << 33, Mode: 0o755, Writes: 17, Op: FileWrite,
			Flags: FileFlagSampled | FileFlagHeadTail | FileFlagExecParsed, SampleLen: 65536, Magic: MagicELF, ExtMagic: MagicText,
			Entropy: 7.99, ZeroFrac: 0.01, PrintableFrac: 0.37, HighFrac: 0.5, ChiSquare: 251.5, Base64Frac: 0.125,
			ExecFlags: ExecELF | ExecWX, Sections: 29, Imports: 140, Libraries: 3, MaxSectionEntropy: 7.9, ExecSectionEntropy: 6.1,
			Root: "/srv/www", Path: "/srv/www/a/b\nc\xff.txt"},
		{TimeNs: -1, Size: -1, Op: FileRename, Root: "/r", Path: "/r/x.locked", OldPath: "/r/x.doc"},
		{Op: FileRemove},
		{Op: FileChmod, Path: strings.Repeat("p", MaxPathLen), Root: strings.Repeat("r", MaxPathLen), OldPath: strings.Repeat("o", MaxPathLen)},
	}
}

func TestFileBatchRoundTrip(t *testing.T) {
	in := sampleFiles()
	b, err := MarshalFiles(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	want := fileBatchHeader
	for i := range in {
		want += in[i].EncodedSize()
	}
	if len(b) != want {
		t.Fatalf("encoded %d bytes, EncodedSize says %d", len(b), want)
	}
	prefix := []File{{Op: FileCreate, Path: "keep"}}
	out, err := UnmarshalFiles(b, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in)+1 || out[0].Path != "keep" {
		t.Fatalf("append semantics broken: %d events", len(out))
	}
	for i := range in {
		if out[i+1] != in[i] {
			t.Fatalf("record %d: got %+v want %+v", i, out[i+1], in[i])
		}
	}
}

func TestFileBatchErrors(t *testing.T) {
	good, err := MarshalFiles(nil, sampleFiles()[:2])
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrFileBadMagic},
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), ErrFileBadMagic},
		{"version", mut(func(b []byte) []byte { b[3] = 2; return b }), ErrFileBadVersion},
		{"count too large", mut(func(b []byte) []byte { b[4] = 200; return b }), ErrFileBadRecord},
		{"count too small", mut(func(b []byte) []byte { b[4] = 1; return b }), ErrFileBadRecord},
		{"truncated", good[:len(good)-1], ErrFileBadRecord},
		{"bad op", mut(func(b []byte) []byte { b[fileBatchHeader+4+38] = 9; return b }), ErrFileBadRecord},
		{"body length", mut(func(b []byte) []byte { b[fileBatchHeader] = 3; return b }), ErrFileBadRecord},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := UnmarshalFiles(c.b, nil); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	long := File{Op: FileCreate, Path: strings.Repeat("x", MaxPathLen+1)}
	if _, err := MarshalFiles(nil, []File{long}); !errors.Is(err, ErrFilePathLen) {
		t.Fatalf("long path: %v", err)
	}
	if _, err := MarshalFiles(nil, []File{{}}); !errors.Is(err, ErrFileBadRecord) {
		t.Fatalf("zero op: %v", err)
	}
}

func TestFileNames(t *testing.T) {
	if FileRename.String() != "rename" || MagicELF.String() != "elf" || Magic(200).String() != "magic(200)" {
		t.Fatal("names")
	}
	for m := Magic(0); m < MagicEnd; m++ {
		if magicNames[m] == "" {
			t.Fatalf("magic %d has no name", m)
		}
	}
}

func FuzzFileUnmarshal(f *testing.F) {
	good, _ := MarshalFiles(nil, sampleFiles())
	f.Add(good)
	one, _ := MarshalFiles(nil, sampleFiles()[1:2])
	f.Add(one)
	f.Add([]byte("VGF\x01\x00\x00\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := UnmarshalFiles(b, nil)
		if err != nil {
			return
		}
		b2, err := MarshalFiles(nil, evs)
		if err != nil {
			t.Fatalf("re-encode of decoded batch failed: %v", err)
		}
		evs2, err := UnmarshalFiles(b2, nil)
		if err != nil {
			t.Fatalf("decode of re-encoded batch failed: %v", err)
		}
		b3, _ := MarshalFiles(nil, evs2)
		if !bytes.Equal(b2, b3) {
			t.Fatal("encoding not stable")
		}
		for i := range evs {
			_ = evs[i].Op.String()
			_ = evs[i].Magic.String()
			_ = math.IsNaN(float64(evs[i].Entropy))
		}
	})
}

func BenchmarkFileBatchRoundTrip(b *testing.B) {
	evs := make([]File, 256)
	for i := range evs {
		evs[i] = sampleFiles()[0]
	}
	buf, _ := MarshalFiles(nil, evs)
	b.SetBytes(int64(len(buf)))
	out := make([]File, 0, len(evs))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf, _ = MarshalFiles(buf[:0], evs)
		out, _ = UnmarshalFiles(buf, out[:0])
	}
}
