package capture

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

var (
	tMacA = net.HardwareAddr{2, 0, 0, 0, 0, 0xa}
	tMacB = net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	tIP4A = net.IP{10, 99, 0, 1}
	tIP4B = net.IP{10, 99, 0, 2}
	tIP6A = net.ParseIP("fd00::a")
	tIP6B = net.ParseIP("fd00::b")
)

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: tMacA, DstMAC: tMacB, EthernetType: typ}
}

func ip4(proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: tIP4A, DstIP: tIP4B}
}

func ip6(next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 63, NextHeader: next, SrcIP: tIP6A, DstIP: tIP6B}
}

func tcpSYN() *layers.TCP {
	return &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Window: 1024, Seq: 1}
}

// TCPFrame builds an Ethernet/IPv4/TCP SYN frame (also used by benchmarks).
func tcpFrame(t testing.TB) []byte {
	tcp := tcpSYN()
	ip := ip4(layers.IPProtocolTCP)
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, eth(layers.EthernetTypeIPv4), ip, tcp, gopacket.Payload("hello"))
}

func addr(s string) [16]byte { return netip.MustParseAddr(s).As16() }

func TestDecode(t *testing.T) {
	v4a, v4b := addr("::ffff:10.99.0.1"), addr("::ffff:10.99.0.2")
	v6a, v6b := addr("fd00::a"), addr("fd00::b")

	udp := &layers.UDP{SrcPort: 5353, DstPort: 53}
	udp4 := ip4(layers.IPProtocolUDP)
	_ = udp.SetNetworkLayerForChecksum(udp4)
	udpFrame := serialize(t, eth(layers.EthernetTypeIPv4), udp4, udp, gopacket.Payload("q"))

	tcp6 := tcpSYN()
	tcp6.ACK = true
	i6 := ip6(layers.IPProtocolTCP)
	_ = tcp6.SetNetworkLayerForChecksum(i6)
	tcp6Frame := serialize(t, eth(layers.EthernetTypeIPv6), i6, tcp6)

	udp6 := &layers.UDP{SrcPort: 546, DstPort: 547}
	i6u := ip6(layers.IPProtocolUDP)
	_ = udp6.SetNetworkLayerForChecksum(i6u)
	udp6Frame := serialize(t, eth(layers.EthernetTypeIPv6), i6u, udp6)

	icmp4Frame := serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}, gopacket.Payload("ping"))

	icmp6 := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
	i6i := ip6(layers.IPProtocolICMPv6)
	_ = icmp6.SetNetworkLayerForChecksum(i6i)
	icmp6Frame := serialize(t, eth(layers.EthernetTypeIPv6), i6i, icmp6, gopacket.Payload("ping"))

	vlanTCP := tcpSYN()
	vip := ip4(layers.IPProtocolTCP)
	_ = vlanTCP.SetNetworkLayerForChecksum(vip)
	vlanFrame := serialize(t, eth(layers.EthernetTypeDot1Q),
		&layers.Dot1Q{VLANIdentifier: 42, Type: layers.EthernetTypeIPv4}, vip, vlanTCP)

	arpFrame := serialize(t, eth(layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet,
		Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: tMacA, SourceProtAddress: tIP4A, DstHwAddress: make([]byte, 6), DstProtAddress: tIP4B})

	// Fragments: the first carries the UDP header, a later one does not.
	frag1IP := ip4(layers.IPProtocolUDP)
	frag1IP.Flags = layers.IPv4MoreFragments
	frag1 := serialize(t, eth(layers.EthernetTypeIPv4), frag1IP,
		gopacket.Payload([]byte{0x13, 0x88, 0x00, 0x35, 0x05, 0xdc, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}))
	frag2IP := ip4(layers.IPProtocolUDP)
	frag2IP.FragOffset = 185
	frag2 := serialize(t, eth(layers.EthernetTypeIPv4), frag2IP, gopacket.Payload(make([]byte, 64)))

	frag6 := serialize(t, eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolIPv6Fragment),
		gopacket.Payload([]byte{17, 0, 0x05, 0x00, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8}))

	full := tcpFrame(t)
	truncTCP := full[:14+20+8] // TCP header cut short
	truncIP := full[:14+10]    // IPv4 header cut short
	truncEth := full[:10]      // not even Ethernet

	rawIP := full[14:]
	sll := append([]byte{0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 0xa, 0, 0, 0x08, 0x00}, full[14:]...)

	tests := []struct {
		name string
		lt   layers.LinkType
		data []byte
		res  Result
		want event.Packet
	}{
		{"tcp4", layers.LinkTypeEthernet, full, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v4a, DstIP: v4b, SrcPort: 40000, DstPort: 80, Proto: 6, TCPFlags: event.TCPSyn, TTL: 64, Flags: event.FlagIPv4}},
		{"udp4", layers.LinkTypeEthernet, udpFrame, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v4a, DstIP: v4b, SrcPort: 5353, DstPort: 53, Proto: 17, TTL: 64, Flags: event.FlagIPv4}},
		{"tcp6", layers.LinkTypeEthernet, tcp6Frame, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v6a, DstIP: v6b, SrcPort: 40000, DstPort: 80, Proto: 6, TCPFlags: event.TCPSyn | event.TCPAck, TTL: 63, Flags: event.FlagIPv6}},
		{"udp6", layers.LinkTypeEthernet, udp6Frame, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v6a, DstIP: v6b, SrcPort: 546, DstPort: 547, Proto: 17, TTL: 63, Flags: event.FlagIPv6}},
		{"icmp4", layers.LinkTypeEthernet, icmp4Frame, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v4a, DstIP: v4b, SrcPort: 8, DstPort: 0, Proto: 1, TTL: 64, Flags: event.FlagIPv4}},
		{"icmp6", layers.LinkTypeEthernet, icmp6Frame, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v6a, DstIP: v6b, SrcPort: 128, Proto: 58, TTL: 63, Flags: event.FlagIPv6}},
		{"vlan", layers.LinkTypeEthernet, vlanFrame, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v4a, DstIP: v4b, SrcPort: 40000, DstPort: 80, Proto: 6, TCPFlags: event.TCPSyn, TTL: 64,
			Flags: event.FlagIPv4 | event.FlagVLAN, VLAN: 42}},
		{"arp", layers.LinkTypeEthernet, arpFrame, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v4a, DstIP: v4b, DstPort: 1, Flags: event.FlagARP}},
		{"first fragment", layers.LinkTypeEthernet, frag1, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v4a, DstIP: v4b, SrcPort: 5000, DstPort: 53, Proto: 17, TTL: 64, Flags: event.FlagIPv4}},
		{"later fragment", layers.LinkTypeEthernet, frag2, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v4a, DstIP: v4b, Proto: 17, TTL: 64, Flags: event.FlagIPv4 | event.FlagFragment}},
		{"ipv6 later fragment", layers.LinkTypeEthernet, frag6, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v6a, DstIP: v6b, Proto: 17, TTL: 63, Flags: event.FlagIPv6 | event.FlagFragment}},
		{"truncated tcp", layers.LinkTypeEthernet, truncTCP, DecodedTruncated, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			SrcIP: v4a, DstIP: v4b, Proto: 6, TTL: 64, Flags: event.FlagIPv4 | event.FlagTrunc}},
		{"truncated ip", layers.LinkTypeEthernet, truncIP, DecodedTruncated, event.Packet{SrcMAC: [6]byte(tMacA), DstMAC: [6]byte(tMacB),
			Flags: event.FlagTrunc}},
		{"truncated ethernet", layers.LinkTypeEthernet, truncEth, DecodeFailed, event.Packet{}},
		{"raw ip", layers.LinkTypeRaw, rawIP, Decoded, event.Packet{SrcIP: v4a, DstIP: v4b, SrcPort: 40000, DstPort: 80,
			Proto: 6, TCPFlags: event.TCPSyn, TTL: 64, Flags: event.FlagIPv4}},
		{"linux sll", layers.LinkTypeLinuxSLL, sll, Decoded, event.Packet{SrcMAC: [6]byte(tMacA), SrcIP: v4a, DstIP: v4b,
			SrcPort: 40000, DstPort: 80, Proto: 6, TCPFlags: event.TCPSyn, TTL: 64, Flags: event.FlagIPv4}},
		{"unknown link type", layers.LinkType(147), full, UnknownLinkType, event.Packet{}},
	}
	d := NewDecoder()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p event.Packet
			res := d.Decode(tc.lt, tc.data, 1234, len(tc.data)+100, &p)
			if res != tc.res {
				t.Fatalf("result %v, want %v", res, tc.res)
			}
			if res == DecodeFailed || res == UnknownLinkType {
				return
			}
			tc.want.TimestampNs = 1234
			tc.want.Length = uint16(len(tc.data) + 100)
			if p != tc.want {
				t.Errorf("got  %+v\nwant %+v", p, tc.want)
			}
		})
	}
}

