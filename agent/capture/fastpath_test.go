package capture

import (
	"bytes"
	"encoding/binary"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// TestNoLayerAfterTransport: the fast path stops after the TCP or UDP
// header, as gopacket does only if no layer registered in NewDecoder can
// follow TCP or UDP on any port.
func TestNoLayerAfterTransport(t *testing.T) {
	d := NewDecoder()
	registered := []gopacket.DecodingLayer{&d.eth, &d.dot1q, &d.sll, &d.sll2, &d.loop, &d.ip4, &d.ip6, &d.ip6ext,
		&d.ip6frag, &d.tcp, &d.udp, &d.icmp4, &d.icmp6, &d.arp}
	check := func(what string, port int, lt gopacket.LayerType) {
		for _, l := range registered {
			if l.CanDecode().Contains(lt) {
				t.Fatalf("%s port %d: next layer %v is decoded (%T): the fast path would stop early", what, port, lt, l)
			}
		}
	}
	for port := 0; port <= 0xffff; port++ {
		check("tcp", port, layers.TCPPort(port).LayerType())
		check("udp", port, layers.UDPPort(port).LayerType())
	}
	check("udp gue", 0, layers.LayerTypeAGUEVar1)
}

// sharedData returns the folder of the shared data (VIGIL_SHARED_DATA,
// default /work/shared/data), or skips the test when it is absent.
func sharedData(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("VIGIL_SHARED_DATA")
	if dir == "" {
		dir = "/work/shared/data"
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Skipf("shared data not found at %s (set VIGIL_SHARED_DATA): skipping", dir)
	}
	return dir
}

// sharedFiles calls fn with the path (relative to dir) and the contents of
// every regular file below dir.
func sharedFiles(t *testing.T, dir string, fn func(rel string, data []byte)) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fn(rel, data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// frameSource yields the frames of a pcap or pcapng file with their link
// type, for the decoder comparisons.
func eachFrame(t *testing.T, data []byte, fn func(lt layers.LinkType, frame []byte)) {
	t.Helper()
	if isClassicPcap(data) {
		r, err := newPcapReader(bytes.NewReader(data))
		if err != nil {
			return
		}
		for {
			f, _, _, err := r.next()
			if err != nil {
				return
			}
			fn(r.link, f)
		}
	}
	if len(data) < 4 || binary.LittleEndian.Uint32(data) != magicPcapNG {
		return
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(data), pcapgo.NgReaderOptions{WantMixedLinkType: true, SkipUnknownVersion: true})
	if err != nil {
		return
	}
	for i := 0; i <= len(data); i++ {
		f, ci, err := r.ZeroCopyReadPacketData()
		if err != nil {
			return
		}
		lt := layers.LinkType(0xffff)
		if len(ci.AncillaryData) > 0 {
			if l, ok := ci.AncillaryData[0].(layers.LinkType); ok {
				lt = l
			}
		}
		fn(lt, f)
	}
}

// TestFastPathMatchesGopacket: on every frame of every capture of the
// shared data (VIGIL_SHARED_DATA; skipped when absent), Decode with the
// Ethernet/IPv4 fast path gives the same result and record as gopacket's
// layers alone, and also on each frame cut short at several lengths.
// garbage is a packet record with every byte set, to check that decoding
// writes every field.
var garbage = func() (p event.Packet) {
	b := make([]byte, event.PacketRecordSize)
	for i := range b {
		b[i] = 0xa5
	}
	if err := p.Unmarshal(b); err != nil {
		panic(err)
	}
	return p
}()

func TestFastPathMatchesGopacket(t *testing.T) {
	dir := sharedData(t)
	fast, ref := NewDecoder(), NewDecoder()
	ref.noFast = true
	var frames, fastHits, hinted int
	compare := func(name string, lt layers.LinkType, f []byte, wire int) {
		var q event.Packet
		p := garbage // every field must be written, whatever p held
		r1 := fast.Decode(lt, f, 1234, wire, &p)
		r2 := ref.Decode(lt, f, 1234, wire, &q)
		if r1 != r2 || (r1 <= DecodedTruncated && p != q) {
			t.Fatalf("%s: frame %d (% x): fast path %v %+v, gopacket %v %+v", name, frames, f, r1, p, r2, q)
		}
		if r1 <= DecodedTruncated && p.Flags&(event.FlagHTTPInjection|event.FlagHTTPTraversal) != 0 {
			hinted++
		}
	}
	sharedFiles(t, dir, func(rel string, data []byte) {
		eachFrame(t, data, func(lt layers.LinkType, f []byte) {
			frames++
			var p event.Packet
			if _, ok := fastEthIPv4(f, 0, len(f), &p); lt == layers.LinkTypeEthernet && ok {
				fastHits++
			}
			compare(rel, lt, f, len(f))
			compare(rel, lt, f, len(f)+100)
			if lt == layers.LinkTypeEthernet && frames%7 == 0 {
				for _, cut := range []int{len(f) - 1, 14 + 20 + 7, 14 + 20 + 19, 14 + 21, 14 + 19, 13} {
					if cut >= 0 && cut < len(f) {
						compare(rel+" (cut)", lt, f[:cut], len(f))
					}
				}
			}
		})
	})
	if frames == 0 {
		t.Skip("no frames in the shared data")
	}
	t.Logf("%d frames, %d on the fast path: records identical to gopacket's; %d with HTTP content hints", frames, fastHits, hinted)
	// The shared attack captures hold DVWA's SQL injection and traversal
	// requests (each frame is compared twice, with two wire lengths).
	if hinted == 0 {
		if _, err := os.Stat(filepath.Join(dir, "attacks", "chrissanders-packets", "http_dvwa_sqlinjection.pcapng")); err == nil {
			t.Error("no frame with HTTP content hints, though the DVWA captures are there")
		}
	}
}
