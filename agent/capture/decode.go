package capture

import (
	"encoding/binary"
	"fmt"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Link types decoded besides those gopacket names: DLT_RAW as some systems
// number it in files (12, 14).
const (
	linkTypeRawAlt1 layers.LinkType = 12
	linkTypeRawAlt2 layers.LinkType = 14
)

// Result says what Decode made of a frame.
type Result uint8

const (
	// Decoded: p holds the frame's metadata.
	Decoded Result = iota
	// DecodedTruncated: p holds what was decoded before a truncated or
	// malformed inner layer (FlagTrunc is set).
	DecodedTruncated
	// DecodeFailed: not even the link layer decoded; p is not valid.
	DecodeFailed
	// UnknownLinkType: the link type is not supported; p is not valid.
	UnknownLinkType
)

// SupportedLinkType reports whether Decode handles frames of link type lt.
func SupportedLinkType(lt layers.LinkType) bool {
	switch lt {
	case layers.LinkTypeEthernet, layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2,
		layers.LinkTypeRaw, linkTypeRawAlt1, linkTypeRawAlt2, layers.LinkTypeIPv4, layers.LinkTypeIPv6,
		layers.LinkTypeNull, layers.LinkTypeLoop:
		return true
	}
	return false
}

// Decoder turns raw frames into event.Packet records with preallocated
// gopacket layers: no allocation per packet once warm. Not safe for
// concurrent use; use one per goroutine.
type Decoder struct {
	eth     layers.Ethernet
	dot1q   layers.Dot1Q
	sll     layers.LinuxSLL
	sll2    layers.LinuxSLL2
	loop    layers.Loopback
	ip4     layers.IPv4
	ip6     layers.IPv6
	ip6ext  layers.IPv6ExtensionSkipper
	ip6frag layers.IPv6Fragment
	tcp     layers.TCP
	udp     layers.UDP
	icmp4   layers.ICMPv4
	icmp6   layers.ICMPv6
	arp     layers.ARP

	parsers [6]*gopacket.DecodingLayerParser // by firstLayer index
	decoded []gopacket.LayerType
	// noFast turns the Ethernet/IPv4/TCP|UDP fast path off (tests compare
	// the two paths).
	noFast bool
	// cookies follows session cookies across clients (cookiehint.go).
	cookies *CookieTable
}

const (
	firstEth = iota
	firstSLL
	firstSLL2
	firstLoop
	firstIPv4
	firstIPv6
)

// NewDecoder returns a ready decoder with a session-cookie table of its own
// (event.HintCookieReuse): one decoder per capture file.
func NewDecoder() *Decoder { return NewDecoderWithCookies(NewCookieTable()) }

// NewDecoderWithCookies returns a ready decoder that follows session cookies
// in t, which the decoders of one capture (a live capture's sockets) share.
func NewDecoderWithCookies(t *CookieTable) *Decoder {
	d := &Decoder{decoded: make([]gopacket.LayerType, 0, 16), cookies: t}
	// The IPv6 extension skipper comes before the fragment layer so that the
	// fragment header is decoded by IPv6Fragment (later registrations win).
	dl := []gopacket.DecodingLayer{&d.eth, &d.dot1q, &d.sll, &d.sll2, &d.loop, &d.ip4, &d.ip6, &d.ip6ext,
		&d.ip6frag, &d.tcp, &d.udp, &d.icmp4, &d.icmp6, &d.arp}
	for i, first := range []gopacket.LayerType{layers.LayerTypeEthernet, layers.LayerTypeLinuxSLL,
		layers.LayerTypeLinuxSLL2, layers.LayerTypeLoopback, layers.LayerTypeIPv4, layers.LayerTypeIPv6} {
		// A sparse array indexed by layer type instead of gopacket's default
		// map: one slice index per layer instead of a map lookup (about 5% of
		// the agent's scan CPU). Later registrations still win.
		var dlc gopacket.DecodingLayerContainer = gopacket.DecodingLayerSparse(nil)
		for _, l := range dl {
			dlc = dlc.Put(l)
		}
		p := gopacket.NewDecodingLayerParser(first)
		p.SetDecodingLayerContainer(dlc)
		p.IgnoreUnsupported = true
		d.parsers[i] = p
	}
	return d
}

func (d *Decoder) parserFor(lt layers.LinkType, data []byte) *gopacket.DecodingLayerParser {
	switch lt {
	case layers.LinkTypeEthernet:
		return d.parsers[firstEth]
	case layers.LinkTypeLinuxSLL:
		return d.parsers[firstSLL]
	case layers.LinkTypeLinuxSLL2:
		return d.parsers[firstSLL2]
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		return d.parsers[firstLoop]
	case layers.LinkTypeIPv4:
		return d.parsers[firstIPv4]
	case layers.LinkTypeIPv6:
		return d.parsers[firstIPv6]
	case layers.LinkTypeRaw, linkTypeRawAlt1, linkTypeRawAlt2:
		if len(data) > 0 && data[0]>>4 == 6 {
			return d.parsers[firstIPv6]
		}
		return d.parsers[firstIPv4]
	}
	return nil
}

// Decode decodes one frame of link type lt, captured at tsNs with wireLen
// bytes on the wire, into p. It never panics: a panic inside gopacket or a
// content hint (both paths run third-party parsers, such as libinjection in
// the HTTP hints, on the payload) is recovered and reported as DecodeFailed.
func (d *Decoder) Decode(lt layers.LinkType, data []byte, tsNs int64, wireLen int, p *event.Packet) (res Result) {
	// Before the fast path: the live readers have no recover of their own,
	// so a panic here would end the agent.
	defer func() {
		if r := recover(); r != nil {
			res = DecodeFailed
		}
	}()
	if lt == layers.LinkTypeEthernet && !d.noFast {
		if pl, ok := fastEthIPv4(data, tsNs, wireLen, p); ok {
			d.cookieHint(p, pl)
			return Decoded
		}
	}
	parser := d.parserFor(lt, data)
	if parser == nil {
		return UnknownLinkType
	}
	*p = event.Packet{TimestampNs: tsNs}
	if wireLen < len(data) {
		wireLen = len(data)
	}
	p.Length = uint16(min(wireLen, 0xffff))

	err := parser.DecodeLayers(data, &d.decoded)
	if len(d.decoded) == 0 {
		return DecodeFailed
	}
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeEthernet:
			p.SrcMAC = [6]byte(d.eth.SrcMAC)
			p.DstMAC = [6]byte(d.eth.DstMAC)
		case layers.LayerTypeDot1Q:
			if p.Flags&event.FlagVLAN == 0 {
				p.Flags |= event.FlagVLAN
				p.VLAN = d.dot1q.VLANIdentifier & 0x0fff
			}
		case layers.LayerTypeLinuxSLL:
			if len(d.sll.Addr) >= 6 {
				p.SrcMAC = [6]byte(d.sll.Addr[:6])
			}
		case layers.LayerTypeLinuxSLL2:
			if len(d.sll2.Addr) >= 6 {
				p.SrcMAC = [6]byte(d.sll2.Addr[:6])
			}
		case layers.LayerTypeIPv4:
			d.fillIPv4(p)
		case layers.LayerTypeIPv6:
			p.Flags |= event.FlagIPv6
			p.SrcIP = as16(d.ip6.SrcIP)
			p.DstIP = as16(d.ip6.DstIP)
			p.Proto = uint8(d.ip6.NextHeader)
			if d.ip6.HopByHop != nil {
				// gopacket decodes a Hop-by-Hop header inside the IPv6
				// layer (never as a layer of its own): the protocol is
				// the one after it, not 0.
				p.Proto = uint8(d.ip6.HopByHop.NextHeader)
			}
			p.TTL = d.ip6.HopLimit
		case layers.LayerTypeIPv6HopByHop, layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6Destination:
			p.Proto = uint8(d.ip6ext.NextHeader)
		case layers.LayerTypeIPv6Fragment:
			p.Proto = uint8(d.ip6frag.NextHeader)
			if d.ip6frag.FragmentOffset != 0 {
				p.Flags |= event.FlagFragment
			} else if d.ip6frag.MoreFragments {
				d.firstFragment(p, d.ip6frag.Payload)
			}
		case layers.LayerTypeTCP:
			d.fillTCP(p)
			if pl := d.tcp.Payload; len(pl) >= 5 && methodStart[pl[0]] {
				p.Flags |= httpHints(pl)
				d.cookieHint(p, pl)
			}
			if pl, sport := d.tcp.Payload, uint16(d.tcp.SrcPort); shellCandidate(pl, sport) {
				p.VLAN |= shellHint(pl, sport)
			}
			if pl := d.tcp.Payload; hexCandidate(pl) {
				p.VLAN |= hexHint(pl)
			}
		case layers.LayerTypeUDP:
			p.Proto = event.ProtoUDP
			p.SrcPort, p.DstPort = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
		case layers.LayerTypeICMPv4:
			p.Proto = event.ProtoICMP
			p.SrcPort, p.DstPort = uint16(d.icmp4.TypeCode.Type()), uint16(d.icmp4.TypeCode.Code())
			p.VLAN |= icmpHint(false, d.icmp4.TypeCode.Type(), d.icmp4.Payload)
		case layers.LayerTypeICMPv6:
			p.Proto = event.ProtoICMPv6
			p.SrcPort, p.DstPort = uint16(d.icmp6.TypeCode.Type()), uint16(d.icmp6.TypeCode.Code())
			if pl := d.icmp6.Payload; len(pl) > 4 { // identifier and sequence number first
				p.VLAN |= icmpHint(true, d.icmp6.TypeCode.Type(), pl[4:])
			}
		case layers.LayerTypeARP:
			p.Flags |= event.FlagARP
			p.DstPort = d.arp.Operation
			switch d.arp.ProtAddressSize {
			case 4:
				if len(d.arp.SourceProtAddress) == 4 && len(d.arp.DstProtAddress) == 4 {
					p.SrcIP = mapped4(d.arp.SourceProtAddress)
					p.DstIP = mapped4(d.arp.DstProtAddress)
				}
			case 16:
				if len(d.arp.SourceProtAddress) == 16 && len(d.arp.DstProtAddress) == 16 {
					p.SrcIP = [16]byte(d.arp.SourceProtAddress)
					p.DstIP = [16]byte(d.arp.DstProtAddress)
				}
			}
		}
	}
	if err != nil || parser.Truncated {
		p.Flags |= event.FlagTrunc
		return DecodedTruncated
	}
	return Decoded
}

