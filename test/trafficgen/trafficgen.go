// Package trafficgen writes synthetic but well-formed packet captures for
// tests, benchmarks and the demo: benign client/server sessions (TCP request
// and response with handshake and teardown, DNS over UDP, ICMP echo) among a
// few hosts, optionally with attacks inside (a TCP SYN port scan, a UDP
// flood). Output is deterministic for a seed, so captures can serve as golden
// inputs. No traffic is ever sent: packets go only into the pcap file.
package trafficgen

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Config describes a capture.
type Config struct {
	Seed     uint64
	Start    time.Time     // first packet time (default 2026-01-01 UTC)
	Duration time.Duration // span of the benign traffic (default 60 s)
	Clients  int           // benign client hosts (default 8)
	Sessions int           // benign sessions in all (default 400)
	// Scan adds a SYN scan of ScanPorts ports from Scanner to Target,
	// starting at ScanAt after Start.
	Scan      bool
	ScanAt    time.Duration
	ScanPorts int
	Scanner   net.IP
	Target    net.IP
}

// Defaults fills the zero fields.
func (c *Config) Defaults() {
	if c.Start.IsZero() {
		c.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if c.Duration == 0 {
		c.Duration = 60 * time.Second
	}
	if c.Clients == 0 {
		c.Clients = 8
	}
	if c.Sessions == 0 {
		c.Sessions = 400
	}
	if c.ScanPorts == 0 {
		c.ScanPorts = 1000
	}
	if c.ScanAt == 0 {
		c.ScanAt = c.Duration / 2
	}
	if c.Scanner == nil {
		c.Scanner = net.IPv4(10, 99, 66, 6)
	}
	if c.Target == nil {
		c.Target = net.IPv4(10, 99, 1, 10)
	}
}

// Info tells what was written.
type Info struct {
	Packets     int
	ScanPackets int
	Scanner     net.IP
	ScanStart   time.Time
	ScanEnd     time.Time
}

type pkt struct {
	ts   time.Time
	data []byte
	scan bool
}

type host struct {
	mac net.HardwareAddr
	ip  net.IP
}

func mkHost(i int, ip net.IP) host {
	return host{mac: net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, byte(i >> 8), byte(i)}, ip: ip.To4()}
}

