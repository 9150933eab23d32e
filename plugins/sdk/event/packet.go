// Package event defines the compact, versioned binary record layouts in which
// the agent hands events to detector plugins: packet metadata (fixed 64-byte
// records, no payload) for the shared-memory ring. It is part of the plugin
// contract: the agent's capture produces these records, the plugins and the
// feature sets in models/features consume them, and the trainer reads the
// same records so that training and detection see identical inputs.
package event

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// PacketLayoutVersion is the version of the Packet record layout.
//
// History:
//   - 1: 64-byte little-endian record (see Packet). Flag bits 6 and 7
//     (FlagHTTPInjection, FlagHTTPTraversal), the content hints, were
//     added later without a new version: they were zero before, and a
//     consumer that ignores them reads the record as it did.
//   - Bit 12 of the VLAN field (HintCmdShell), a third content hint, was
//     added the same way: bits 12-15 held the 802.1Q priority and DEI,
//     which the agent never stored and every reader masked off, so an
//     older consumer reads the bare VLAN id as before.
//   - Bit 13 of the VLAN field (HintICMPData), a fourth content hint, and
//     bit 14 (HintHexData), a fifth, were added the same way, and bit 15
//     (HintCookieReuse), a sixth: a plugin built before it clears bit 15
//     on Unmarshal (it was reserved), so it reads the record as before.
const PacketLayoutVersion = 1

// PacketRecordSize is the size in bytes of one encoded Packet.
const PacketRecordSize = 64

// Packet flag bits.
const (
	FlagIPv4     uint8 = 1 << 0
	FlagIPv6     uint8 = 1 << 1
	FlagARP      uint8 = 1 << 2
	FlagVLAN     uint8 = 1 << 3
	FlagFragment uint8 = 1 << 4 // IP fragment (not the first): no ports
	FlagTrunc    uint8 = 1 << 5 // decoding stopped at a truncated or unknown layer

	// Content hints: the TCP payload begins an HTTP/1.x request whose
	// target carries an attack on the web application (agent/capture
	// decides; the record carries these two bits, never the payload).
	//
	// FlagHTTPInjection: a query parameter's value is SQL injection or
	// cross-site scripting by libinjection's grammar.
	FlagHTTPInjection uint8 = 1 << 6
	// FlagHTTPTraversal: the (percent-decoded) target climbs directories
	// ("../", or "..\" as Windows servers read it).
	FlagHTTPTraversal uint8 = 1 << 7
)

// Bits of the VLAN field: the 12-bit VLAN id and, above it, content hints
// that found no room in Flags. Every bit of the field is now in use.
const (
	// VLANIDMask selects the VLAN id (Packet.VLANID).
	VLANIDMask uint16 = 0x0fff
	// HintCmdShell: the TCP payload is the banner, prompt or first output
	// of an interactive command shell (cmd.exe, PowerShell, sh or bash)
	// served over the connection, as a reverse or bind shell after an
	// exploit does (agent/capture decides).
	HintCmdShell uint16 = 1 << 12
	// HintICMPData: the ICMP or ICMPv6 echo request or reply carries data
	// that no ping program's fill pattern explains (text, file contents,
	// tunnelled packets): a covert channel or a tunnel over ICMP
	// (agent/capture decides).
	HintICMPData uint16 = 1 << 13
	// HintHexData: the TCP payload (an HTTP message's body, when it begins
	// one) is hex-encoded data and nothing else, as malware writes the
	// ciphertext it exchanges with its command-and-control server over
	// plain HTTP (agent/capture decides).
	HintHexData uint16 = 1 << 14
	// HintCookieReuse: the TCP payload is an HTTP request that presents a
	// session cookie which another client address presented to the same
	// server: a hijacked web session (agent/capture decides).
	HintCookieReuse uint16 = 1 << 15
	// VLANKnownBits are the bits of the VLAN field a record may carry.
	VLANKnownBits = VLANIDMask | HintCmdShell | HintICMPData | HintHexData | HintCookieReuse
)

// TCP flag bits as in the TCP header's flags byte.
const (
	TCPFin uint8 = 1 << 0
	TCPSyn uint8 = 1 << 1
	TCPRst uint8 = 1 << 2
	TCPPsh uint8 = 1 << 3
	TCPAck uint8 = 1 << 4
	TCPUrg uint8 = 1 << 5
	TCPEce uint8 = 1 << 6
	TCPCwr uint8 = 1 << 7
)