// fastEthIPv4 decodes the common frame, untagged Ethernet + IPv4 without
// options or fragmentation + a complete TCP or UDP header, in a few dozen
// instructions, into exactly the record gopacket's layers give (Decode's
// other path; TestFastPathMatchesGopacket compares the two on every frame of
// the shared captures, FuzzDecode on random frames), and returns the TCP
// payload (nil for UDP) for the decoder's session-cookie check. It returns
// ok false, leaving p to the other path, for anything else: VLAN tags, IPv4 options,
// a zero or inconsistent IPv4 length, fragments, other protocols, short or
// malformed transport headers, UDP lengths that gopacket flags as truncated.
//
// Why: gopacket's DecodingLayerParser (layer lookup, interface calls, TCP
// option parsing, a deferred recover) was ~1,000 of the ~1,300 instructions
// per packet of read + decode on the reference capture (callgrind), and the
// agent's decode was about a fifth of a scan's CPU. After the transport
// header gopacket decodes nothing more here: no layer registered in
// NewDecoder follows TCP or UDP (TestNoLayerAfterTransport checks every port).
func fastEthIPv4(data []byte, tsNs int64, wireLen int, p *event.Packet) (tcpPayload []byte, ok bool) {
	if len(data) < 14+20 || data[12] != 0x08 || data[13] != 0x00 {
		return nil, false
	}
	ip := data[14:]
	if ip[0]&0x0f != 5 {
		return nil, false // IPv4 options (or an invalid header length)
	}
	ipLen := int(ip[2])<<8 | int(ip[3])
	if ipLen < 20 || ipLen > len(ip) {
		return nil, false // TSO zero length, too small, or truncated
	}
	if ip[6]&0x3f != 0 || ip[7] != 0 {
		return nil, false // more fragments, or a fragment offset
	}
	proto := ip[9]
	l4 := ip[20:ipLen]
	var sport, dport uint16
	var flags, hints uint8
	var vlan uint16 // the fast path takes untagged frames: content hints only
	switch proto {
	case event.ProtoTCP:
		if len(l4) < 20 {
			return nil, false
		}
		off := int(l4[12] >> 4)
		if off < 5 || off*4 > len(l4) {
			return nil, false
		}
		flags = l4[13] // FIN..CWR: the wire bits are event.TCPFin..TCPCwr
		pl := l4[off*4:]
		tcpPayload = pl
		if len(pl) >= 5 && methodStart[pl[0]] {
			hints = httpHints(pl)
		}
		if sp := uint16(l4[0])<<8 | uint16(l4[1]); shellCandidate(pl, sp) {
			vlan = shellHint(pl, sp)
		}
		if hexCandidate(pl) {
			vlan |= hexHint(pl)
		}
	case event.ProtoUDP:
		if len(l4) < 8 {
			return nil, false
		}
		if ul := int(l4[4])<<8 | int(l4[5]); ul != 0 && (ul < 8 || ul > len(l4)) {
			return nil, false
		}
	default:
		return nil, false
	}
	sport, dport = uint16(l4[0])<<8|uint16(l4[1]), uint16(l4[2])<<8|uint16(l4[3])
	if wireLen < len(data) {
		wireLen = len(data)
	}
	// Every field is stored into p directly: a composite literal (or an
	// address built by mapped4) is assembled on the stack with small
	// stores and copied with 16-byte loads, which cannot be forwarded from
	// those stores and wait for them to retire (13% of this function in
	// perf).
	p.TimestampNs = tsNs
	p.DstMAC = [6]byte(data[0:6])
	p.SrcMAC = [6]byte(data[6:12])
	putMapped4(&p.SrcIP, ip[12:16])
	putMapped4(&p.DstIP, ip[16:20])
	p.SrcPort, p.DstPort = sport, dport
	p.Length = uint16(min(wireLen, 0xffff))
	p.Proto, p.TCPFlags, p.TTL, p.Flags = proto, flags, ip[8], event.FlagIPv4|hints
	p.VLAN = vlan
	return tcpPayload, true
}

