package capture

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Echo payloads of ping programs and of covert channels.
var (
	// iputils ping: a 16-byte timeval, then 0x10, 0x11, … (56 bytes).
	linuxPing = append([]byte{0x9d, 0x4a, 0x68, 0x69, 0, 0, 0, 0, 0x3e, 0x21, 0x0d, 0, 0, 0, 0, 0},
		seq(0x10, 40)...)
	// iputils ping whose timeval's every non-zero byte happens to be
	// printable (the worst case: the high halves of tv_sec and tv_usec
	// are zero).
	printableStamp = append([]byte{0x7e, 0x41, 0x68, 0x29, 0, 0, 0, 0, 0x3f, 0x7b, 0x2e, 0, 0, 0, 0, 0}, seq(0x10, 40)...)
	windowsPing    = []byte("abcdefghijklmnopqrstuvwabcdefghi")
	ciscoPing      = repeat([]byte{0xab, 0xcd}, 36)
	zeros          = make([]byte, 64)
	xs             = []byte(strings.Repeat("X", 64))
	// ping -p ff and ping -p 0a0b0c0d: test patterns of one or a few bytes.
	patternFF   = repeat([]byte{0xff}, 56)
	pattern0a0d = repeat([]byte{0x0a, 0x0b, 0x0c, 0x0d}, 14)
	// ppa1e_covertinfo.pcap's message (the BlueChat covert channel).
	blueChat = append([]byte{0x0e, 0x44, 0, 0, 0, 0, 0x01, 0, 0, 0, 0, 0},
		[]byte("BlueChat10.100.17.48   Transfer all of the funds to account number 1192828231-0")...)
	// ping -p with 16 bytes of /etc/passwd per packet (exfiltration).
	passwdPattern = repeat([]byte("root:x:0:0:root:"), 3)
	// A tunnelled TCP SYN (IP header and all): binary data.
	tunnelled = []byte{0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0xb1, 0xe6, 0x0a, 0x63, 0x00, 0x02,
		0x0a, 0x63, 0x00, 0x01, 0xa5, 0x7e, 0x00, 0x16, 0x6f, 0x3b, 0x59, 0x21, 0x00, 0x00, 0x00, 0x00,
		0xa0, 0x02, 0xfa, 0xf0, 0x5c, 0x3a, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a,
		0x3f, 0x7b, 0x2e, 0x41, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07, 0x52, 0x7a, 0x4d, 0x21,
		0x6b, 0x3c, 0x7e, 0x2f, 0x51, 0x68, 0x5d, 0x33, 0x74, 0x47, 0x2a, 0x60, 0x39, 0x6e, 0x23, 0x7b}
)

func seq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func repeat(p []byte, n int) []byte {
	var b []byte
	for range n {
		b = append(b, p...)
	}
	return b
}

func TestICMPHint(t *testing.T) {
	tests := []struct {
		name string
		v6   bool
		typ  uint8
		pl   []byte
		want uint16
	}{
		{"linux ping request", false, 8, linuxPing, 0},
		{"linux ping, printable timestamp", false, 8, printableStamp, 0},
		{"windows ping", false, 8, windowsPing, 0},
		{"windows ping reply", false, 0, windowsPing, 0},
		{"cisco ping", false, 8, ciscoPing, 0},
		{"zeros (fping, tracert)", false, 8, zeros, 0},
		{"one repeated letter", false, 8, xs, 0},
		{"ping -p ff", false, 8, patternFF, 0},
		{"ping -p 0a0b0c0d", false, 8, pattern0a0d, 0},
		{"empty", false, 8, nil, 0},
		{"short text", false, 8, []byte("hello world"), 0},
		{"covert chat request", false, 8, blueChat, event.HintICMPData},
		{"covert chat reply", false, 0, blueChat, event.HintICMPData},
		{"ping -p exfiltration", false, 8, passwdPattern, event.HintICMPData},
		{"tunnelled packet", false, 8, tunnelled, event.HintICMPData},
		{"text in an unreachable (quoted header, not echo)", false, 3, blueChat, 0},
		{"text in a timestamp request", false, 13, blueChat, 0},
		{"ICMPv6 echo request with text", true, 128, blueChat, event.HintICMPData},
		{"ICMPv6 echo reply with text", true, 129, blueChat, event.HintICMPData},
		{"ICMPv6 linux ping", true, 128, linuxPing, 0},
		{"ICMPv6 type 8 is not echo", true, 8, blueChat, 0},
		{"ICMPv4 type 128 is not echo", false, 128, blueChat, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := icmpHint(tt.v6, tt.typ, tt.pl); got != tt.want {
				t.Fatalf("icmpHint = %#x, want %#x", got, tt.want)
			}
		})
	}
}

