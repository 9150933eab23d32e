package lab

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
)

// dnsQuery encodes a recursive query for name (type A).
func dnsQuery(id uint16, name string) ([]byte, error) {
	b := make([]byte, 12, 12+len(name)+6)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(b[4:], 1)
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if len(l) == 0 || len(l) > 63 {
			return nil, errors.New("dns: bad label")
		}
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	b = append(b, 0, 0, 1, 0, 1) // root, type A, class IN
	if len(b) > 512 {
		return nil, errors.New("dns: name too long")
	}
	return b, nil
}

// dnsAnswer builds the responder's reply to query q: an A record for names
// under .lab (the lab's zone), NXDOMAIN otherwise. ok is false for anything
// that is not a well-formed single-question query.
func dnsAnswer(q []byte, addr netip.Addr) (reply []byte, ok bool) {
	if len(q) < 12 || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil, false
	}
	i := 12
	var labels []string
	for i < len(q) && q[i] != 0 {
		n := int(q[i])
		if n > 63 || i+1+n > len(q) {
			return nil, false
		}
		labels = append(labels, string(q[i+1:i+1+n]))
		i += 1 + n
	}
	if i+5 > len(q) {
		return nil, false
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	end := i + 5
	r := append([]byte(nil), q[:end]...)
	r[2] = 0x81 | q[2]&0x01 // QR, opcode 0, RD copied
	r[3] = 0x80             // RA
	binary.BigEndian.PutUint16(r[6:], 0)
	binary.BigEndian.PutUint16(r[8:], 0)
	binary.BigEndian.PutUint16(r[10:], 0)
	name := strings.ToLower(strings.Join(labels, "."))
	if !strings.HasSuffix(name, ".lab") && name != "lab" {
		r[3] |= 3 // NXDOMAIN
		return r, true
	}
	if qtype == 1 && addr.Is4() {
		binary.BigEndian.PutUint16(r[6:], 1)
		a := addr.As4()
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		r = append(r, a[:]...)
	}
	return r, true
}

// serveDNS answers queries on c until it is closed.
func serveDNS(c net.PacketConn, addr netip.Addr) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		if r, ok := dnsAnswer(buf[:n], addr); ok {
			_, _ = c.WriteTo(r, from)
		}
	}
}
