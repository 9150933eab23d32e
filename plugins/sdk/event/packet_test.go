package event

import (
	"errors"
	"net/netip"
	"testing"
)

func TestPacketRoundTrip(t *testing.T) {
	p := Packet{TimestampNs: 1700000000123456789, SrcMAC: [6]byte{1, 2, 3, 4, 5, 6}, DstMAC: [6]byte{6, 5, 4, 3, 2, 1},
		SrcPort: 51515, DstPort: 443, Length: 1514, Proto: ProtoTCP, TCPFlags: TCPSyn | TCPAck, TTL: 64, Flags: FlagIPv4 | FlagVLAN, VLAN: 42}
	p.SetSrc(netip.MustParseAddr("10.99.0.1"))
	p.SetDst(netip.MustParseAddr("2001:db8::1"))
	var b [PacketRecordSize]byte
	p.Marshal(b[:])
	var q Packet
	if err := q.Unmarshal(b[:]); err != nil {
		t.Fatal(err)
	}
	if q != p {
		t.Fatalf("round trip: got %+v want %+v", q, p)
	}
	if q.SrcAddr().String() != "10.99.0.1" || q.DstAddr().String() != "2001:db8::1" {
		t.Fatalf("addresses: %s %s", q.SrcAddr(), q.DstAddr())
	}
	if q.ProtoName() != "tcp" {
		t.Fatalf("proto name %q", q.ProtoName())
	}
	if err := q.Unmarshal(b[:10]); !errors.Is(err, ErrShortRecord) {
		t.Fatalf("short record: got %v", err)
	}
}

// TestVLANBits: bits 12 to 15 of the VLAN field (HintCmdShell,
// HintICMPData, HintHexData, HintCookieReuse) survive a round trip next to
// the VLAN id. (Bit 15 was reserved, and cleared, before HintCookieReuse.)
func TestVLANBits(t *testing.T) {
	tests := []struct {
		name  string
		wire  uint16
		want  uint16
		id    uint16
		hints uint16
	}{
		{"id only", 42, 42, 42, 0},
		{"shell hint, no tag", HintCmdShell, HintCmdShell, 0, HintCmdShell},
		{"id and shell hint", 4095 | HintCmdShell, 4095 | HintCmdShell, 4095, HintCmdShell},
		{"ICMP hint, no tag", HintICMPData, HintICMPData, 0, HintICMPData},
		{"id and both hints", 9 | HintCmdShell | HintICMPData, 9 | HintCmdShell | HintICMPData, 9, HintCmdShell | HintICMPData},
		{"hex hint, no tag", HintHexData, HintHexData, 0, HintHexData},
		{"cookie hint and id", 0x8000 | 7, HintCookieReuse | 7, 7, HintCookieReuse},
		{"all bits", 0xffff, 0xffff, 4095, HintCmdShell | HintICMPData | HintHexData | HintCookieReuse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, PacketRecordSize)
			b[62], b[63] = byte(tt.wire), byte(tt.wire>>8)
			var p Packet
			if err := p.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
			if p.VLAN != tt.want || p.VLANID() != tt.id || p.VLAN&^VLANIDMask != tt.hints {
				t.Fatalf("VLAN %#x id %d: want %#x id %d hints %#x", p.VLAN, p.VLANID(), tt.want, tt.id, tt.hints)
			}
		})
	}
}

func FuzzPacketUnmarshal(f *testing.F) {
	f.Add(make([]byte, PacketRecordSize))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		if err := p.Unmarshal(b); err != nil {
			return
		}
		var out [PacketRecordSize]byte
		p.Marshal(out[:])
		var q Packet
		if err := q.Unmarshal(out[:]); err != nil || q != p {
			t.Fatalf("re-encode mismatch: %+v vs %+v", q, p)
		}
		_ = p.ProtoName()
	})
}