// TestICMPHintDecode: the decoder marks echo packets with covert data
// (IPv4 and IPv6, tagged or not) and leaves pings unmarked.
func TestICMPHintDecode(t *testing.T) {
	src, dst := []byte{10, 99, 0, 1}, []byte{10, 99, 0, 2}
	src6, dst6 := make([]byte, 16), make([]byte, 16)
	src6[0], src6[15], dst6[0], dst6[15] = 0xfd, 1, 0xfd, 2
	frame := func(v6, tagged bool, typ uint8, pl []byte) []byte {
		eth := &layers.Ethernet{SrcMAC: make([]byte, 6), DstMAC: make([]byte, 6), EthernetType: layers.EthernetTypeIPv4}
		var ls []gopacket.SerializableLayer
		if tagged {
			eth.EthernetType = layers.EthernetTypeDot1Q
			et := layers.EthernetTypeIPv4
			if v6 {
				et = layers.EthernetTypeIPv6
			}
			ls = append(ls, eth, &layers.Dot1Q{VLANIdentifier: 7, Type: et})
		} else {
			if v6 {
				eth.EthernetType = layers.EthernetTypeIPv6
			}
			ls = append(ls, eth)
		}
		if v6 {
			ip := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 64, SrcIP: src6, DstIP: dst6}
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
			_ = ic.SetNetworkLayerForChecksum(ip)
			ls = append(ls, ip, ic, gopacket.Payload(append([]byte{0, 1, 0, 1}, pl...)))
		} else {
			ls = append(ls, &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src, DstIP: dst},
				&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0), Id: 1, Seq: 1}, gopacket.Payload(pl))
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	d := NewDecoder()
	for _, v6 := range []bool{false, true} {
		typ := uint8(8)
		if v6 {
			typ = 128
		}
		for _, tagged := range []bool{false, true} {
			for _, c := range []struct {
				pl   []byte
				want uint16
			}{{linuxPing, 0}, {windowsPing, 0}, {blueChat, event.HintICMPData}, {tunnelled, event.HintICMPData}} {
				f := frame(v6, tagged, typ, c.pl)
				var p event.Packet
				if r := d.Decode(layers.LinkTypeEthernet, f, 1, len(f), &p); r > DecodedTruncated {
					t.Fatalf("v6 %v tagged %v: decode result %v", v6, tagged, r)
				}
				if got := p.VLAN &^ event.VLANIDMask; got != c.want {
					t.Errorf("v6 %v tagged %v payload %q: hints %#x, want %#x", v6, tagged, c.pl[:8], got, c.want)
				}
				if tagged && p.VLANID() != 7 {
					t.Errorf("v6 %v: VLAN id %d, want 7", v6, p.VLANID())
				}
			}
		}
	}
}

// TestICMPHintSharedData: on the shared captures the hint marks the covert
// channel of ppa1e_covertinfo and no packet of a benign capture.
func TestICMPHintSharedData(t *testing.T) {
	dir, hinted := sharedHinted(t, event.HintICMPData, "covert ICMP data")
	rel := filepath.Join("attacks", "chrissanders-packets", "ppa1e_covertinfo.pcap")
	if _, err := os.Stat(filepath.Join(dir, rel)); err == nil && hinted[rel] != 2 {
		t.Errorf("%s: %d packets marked, want the request and its reply", rel, hinted[rel])
	}
}

func FuzzICMPHint(f *testing.F) {
	for _, pl := range [][]byte{linuxPing, windowsPing, ciscoPing, blueChat, tunnelled, nil} {
		f.Add(false, uint8(8), pl)
	}
	f.Add(true, uint8(129), blueChat)
	f.Fuzz(func(t *testing.T, v6 bool, typ uint8, pl []byte) {
		h := icmpHint(v6, typ, pl)
		if h != 0 && h != event.HintICMPData {
			t.Fatalf("hint %#x", h)
		}
		echo := (!v6 && (typ == 0 || typ == 8)) || (v6 && (typ == 128 || typ == 129))
		if h != 0 && (!echo || len(pl) <= icmpDataPairs) {
			t.Fatalf("hint for type %d (v6 %v), %d bytes", typ, v6, len(pl))
		}
		// Only the first icmpDataWindow bytes count.
		if len(pl) > icmpDataWindow && icmpHint(v6, typ, pl[:icmpDataWindow]) != h {
			t.Fatal("bytes beyond the window changed the hint")
		}
	})
}

func BenchmarkICMPHint(b *testing.B) {
	for _, c := range []struct {
		name string
		pl   []byte
	}{{"linux", linuxPing}, {"windows", windowsPing}, {"covert", blueChat}, {"1400B-zeros", make([]byte, 1400)}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				icmpHint(false, 8, c.pl)
			}
		})
	}
}