// cookieHint marks p (a TCP packet whose addresses and ports are set, with
// payload pl) when it is an HTTP request presenting another client's
// session cookie (cookiehint.go).
func (d *Decoder) cookieHint(p *event.Packet, pl []byte) {
	if len(pl) < 5 || !methodStart[pl[0]] || d.cookies == nil {
		return
	}
	if _, ok := httpMethod(pl); ok {
		p.VLAN |= d.cookies.check(p, pl)
	}
}

// putMapped4 stores the IPv4-mapped form of the 4-byte address b in a
// (see mapped4) with two 8-byte stores.
func putMapped4(a *[16]byte, b []byte) {
	binary.LittleEndian.PutUint64(a[0:8], 0)
	binary.LittleEndian.PutUint64(a[8:16], 0xffff<<16|uint64(binary.LittleEndian.Uint32(b[0:4]))<<32)
}

func (d *Decoder) fillIPv4(p *event.Packet) {
	ip := &d.ip4
	p.Flags |= event.FlagIPv4
	if len(ip.SrcIP) == 4 && len(ip.DstIP) == 4 {
		p.SrcIP = mapped4(ip.SrcIP)
		p.DstIP = mapped4(ip.DstIP)
	}
	p.Proto = uint8(ip.Protocol)
	p.TTL = ip.TTL
	if ip.FragOffset != 0 {
		p.Flags |= event.FlagFragment
	} else if ip.Flags&layers.IPv4MoreFragments != 0 {
		d.firstFragment(p, ip.Payload)
	}
}

