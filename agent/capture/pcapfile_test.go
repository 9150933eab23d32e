package capture

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// pcapRecord is one record as a reader returned it.
type pcapRecord struct {
	data    []byte
	ts      int64
	origLen int
}

// readPcapgo reads a classic pcap with pcapgo (the reference): the records
// and the error that ended the file (io.EOF when clean).
func readPcapgo(data []byte) (layers.LinkType, []pcapRecord, error, error) {
	r, err := pcapgo.NewReader(bufio.NewReader(bytes.NewReader(data)))
	if err != nil {
		return 0, nil, nil, err
	}
	var recs []pcapRecord
	for i := 0; i <= len(data); i++ {
		d, ci, err := r.ZeroCopyReadPacketData()
		if err != nil {
			return r.LinkType(), recs, err, nil
		}
		recs = append(recs, pcapRecord{append([]byte(nil), d...), ci.Timestamp.UnixNano(), ci.Length})
	}
	panic("pcapgo did not end")
}

// chunkReader returns at most n bytes per Read, n cycling through sizes, to
// exercise the buffer refills.
type chunkReader struct {
	r io.Reader
	i int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	sizes := [...]int{1, 7, 16, 100, 1500, 4096, 70000}
	c.i++
	if n := sizes[c.i%len(sizes)]; len(p) > n {
		p = p[:n]
	}
	return c.r.Read(p)
}

func readOurs(r io.Reader) (layers.LinkType, []pcapRecord, error, error) {
	p, err := newPcapReader(r)
	if err != nil {
		return 0, nil, nil, err
	}
	var recs []pcapRecord
	for {
		d, ts, orig, err := p.next()
		if err != nil {
			return p.link, recs, err, nil
		}
		recs = append(recs, pcapRecord{append([]byte(nil), d...), ts, orig})
	}
}

// comparePcapReaders checks that pcapReader returns exactly pcapgo's
// records, and ends where pcapgo ends: cleanly where pcapgo does (except a
// file ending right after a record header, which pcapgo takes as a clean
// end and this reader reports as truncated), truncated where pcapgo reports
// io.ErrUnexpectedEOF, with an error where pcapgo has one.
func comparePcapReaders(t *testing.T, name string, data []byte, chunked bool) {
	t.Helper()
	wantLT, want, wantEnd, wantOpen := readPcapgo(data)
	var src io.Reader = bytes.NewReader(data)
	if chunked {
		src = &chunkReader{r: src}
	}
	gotLT, got, gotEnd, gotOpen := readOurs(src)
	if (wantOpen == nil) != (gotOpen == nil) {
		t.Fatalf("%s: open: pcapgo %v, ours %v", name, wantOpen, gotOpen)
	}
	if wantOpen != nil {
		return
	}
	if gotLT != wantLT {
		t.Fatalf("%s: link type %d, pcapgo %d", name, gotLT, wantLT)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d records (end %v), pcapgo %d (end %v)", name, len(got), gotEnd, len(want), wantEnd)
	}
	for i := range want {
		if !bytes.Equal(got[i].data, want[i].data) || got[i].ts != want[i].ts || got[i].origLen != want[i].origLen {
			t.Fatalf("%s: record %d: ours (%d bytes, ts %d, len %d), pcapgo (%d bytes, ts %d, len %d)", name, i,
				len(got[i].data), got[i].ts, got[i].origLen, len(want[i].data), want[i].ts, want[i].origLen)
		}
	}
	switch {
	case wantEnd == io.EOF && gotEnd == io.EOF:
	case wantEnd == io.EOF && errors.Is(gotEnd, io.ErrUnexpectedEOF):
		// pcapgo: io.ReadFull of the data after a complete header at the
		// end of the file reads nothing and returns io.EOF.
	case errors.Is(wantEnd, io.ErrUnexpectedEOF) && errors.Is(gotEnd, io.ErrUnexpectedEOF):
	case wantEnd != io.EOF && !errors.Is(wantEnd, io.ErrUnexpectedEOF) && gotEnd != io.EOF && !errors.Is(gotEnd, io.ErrUnexpectedEOF):
	default:
		t.Fatalf("%s: ends with %v, pcapgo with %v", name, gotEnd, wantEnd)
	}
}

func isClassicPcap(data []byte) bool {
	if len(data) < 4 {
		return false
	}
	switch binary.LittleEndian.Uint32(data) {
	case magicPcapMicroLE, magicPcapMicroBE, magicPcapNanoLE, magicPcapNanoBE:
		return true
	}
	return false
}

