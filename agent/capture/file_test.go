package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

var t0 = time.Unix(1_700_000_000, 123_456_789).UTC()

// readAll drains a source with a small buffer so that batches split.
func readAll(t *testing.T, s Source) ([]event.Packet, error) {
	t.Helper()
	var all []event.Packet
	buf := make([]event.Packet, 3)
	for i := 0; i < 1_000_000; i++ {
		n, err := s.Next(context.Background(), buf)
		all = append(all, buf[:n]...)
		if err != nil {
			if n != 0 {
				t.Fatalf("Next returned n=%d with error %v", n, err)
			}
			return all, err
		}
		if n == 0 {
			t.Fatal("Next returned 0 packets and no error")
		}
	}
	t.Fatal("source never ended")
	return nil, nil
}

func writePcap(t *testing.T, nanos bool, lt layers.LinkType, frames [][]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if nanos {
		w = pcapgo.NewWriterNanos(&b)
	}
	if err := w.WriteFileHeader(65535, lt); err != nil {
		t.Fatal(err)
	}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(f), Length: len(f)}
		if err := w.WritePacket(ci, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// bigEndianPcap writes a microsecond pcap in big-endian byte order by hand
// (pcapgo writes little endian only).
func bigEndianPcap(frames [][]byte) []byte {
	var b bytes.Buffer
	hdr := make([]byte, 24)
	binary.BigEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.BigEndian.PutUint16(hdr[4:], 2)
	binary.BigEndian.PutUint16(hdr[6:], 4)
	binary.BigEndian.PutUint32(hdr[16:], 65535)
	binary.BigEndian.PutUint32(hdr[20:], 1)
	b.Write(hdr)
	for i, f := range frames {
		rec := make([]byte, 16)
		binary.BigEndian.PutUint32(rec[0:], uint32(t0.Unix()))
		binary.BigEndian.PutUint32(rec[4:], uint32(i))
		binary.BigEndian.PutUint32(rec[8:], uint32(len(f)))
		binary.BigEndian.PutUint32(rec[12:], uint32(len(f)))
		b.Write(rec)
		b.Write(f)
	}
	return b.Bytes()
}

func writeNg(t *testing.T, frames [][]byte, extraLinkType layers.LinkType) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriter(&b, layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	other := -1
	if extraLinkType != 0 {
		if other, err = w.AddInterface(pcapgo.NgInterface{LinkType: extraLinkType, SnapLength: 65535}); err != nil {
			t.Fatal(err)
		}
	}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(f), Length: len(f)}
		if err := w.WritePacket(ci, f); err != nil {
			t.Fatal(err)
		}
		if other >= 0 {
			ci.InterfaceIndex = other
			if err := w.WritePacket(ci, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func frames(t *testing.T, n int) [][]byte {
	f := make([][]byte, n)
	for i := range f {
		f[i] = tcpFrame(t)
	}
	return f
}

func TestOpenFile(t *testing.T) {
	fr := frames(t, 7)
	full := writePcap(t, false, layers.LinkTypeEthernet, fr)
	tests := []struct {
		name    string
		data    []byte
		packets int
		err     error // nil: io.EOF expected
		unknown uint64
	}{
		{"pcap usec", full, 7, nil, 0},
		{"pcap nsec", writePcap(t, true, layers.LinkTypeEthernet, fr), 7, nil, 0},
		{"pcap big endian", bigEndianPcap(fr), 7, nil, 0},
		{"pcap raw ip", writePcap(t, false, layers.LinkTypeRaw, [][]byte{fr[0][14:], fr[1][14:]}), 2, nil, 0},
		{"pcapng", writeNg(t, fr, 0), 7, nil, 0},
		{"pcapng with an unsupported interface", writeNg(t, fr, layers.LinkTypeIEEE80211Radio), 7, nil, 7},
		{"pcap truncated inside a record", full[:len(full)-10], 6, ErrTruncated, 0},
		{"pcap truncated inside a record header", full[:len(full)-len(fr[6])-8], 6, ErrTruncated, 0},
		{"pcap corrupt record length", corruptLength(full), 1, ErrCorrupt, 0},
		{"pcap empty", full[:24], 0, nil, 0},
		{"pcapng truncated", writeNg(t, fr, 0)[:len(writeNg(t, fr, 0))-20], 6, ErrTruncated, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "x.pcap", tc.data)
			s, err := OpenFile(path)
			if err != nil {
				t.Fatalf("OpenFile: %v", err)
			}
			defer s.Close()
			pk, err := readAll(t, s)
			if len(pk) != tc.packets {
				t.Errorf("read %d packets, want %d", len(pk), tc.packets)
			}
			if tc.err == nil && err != io.EOF {
				t.Errorf("end error %v, want io.EOF", err)
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("end error %v, want %v", err, tc.err)
				} else if !bytes.Contains([]byte(err.Error()), []byte(path)) {
					t.Errorf("error %q does not name the file", err)
				}
				t.Logf("error: %v", err)
			}
			st := s.Stats()
			if st.Decoded != uint64(tc.packets) || st.UnknownLinkType != tc.unknown {
				t.Errorf("stats %+v", st)
			}
			for i, p := range pk {
				if p.SrcPort != 40000 || p.DstPort != 80 || p.TimestampNs == 0 {
					t.Fatalf("packet %d: %+v", i, p)
				}
			}
			if len(pk) > 1 && tc.name != "pcap big endian" {
				if d := pk[1].TimestampNs - pk[0].TimestampNs; d != int64(time.Millisecond) {
					t.Errorf("timestamps %d apart, want 1ms", d)
				}
			}
		})
	}
	t.Run("nanosecond timestamp", func(t *testing.T) {
		s, err := OpenFile(writeFile(t, "n.pcap", writePcap(t, true, layers.LinkTypeEthernet, fr[:1])))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		pk, _ := readAll(t, s)
		if len(pk) != 1 || pk[0].TimestampNs != t0.UnixNano() {
			t.Fatalf("got %+v, want timestamp %d", pk, t0.UnixNano())
		}
	})
}