// Write writes the capture described by cfg to w as a pcap file (Ethernet).
func Write(w io.Writer, cfg Config) (Info, error) {
	cfg.Defaults()
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	servers := []host{mkHost(1, net.IPv4(10, 99, 1, 10)), mkHost(2, net.IPv4(10, 99, 1, 11)), mkHost(3, net.IPv4(10, 99, 1, 53))}
	clients := make([]host, cfg.Clients)
	for i := range clients {
		clients[i] = mkHost(100+i, net.IPv4(10, 99, 2, byte(20+i)))
	}
	var pkts []pkt
	add := func(ts time.Time, scan bool, ls ...gopacket.SerializableLayer) error {
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
			return fmt.Errorf("serialize packet: %w", err)
		}
		pkts = append(pkts, pkt{ts: ts, data: append([]byte(nil), buf.Bytes()...), scan: scan})
		return nil
	}
	for s := 0; s < cfg.Sessions; s++ {
		c := clients[rng.IntN(len(clients))]
		t0 := cfg.Start.Add(time.Duration(rng.Int64N(int64(cfg.Duration))))
		switch k := rng.IntN(10); {
		case k < 6: // TCP request/response (HTTP-like)
			srv := servers[rng.IntN(2)]
			port := []uint16{80, 443}[rng.IntN(2)]
			if err := tcpSession(add, rng, c, srv, uint16(32768+rng.IntN(28000)), port, t0); err != nil {
				return Info{}, err
			}
		case k < 9: // DNS query and answer
			if err := dnsExchange(add, rng, c, servers[2], t0); err != nil {
				return Info{}, err
			}
		default: // ping
			if err := ping(add, c, servers[rng.IntN(len(servers))], t0, uint16(s)); err != nil {
				return Info{}, err
			}
		}
	}
	info := Info{Scanner: cfg.Scanner}
	if cfg.Scan {
		scanner := mkHost(666, cfg.Scanner)
		target := mkHost(667, cfg.Target)
		t := cfg.Start.Add(cfg.ScanAt)
		info.ScanStart = t
		ports := rng.Perm(cfg.ScanPorts)
		for _, p := range ports {
			port := uint16(p + 1)
			eth := &layers.Ethernet{SrcMAC: scanner.mac, DstMAC: target.mac, EthernetType: layers.EthernetTypeIPv4}
			ip := &layers.IPv4{Version: 4, TTL: 44, Protocol: layers.IPProtocolTCP, SrcIP: scanner.ip, DstIP: target.ip, Id: uint16(rng.Uint32())}
			tcp := &layers.TCP{SrcPort: 40000, DstPort: layers.TCPPort(port), SYN: true, Seq: rng.Uint32(), Window: 1024}
			_ = tcp.SetNetworkLayerForChecksum(ip)
			if err := add(t, true, eth, ip, tcp); err != nil {
				return Info{}, err
			}
			// Closed ports answer RST+ACK.
			eth2 := &layers.Ethernet{SrcMAC: target.mac, DstMAC: scanner.mac, EthernetType: layers.EthernetTypeIPv4}
			ip2 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: target.ip, DstIP: scanner.ip}
			tcp2 := &layers.TCP{SrcPort: layers.TCPPort(port), DstPort: 40000, RST: true, ACK: true, Ack: tcp.Seq + 1}
			_ = tcp2.SetNetworkLayerForChecksum(ip2)
			if err := add(t.Add(150*time.Microsecond), true, eth2, ip2, tcp2); err != nil {
				return Info{}, err
			}
			t = t.Add(time.Duration(200+rng.IntN(300)) * time.Microsecond)
		}
		info.ScanEnd = t
	}
	sort.SliceStable(pkts, func(i, j int) bool { return pkts[i].ts.Before(pkts[j].ts) })
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return Info{}, fmt.Errorf("write pcap header: %w", err)
	}
	for _, p := range pkts {
		ci := gopacket.CaptureInfo{Timestamp: p.ts, CaptureLength: len(p.data), Length: len(p.data)}
		if err := pw.WritePacket(ci, p.data); err != nil {
			return Info{}, fmt.Errorf("write packet: %w", err)
		}
		info.Packets++
		if p.scan {
			info.ScanPackets++
		}
	}
	return info, nil
}

type adder func(ts time.Time, scan bool, ls ...gopacket.SerializableLayer) error