// TestDecodeRecoversFastPathPanic: a panic on the Ethernet/IPv4 fast path,
// which runs a third-party parser on HTTP request lines (the HTTP hints'
// libinjection), is recovered like one in gopacket's path: the frame fails
// to decode (the readers count a decode error) and the capture goes on
// instead of the agent crashing. A nil record makes the fast path panic.
func TestDecodeRecoversFastPathPanic(t *testing.T) {
	frame := tcpFrame(t)
	var p event.Packet
	if _, ok := fastEthIPv4(frame, 1, len(frame), &p); !ok {
		t.Fatal("the test frame does not take the fast path")
	}
	d := NewDecoder()
	res := func() (res Result) {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Decode panicked on the fast path: %v", r)
			}
		}()
		return d.Decode(layers.LinkTypeEthernet, frame, 1, len(frame), nil)
	}()
	if res != DecodeFailed {
		t.Errorf("Decode after a panic = %v, want %v", res, DecodeFailed)
	}
	if r := d.Decode(layers.LinkTypeEthernet, frame, 1, len(frame), &p); r != Decoded {
		t.Errorf("next Decode = %v, want %v", r, Decoded)
	}
}

func TestDecodeNoAllocs(t *testing.T) {
	d := NewDecoder()
	frame := tcpFrame(t)
	var p event.Packet
	allocs := testing.AllocsPerRun(1000, func() {
		if d.Decode(layers.LinkTypeEthernet, frame, 1, len(frame), &p) != Decoded {
			t.Fatal("decode failed")
		}
	})
	if allocs != 0 {
		t.Fatalf("decoding a TCP frame allocates %v times", allocs)
	}
}