// firstFragment decodes the transport header at the start of a first
// fragment (gopacket stops at fragments).
func (d *Decoder) firstFragment(p *event.Packet, payload []byte) {
	switch p.Proto {
	case event.ProtoTCP:
		if d.tcp.DecodeFromBytes(payload, gopacket.NilDecodeFeedback) == nil {
			d.fillTCP(p)
		}
	case event.ProtoUDP:
		if d.udp.DecodeFromBytes(payload, gopacket.NilDecodeFeedback) == nil {
			p.SrcPort, p.DstPort = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
		}
	}
}

func (d *Decoder) fillTCP(p *event.Packet) {
	t := &d.tcp
	p.Proto = event.ProtoTCP
	p.SrcPort, p.DstPort = uint16(t.SrcPort), uint16(t.DstPort)
	var f uint8
	for _, b := range [8]struct {
		on  bool
		bit uint8
	}{{t.FIN, event.TCPFin}, {t.SYN, event.TCPSyn}, {t.RST, event.TCPRst}, {t.PSH, event.TCPPsh},
		{t.ACK, event.TCPAck}, {t.URG, event.TCPUrg}, {t.ECE, event.TCPEce}, {t.CWR, event.TCPCwr}} {
		if b.on {
			f |= b.bit
		}
	}
	p.TCPFlags = f
}

func mapped4(b []byte) [16]byte {
	return [16]byte{10: 0xff, 11: 0xff, 12: b[0], 13: b[1], 14: b[2], 15: b[3]}
}

func as16(b []byte) [16]byte {
	switch len(b) {
	case 16:
		return [16]byte(b)
	case 4:
		return mapped4(b)
	}
	return [16]byte{}
}

// String names a Result.
func (r Result) String() string {
	switch r {
	case Decoded:
		return "decoded"
	case DecodedTruncated:
		return "truncated"
	case DecodeFailed:
		return "failed"
	case UnknownLinkType:
		return "unknown link type"
	}
	return fmt.Sprintf("Result(%d)", uint8(r))
}