func tcpSession(add adder, rng *rand.Rand, c, s host, sport, dport uint16, t time.Time) error {
	rtt := time.Duration(200+rng.IntN(2000)) * time.Microsecond
	cseq, sseq := rng.Uint32(), rng.Uint32()
	send := func(from, to host, sp, dp uint16, ts time.Time, f func(*layers.TCP), payload int) error {
		eth := &layers.Ethernet{SrcMAC: from.mac, DstMAC: to.mac, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: from.ip, DstIP: to.ip, Flags: layers.IPv4DontFragment}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(sp), DstPort: layers.TCPPort(dp), Window: 64240}
		f(tcp)
		_ = tcp.SetNetworkLayerForChecksum(ip)
		return add(ts, false, eth, ip, tcp, gopacket.Payload(make([]byte, payload)))
	}
	steps := []struct {
		fromClient bool
		f          func(*layers.TCP)
		payload    int
	}{
		{true, func(x *layers.TCP) { x.SYN = true; x.Seq = cseq }, 0},
		{false, func(x *layers.TCP) { x.SYN, x.ACK = true, true; x.Seq, x.Ack = sseq, cseq+1 }, 0},
		{true, func(x *layers.TCP) { x.ACK = true; x.Seq, x.Ack = cseq+1, sseq+1 }, 0},
		{true, func(x *layers.TCP) { x.ACK, x.PSH = true, true; x.Seq, x.Ack = cseq+1, sseq+1 }, 200 + rng.IntN(300)},
	}
	ts := t
	for _, st := range steps {
		var err error
		if st.fromClient {
			err = send(c, s, sport, dport, ts, st.f, st.payload)
		} else {
			err = send(s, c, dport, sport, ts, st.f, st.payload)
		}
		if err != nil {
			return err
		}
		ts = ts.Add(rtt / 2)
	}
	for i, n := 0, 1+rng.IntN(8); i < n; i++ {
		if err := send(s, c, dport, sport, ts, func(x *layers.TCP) { x.ACK = true; x.Seq, x.Ack = sseq+1+uint32(i*1400), cseq+400 }, 1400); err != nil {
			return err
		}
		ts = ts.Add(50 * time.Microsecond)
		if i%2 == 1 {
			if err := send(c, s, sport, dport, ts, func(x *layers.TCP) { x.ACK = true; x.Seq, x.Ack = cseq+400, sseq+1+uint32((i+1)*1400) }, 0); err != nil {
				return err
			}
		}
	}
	ts = ts.Add(rtt)
	if err := send(c, s, sport, dport, ts, func(x *layers.TCP) { x.FIN, x.ACK = true, true; x.Seq = cseq + 400 }, 0); err != nil {
		return err
	}
	ts = ts.Add(rtt / 2)
	if err := send(s, c, dport, sport, ts, func(x *layers.TCP) { x.FIN, x.ACK = true, true; x.Ack = cseq + 401 }, 0); err != nil {
		return err
	}
	return send(c, s, sport, dport, ts.Add(rtt/2), func(x *layers.TCP) { x.ACK = true; x.Seq = cseq + 401 }, 0)
}

var names = []string{"www.example.org", "mail.example.org", "intranet.example.org", "updates.example.net", "time.example.com", "files.example.org"}

func dnsExchange(add adder, rng *rand.Rand, c, s host, t time.Time) error {
	name := names[rng.IntN(len(names))]
	id := uint16(rng.Uint32())
	sport := layers.UDPPort(32768 + rng.IntN(28000))
	q := &layers.DNS{ID: id, RD: true, Questions: []layers.DNSQuestion{{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN}}}
	eth := &layers.Ethernet{SrcMAC: c.mac, DstMAC: s.mac, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: c.ip, DstIP: s.ip}
	udp := &layers.UDP{SrcPort: sport, DstPort: 53}
	_ = udp.SetNetworkLayerForChecksum(ip)
	if err := add(t, false, eth, ip, udp, q); err != nil {
		return err
	}
	a := &layers.DNS{ID: id, QR: true, RD: true, RA: true, Questions: q.Questions,
		Answers: []layers.DNSResourceRecord{{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN, TTL: 300, IP: net.IPv4(10, 99, 1, byte(10+rng.IntN(2)))}}}
	eth2 := &layers.Ethernet{SrcMAC: s.mac, DstMAC: c.mac, EthernetType: layers.EthernetTypeIPv4}
	ip2 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: s.ip, DstIP: c.ip}
	udp2 := &layers.UDP{SrcPort: 53, DstPort: sport}
	_ = udp2.SetNetworkLayerForChecksum(ip2)
	return add(t.Add(time.Duration(300+rng.IntN(700))*time.Microsecond), false, eth2, ip2, udp2, a)
}

func ping(add adder, c, s host, t time.Time, seq uint16) error {
	for i, pair := range [][2]host{{c, s}, {s, c}} {
		typ := layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0)
		if i == 1 {
			typ = layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoReply, 0)
		}
		eth := &layers.Ethernet{SrcMAC: pair[0].mac, DstMAC: pair[1].mac, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: pair[0].ip, DstIP: pair[1].ip}
		icmp := &layers.ICMPv4{TypeCode: typ, Id: 7, Seq: seq}
		if err := add(t.Add(time.Duration(i)*400*time.Microsecond), false, eth, ip, icmp, gopacket.Payload(make([]byte, 56))); err != nil {
			return err
		}
	}
	return nil
}
