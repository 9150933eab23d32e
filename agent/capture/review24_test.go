package capture

import (
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// TestIPv6HopByHopProto: gopacket decodes an IPv6 Hop-by-Hop header inside
// the IPv6 layer, never as a layer of its own, so the record's protocol must
// be the header's next header, not 0 (Hop-by-Hop), when no transport layer
// that the decoder knows follows (RSVP and PIM carry a router alert, ESP).
// Before, such packets were recorded as protocol 0 ("ip/0").
func TestIPv6HopByHopProto(t *testing.T) {
	frame := func(next byte, payload []byte) []byte {
		b := []byte{2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 0x86, 0xdd}
		ip := make([]byte, 40)
		ip[0] = 0x60
		ip[4], ip[5] = byte(len(payload)>>8), byte(len(payload))
		ip[6], ip[7] = next, 64
		ip[8], ip[23] = 0xfd, 0xa
		ip[24], ip[39] = 0xfd, 0xb
		return append(append(b, ip...), payload...)
	}
	hbh := func(next byte) []byte { return []byte{next, 0, 1, 4, 0, 0, 0, 0} } // PadN
	tcp := []byte{0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 4, 0, 0, 0, 0, 0}
	udp := []byte{0x9c, 0x40, 0, 53, 0, 12, 0, 0, 'a', 'b', 'c', 'd'}
	for _, c := range []struct {
		name  string
		data  []byte
		proto uint8
		sport uint16
	}{
		{"hbh+rsvp", frame(0, append(hbh(46), 0x10, 1, 0, 0, 0, 0, 0, 8)), 46, 0},
		{"hbh+pim", frame(0, append(hbh(103), 0x20, 0, 0, 0)), 103, 0},
		{"hbh+esp", frame(0, append(hbh(50), 0, 0, 1, 0, 0, 0, 0, 1)), 50, 0},
		{"hbh+tcp", frame(0, append(hbh(6), tcp...)), event.ProtoTCP, 40000},
		{"hbh+dstopts+udp", frame(0, append(append(hbh(60), hbh(17)...), udp...)), event.ProtoUDP, 40000},
		{"dstopts+pim", frame(60, append(hbh(103), 0x20, 0, 0, 0)), 103, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var p event.Packet
			r := NewDecoder().Decode(layers.LinkTypeEthernet, c.data, 1, len(c.data), &p)
			if r != Decoded {
				t.Fatalf("result %v, want decoded", r)
			}
			if p.Proto != c.proto || p.SrcPort != c.sport || p.Flags&event.FlagIPv6 == 0 {
				t.Fatalf("proto %d, source port %d, flags %#x; want proto %d, source port %d, IPv6", p.Proto, p.SrcPort, p.Flags, c.proto, c.sport)
			}
		})
	}
}