// TestPcapReaderMatchesPcapgo: on every classic pcap file of the shared
// data (VIGIL_SHARED_DATA, skipped when absent), whole, read in odd chunks,
// and cut at several places, the zero-copy reader returns exactly pcapgo's
// packets, lengths and timestamps.
func TestPcapReaderMatchesPcapgo(t *testing.T) {
	dir := os.Getenv("VIGIL_SHARED_DATA")
	if dir == "" {
		dir = "/work/shared/data"
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Skipf("shared data not found at %s (set VIGIL_SHARED_DATA): skipping", dir)
	}
	files, records := 0, 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !isClassicPcap(data) {
			return nil
		}
		files++
		_, recs, _, _ := readPcapgo(data)
		records += len(recs)
		rel, _ := filepath.Rel(dir, p)
		comparePcapReaders(t, rel, data, false)
		if len(data) <= 1<<20 {
			comparePcapReaders(t, rel+" (chunked)", data, true)
		}
		for _, cut := range []int{len(data) - 1, len(data) - 17, len(data) / 2, 30, 24} {
			if cut > 0 && cut < len(data) {
				comparePcapReaders(t, rel+" (cut)", data[:cut], false)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Skipf("no classic pcap files under %s", dir)
	}
	t.Logf("%d classic pcap files, %d records: identical to pcapgo", files, records)
}

// TestPcapReaderErrors: hand-made corrupt and truncated files end with the
// expected kind of error after the records before them, and a huge record
// length in a tiny file allocates nothing big.
func TestPcapReaderErrors(t *testing.T) {
	fr := frames(t, 3)
	full := writePcap(t, false, layers.LinkTypeEthernet, fr)
	huge := append([]byte(nil), full...)
	// Snap length 2^32-1, first record claims 1 GiB captured and on the wire.
	binary.LittleEndian.PutUint32(huge[16:], 0xffffffff)
	binary.LittleEndian.PutUint32(huge[24+8:], 1<<30)
	binary.LittleEndian.PutUint32(huge[24+12:], 1<<30)
	origGreater := append([]byte(nil), full...)
	binary.LittleEndian.PutUint32(origGreater[24+12:], 10) // original length < captured
	badVersion := append([]byte(nil), full...)
	binary.LittleEndian.PutUint16(badVersion[4:], 3)
	for _, tc := range []struct {
		name      string
		data      []byte
		records   int
		truncated bool
		openErr   bool
	}{
		{"huge record in a small file", huge, 0, true, false},
		{"original length below captured", origGreater, 0, false, false},
		{"bad version", badVersion, 0, false, true},
		{"header only", full[:24], 0, false, false},
		{"short header", full[:20], 0, false, true},
		{"record header cut", full[:24+10], 0, true, false},
		{"record data missing", full[:24+16], 0, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, recs, end, open := readOurs(bytes.NewReader(tc.data))
			if tc.openErr {
				if open == nil {
					t.Fatal("header accepted")
				}
				return
			}
			if open != nil {
				t.Fatalf("open: %v", open)
			}
			if len(recs) != tc.records {
				t.Fatalf("%d records, want %d", len(recs), tc.records)
			}
			switch {
			case tc.truncated && !errors.Is(end, io.ErrUnexpectedEOF):
				t.Fatalf("end %v, want truncated", end)
			case !tc.truncated && tc.name == "header only" && end != io.EOF:
				t.Fatalf("end %v, want io.EOF", end)
			case !tc.truncated && tc.name != "header only" && (end == io.EOF || errors.Is(end, io.ErrUnexpectedEOF)):
				t.Fatalf("end %v, want a corrupt-record error", end)
			}
			t.Logf("end: %v", end)
		})
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	readOurs(bytes.NewReader(huge))
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 8<<20 {
		t.Fatalf("a 1 GiB record length in a %d-byte file allocated %d bytes", len(huge), d)
	}
}

// BenchmarkPcapRead compares the two readers on the reference capture's
// first records (or a generated file): ns per packet, read only.
func BenchmarkPcapRead(b *testing.B) {
	data := benchPcap(b)
	b.Run("pcapgo", func(b *testing.B) {
		n := 0
		for b.Loop() {
			r, err := pcapgo.NewReader(bufio.NewReaderSize(bytes.NewReader(data), 1<<16))
			if err != nil {
				b.Fatal(err)
			}
			for {
				if _, _, err := r.ZeroCopyReadPacketData(); err != nil {
					break
				}
				n++
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/packet")
	})
	b.Run("zerocopy", func(b *testing.B) {
		n := 0
		for b.Loop() {
			r, err := newPcapReader(bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}
			for {
				if _, _, _, err := r.next(); err != nil {
					break
				}
				n++
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/packet")
	})
}

func benchPcap(b *testing.B) []byte {
	const limit = 64 << 20
	if f, err := os.Open("../../.cache/bench/netflow-ref-1000000.pcap"); err == nil {
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, limit))
		if err == nil && len(data) > 1<<20 {
			return data
		}
	}
	b.Skip("reference capture not built (test/e2e/netflow_bench.sh)")
	return nil
}