// IP protocol numbers used in Packet.Proto.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// Packet is the metadata of one captured packet. It holds no pointers, so
// slices of it cost the garbage collector nothing.
//
// Addresses are 16 bytes; IPv4 addresses are stored IPv4-mapped
// (::ffff:a.b.c.d). For ARP, SrcIP/DstIP are the sender and target protocol
// addresses and DstPort holds the ARP operation. For ICMP, SrcPort holds the
// type and DstPort the code.
//
// Layout (little endian): 0 TimestampNs int64 | 8 SrcMAC [6] | 14 DstMAC [6] |
// 20 SrcIP [16] | 36 DstIP [16] | 52 SrcPort u16 | 54 DstPort u16 |
// 56 Length u16 | 58 Proto u8 | 59 TCPFlags u8 | 60 TTL u8 | 61 Flags u8 |
// 62 VLAN u16 (bits 0-11 the VLAN id, bit 12 HintCmdShell, bit 13 HintICMPData,
// bit 14 HintHexData, bit 15 HintCookieReuse).
type Packet struct {
	TimestampNs int64
	SrcMAC      [6]byte
	DstMAC      [6]byte
	SrcIP       [16]byte
	DstIP       [16]byte
	SrcPort     uint16
	DstPort     uint16
	Length      uint16 // length on the wire, capped at 65535
	Proto       uint8
	TCPFlags    uint8
	TTL         uint8 // TTL or hop limit
	Flags       uint8
	VLAN        uint16 // VLAN id (VLANIDMask), HintCmdShell, HintICMPData, HintHexData and HintCookieReuse
}

// VLANID returns the packet's VLAN id (0 without a tag).
func (p *Packet) VLANID() uint16 { return p.VLAN & VLANIDMask }

// ErrShortRecord is returned when a buffer is smaller than one record.
var ErrShortRecord = errors.New("event: short packet record")

// Marshal writes p into b, which must hold PacketRecordSize bytes.
func (p *Packet) Marshal(b []byte) {
	_ = b[PacketRecordSize-1]
	binary.LittleEndian.PutUint64(b[0:], uint64(p.TimestampNs))
	copy(b[8:14], p.SrcMAC[:])
	copy(b[14:20], p.DstMAC[:])
	copy(b[20:36], p.SrcIP[:])
	copy(b[36:52], p.DstIP[:])
	binary.LittleEndian.PutUint16(b[52:], p.SrcPort)
	binary.LittleEndian.PutUint16(b[54:], p.DstPort)
	binary.LittleEndian.PutUint16(b[56:], p.Length)
	b[58] = p.Proto
	b[59] = p.TCPFlags
	b[60] = p.TTL
	b[61] = p.Flags
	binary.LittleEndian.PutUint16(b[62:], p.VLAN)
}

// Unmarshal reads p from b. Every 64-byte value is a valid record, so the only
// error is a short buffer.
func (p *Packet) Unmarshal(b []byte) error {
	if len(b) < PacketRecordSize {
		return fmt.Errorf("unmarshal packet (%d bytes): %w", len(b), ErrShortRecord)
	}
	p.TimestampNs = int64(binary.LittleEndian.Uint64(b[0:]))
	copy(p.SrcMAC[:], b[8:14])
	copy(p.DstMAC[:], b[14:20])
	copy(p.SrcIP[:], b[20:36])
	copy(p.DstIP[:], b[36:52])
	p.SrcPort = binary.LittleEndian.Uint16(b[52:])
	p.DstPort = binary.LittleEndian.Uint16(b[54:])
	p.Length = binary.LittleEndian.Uint16(b[56:])
	p.Proto = b[58]
	p.TCPFlags = b[59]
	p.TTL = b[60]
	p.Flags = b[61]
	p.VLAN = binary.LittleEndian.Uint16(b[62:]) & VLANKnownBits
	return nil
}

// SrcAddr returns the source address (IPv4 unmapped).
func (p *Packet) SrcAddr() netip.Addr { return netip.AddrFrom16(p.SrcIP).Unmap() }

// DstAddr returns the destination address (IPv4 unmapped).
func (p *Packet) DstAddr() netip.Addr { return netip.AddrFrom16(p.DstIP).Unmap() }

// SetSrc stores a source address (IPv4 as IPv4-mapped).
func (p *Packet) SetSrc(a netip.Addr) { p.SrcIP = a.As16() }

// SetDst stores a destination address (IPv4 as IPv4-mapped).
func (p *Packet) SetDst(a netip.Addr) { p.DstIP = a.As16() }

// ProtoName is a short name of the transport for findings ("tcp", "udp", ...).
func (p *Packet) ProtoName() string {
	switch {
	case p.Flags&FlagARP != 0:
		return "arp"
	case p.Proto == ProtoTCP:
		return "tcp"
	case p.Proto == ProtoUDP:
		return "udp"
	case p.Proto == ProtoICMP:
		return "icmp"
	case p.Proto == ProtoICMPv6:
		return "icmpv6"
	case p.Flags&(FlagIPv4|FlagIPv6) != 0:
		return fmt.Sprintf("ip/%d", p.Proto)
	default:
		return "other"
	}
}
