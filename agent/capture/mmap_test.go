//go:build unix

package capture

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// paddedFrames returns n frames of lengths that vary, so that records
// straddle the mapped windows' ends at odd offsets.
func paddedFrames(t *testing.T, n int) [][]byte {
	base := tcpFrame(t)
	f := make([][]byte, n)
	for i := range f {
		f[i] = append(append([]byte(nil), base...), make([]byte, (i*37)%1400)...)
	}
	return f
}

// TestMappedMatchesRead reads a capture larger than several windows
// through the mapping and through plain reads: the same records.
func TestMappedMatchesRead(t *testing.T) {
	data := writePcap(t, true, layers.LinkTypeEthernet, paddedFrames(t, 12000)) // about 8.6 MB
	if len(data) < 3*mapWindow {
		t.Fatalf("capture of %d bytes is not larger than 3 windows", len(data))
	}
	f, err := os.Open(writeFile(t, "m.pcap", data))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mp, err := newPcapFileReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.close()
	if mp.m == nil {
		t.Fatal("a regular file was not mapped")
	}
	rp, err := newPcapReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; n < 100000; n++ {
		d1, ts1, l1, err1 := mp.next()
		d2, ts2, l2, err2 := rp.next()
		if !bytes.Equal(d1, d2) || ts1 != ts2 || l1 != l2 || (err1 == nil) != (err2 == nil) {
			t.Fatalf("record %d: mapped (%d bytes, %d, %d, %v) != read (%d bytes, %d, %d, %v)", n, len(d1), ts1, l1, err1, len(d2), ts2, l2, err2)
		}
		if err1 != nil {
			if !errors.Is(err1, io.EOF) {
				t.Fatal(err1)
			}
			break
		}
	}
	if n != 12000 {
		t.Fatalf("%d records, want 12000", n)
	}
}

// TestMappedFileShrinks truncates a capture while it is mapped: the
// access beyond the new end faults, and the source reports a truncated
// file after the packets before it instead of crashing.
func TestMappedFileShrinks(t *testing.T) {
	data := writePcap(t, false, layers.LinkTypeEthernet, paddedFrames(t, 700)) // about 0.5 MB: one window
	path := writeFile(t, "s.pcap", data)
	s, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if fs := s.(*fileSource); fs.pcap == nil || fs.pcap.m == nil {
		t.Fatal("a regular file was not mapped")
	}
	first, err := s.Next(t.Context(), make([]event.Packet, 10))
	if err != nil || first != 10 {
		t.Fatalf("first batch: %d, %v", first, err)
	}
	if err := os.Truncate(path, 64<<10); err != nil {
		t.Fatal(err)
	}
	all, err := readAll(t, s)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("after truncation: %d packets, error %v, want ErrTruncated", len(all), err)
	}
	if n := first + len(all); n < 10 || n >= 700 {
		t.Fatalf("%d packets read in all", n)
	}
	t.Logf("%d packets, then: %v", first+len(all), err)
}

// TestFaultSafe: faultSafe, which newPcapFileReader reads the file header
// with, turns a fault on a mapped page beyond the file's end (the file
// shrank after it was mapped: SIGBUS) into the truncated-file error, and
// lets any other panic through.
func TestFaultSafe(t *testing.T) {
	ps := int(pageSize)
	path := writeFile(t, "f.pcap", bytes.Repeat([]byte{1}, 3*ps))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := newFileMap(f)
	if m == nil {
		t.Skip("the file cannot be mapped here")
	}
	defer m.unmap()
	data, err := m.window(0, 3*ps)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := faultSafe(func() (byte, error) { return data[2*ps], nil }); v != 1 || err != nil {
		t.Fatalf("read of a mapped page: %v, %v", v, err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	_, err = faultSafe(func() (byte, error) { return data[2*ps], nil })
	if !errors.Is(err, errFileShrank) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read beyond the shrunk file's end: %v, want errFileShrank and io.ErrUnexpectedEOF", err)
	}
	defer func() {
		if r := recover(); r != "not a fault" {
			t.Fatalf("recovered %v, want the panic that is not a fault", r)
		}
	}()
	_, _ = faultSafe(func() (int, error) { panic("not a fault") })
	t.Fatal("faultSafe swallowed a panic that is not a fault")
}