func corruptLength(full []byte) []byte {
	b := append([]byte(nil), full...)
	// Second record's captured length: far beyond the snap length.
	off := 24 + 16 + len(tcpFrameBytes(full)) + 8
	binary.LittleEndian.PutUint32(b[off:], 0x7fffffff)
	return b
}

// tcpFrameBytes returns the first record's data of a little-endian pcap.
func tcpFrameBytes(pcap []byte) []byte {
	n := binary.LittleEndian.Uint32(pcap[24+8:])
	return pcap[24+16 : 24+16+int(n)]
}

func TestOpenFileErrors(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		err  error
	}{
		{"empty", nil, ErrUnknownFormat},
		{"text", []byte("hello, world\n"), ErrUnknownFormat},
		{"gzip", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0}, ErrUnknownFormat},
		{"unsupported link type", writePcap(t, false, layers.LinkTypeIEEE80211Radio, nil), ErrUnsupportedLinkType},
		{"short pcap header", writePcap(t, false, layers.LinkTypeEthernet, nil)[:10], ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "x.pcap", tc.data)
			s, err := OpenFile(path)
			if err == nil {
				s.Close()
				t.Fatal("OpenFile succeeded")
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
		})
	}
	t.Run("pcapng of an unsupported link type only", func(t *testing.T) {
		var b bytes.Buffer
		w, err := pcapgo.NewNgWriter(&b, layers.LinkTypeIEEE80211Radio)
		if err != nil {
			t.Fatal(err)
		}
		_ = w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: 4, Length: 4}, []byte{1, 2, 3, 4})
		_ = w.Flush()
		s, err := OpenFile(writeFile(t, "x.pcapng", b.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = readAll(t, s)
		if !errors.Is(err, ErrUnsupportedLinkType) {
			t.Fatalf("error %v, want ErrUnsupportedLinkType", err)
		}
	})
}

func TestContextCancel(t *testing.T) {
	s, err := OpenFile(writeFile(t, "x.pcap", writePcap(t, false, layers.LinkTypeEthernet, frames(t, 3))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := s.Next(ctx, make([]event.Packet, 8)); n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Next on a cancelled context: %d, %v", n, err)
	}
}

func TestParseBPF(t *testing.T) {
	prog, err := ParseBPF("4\n40 0 0 12\n21 0 1 2048\n6 0 0 262144\n6 0 0 0\n")
	if err != nil || len(prog) != 4 || prog[1].K != 2048 || prog[1].Jf != 1 {
		t.Fatalf("ParseBPF: %v %+v", err, prog)
	}
	for _, bad := range []string{"", "x", "2\n40 0 0 12\n", "1\n40 0 0\n", "1\n40 0 0 99999999999\n", "0\n", "1\n65535 0 0 0\n"} {
		if _, err := ParseBPF(bad); err == nil {
			t.Errorf("ParseBPF(%q) succeeded", bad)
		}
	}
}

func TestCompileFilter(t *testing.T) {
	prog, err := CompileFilter(context.Background(), "tcp port 80 or icmp")
	if err != nil {
		t.Skipf("tcpdump cannot compile filters here: %v", err)
	}
	if len(prog) < 4 {
		t.Fatalf("program too short: %v", prog)
	}
	if _, err := CompileFilter(context.Background(), "not a ( filter"); err == nil {
		t.Fatal("bad expression compiled")
	}
}

func FuzzPcapReader(f *testing.F) {
	f.Add([]byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0})
	f.Add([]byte{0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 28, 0, 0, 0})
	{
		// A little-endian microsecond file with two records, the second cut.
		var b bytes.Buffer
		w := pcapgo.NewWriter(&b)
		_ = w.WriteFileHeader(65535, layers.LinkTypeEthernet)
		for i := range 2 {
			_ = w.WritePacket(gopacket.CaptureInfo{Timestamp: t0, CaptureLength: 60, Length: 60 + i}, make([]byte, 60))
		}
		f.Add(b.Bytes()[:b.Len()-5])
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if isClassicPcap(data) {
			// The zero-copy classic pcap reader against pcapgo, the reference.
			comparePcapReaders(t, "fuzz", data, false)
			comparePcapReaders(t, "fuzz (chunked)", data, true)
		}
		path := filepath.Join(dir, "fuzz.pcap")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenFile(path)
		if err != nil {
			return
		}
		defer s.Close()
		buf := make([]event.Packet, 16)
		// Every record takes at least 8 bytes of the file, so a reader that
		// makes progress ends within len(data) calls.
		for i := 0; i <= len(data)+1; i++ {
			n, err := s.Next(context.Background(), buf)
			if err != nil {
				return
			}
			if n == 0 {
				t.Fatal("no packets and no error")
			}
		}
		t.Fatal("reader did not end")
	})
}