func BenchmarkDecodeTCP(b *testing.B) {
	d := NewDecoder()
	frame := tcpFrame(b)
	var p event.Packet
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for i := 0; i < b.N; i++ {
		d.Decode(layers.LinkTypeEthernet, frame, int64(i), len(frame), &p)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(uint16(layers.LinkTypeEthernet), tcpFrame(f))
	f.Add(uint16(layers.LinkTypeRaw), tcpFrame(f)[14:])
	f.Add(uint16(layers.LinkTypeLinuxSLL), append(make([]byte, 16), tcpFrame(f)[14:]...))
	f.Add(uint16(layers.LinkTypeNull), []byte{2, 0, 0, 0, 0x45})
	f.Fuzz(func(t *testing.T, lt uint16, data []byte) {
		d := NewDecoder()
		var p event.Packet
		res := d.Decode(layers.LinkType(lt), data, 0, len(data), &p)
		if res == UnknownLinkType && SupportedLinkType(layers.LinkType(lt)) {
			t.Fatalf("supported link type %d reported unknown", lt)
		}
		// The Ethernet/IPv4 fast path gives gopacket's record.
		ref := NewDecoder()
		ref.noFast = true
		var q event.Packet
		resRef := ref.Decode(layers.LinkType(lt), data, 0, len(data), &q)
		if res != resRef || (res <= DecodedTruncated && p != q) {
			t.Fatalf("fast path %v %+v, gopacket %v %+v", res, p, resRef, q)
		}
	})
}
