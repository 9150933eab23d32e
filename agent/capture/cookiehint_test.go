package capture

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

const sessionID = "ncobrqrb7fj2a2sinddtk567q4"

// cookieFrame builds an Ethernet/IPv4/TCP frame (802.1Q-tagged when tagged)
// from src to dst:dport carrying pl.
func cookieFrame(t *testing.T, tagged bool, src, dst string, dport layers.TCPPort, pl string) []byte {
	t.Helper()
	tcp := &layers.TCP{SrcPort: 49200, DstPort: dport, PSH: true, ACK: true, Window: 512}
	ip := ip4(layers.IPProtocolTCP)
	ip.SrcIP, ip.DstIP = net.ParseIP(src).To4(), net.ParseIP(dst).To4()
	_ = tcp.SetNetworkLayerForChecksum(ip)
	if tagged {
		return serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 42, Type: layers.EthernetTypeIPv4},
			ip, tcp, gopacket.Payload(pl))
	}
	return serialize(t, eth(layers.EthernetTypeIPv4), ip, tcp, gopacket.Payload(pl))
}

func request(cookie string) string {
	return "GET /dvwa/index.php HTTP/1.1\r\nHost: 10.99.0.80\r\nUser-Agent: test\r\n" + cookie + "\r\nAccept: */*\r\n\r\n"
}

// TestCookieHint: a session cookie presented to a server by a second client
// marks that client's requests (on both decoder paths), and nothing else
// does: the owner's own requests, another server, a short preference
// cookie, a cookie in a response or outside the head, an expired binding.
func TestCookieHint(t *testing.T) {
	const sec = int64(1e9)
	own := request("Cookie: security=low; PHPSESSID=" + sessionID)
	type req struct {
		src, dst string
		port     layers.TCPPort
		atSec    int64
		pl       string
		want     bool
	}
	tests := []struct {
		name string
		reqs []req
	}{
		{"second client", []req{
			{"10.99.0.1", "10.99.0.80", 80, 0, own, false},
			{"10.99.0.1", "10.99.0.80", 80, 1, own, false},
			{"10.99.0.2", "10.99.0.80", 80, 2, own, true},
			{"10.99.0.2", "10.99.0.80", 80, 3, request("cookie:PHPSESSID=" + sessionID), true}, // header name in any case, no space
			{"10.99.0.1", "10.99.0.80", 80, 4, own, false},                                     // the owner stays the owner
		}},
		{"another server or port", []req{
			{"10.99.0.1", "10.99.0.80", 80, 0, own, false},
			{"10.99.0.2", "10.99.0.81", 80, 1, own, false},
			{"10.99.0.2", "10.99.0.80", 8080, 1, own, false},
		}},
		{"preference cookies", []req{
			{"10.99.0.1", "10.99.0.80", 80, 0, request("Cookie: security=low; lang=en; theme=dark-blue"), false},
			{"10.99.0.2", "10.99.0.80", 80, 1, request("Cookie: security=low; lang=en; theme=dark-blue"), false},
		}},
		{"not a token", []req{
			{"10.99.0.1", "10.99.0.80", 80, 0, request(`Cookie: note="a quoted phrase, not an id"`), false},
			{"10.99.0.2", "10.99.0.80", 80, 1, request(`Cookie: note="a quoted phrase, not an id"`), false},
		}},
		{"response and body", []req{
			{"10.99.0.1", "10.99.0.80", 80, 0, own, false},
			{"10.99.0.2", "10.99.0.80", 80, 1, "HTTP/1.1 200 OK\r\nCookie: PHPSESSID=" + sessionID + "\r\n\r\n", false},
			{"10.99.0.2", "10.99.0.80", 80, 2, "POST /x HTTP/1.1\r\nHost: a\r\n\r\nCookie: PHPSESSID=" + sessionID + "\r\n", false},
			{"10.99.0.2", "10.99.0.80", 80, 3, "GET /x HTTP/1.1\r\nX-Cookie: PHPSESSID=" + sessionID + "\r\n\r\n", false},
		}},
		{"expired binding", []req{
			{"10.99.0.1", "10.99.0.80", 80, 0, own, false},
			{"10.99.0.2", "10.99.0.80", 80, cookieTTL/sec + 1, own, false}, // now the owner
			{"10.99.0.1", "10.99.0.80", 80, cookieTTL/sec + 2, own, true},
		}},
	}
	for _, tagged := range []bool{false, true} {
		for _, tt := range tests {
			d := NewDecoder()
			for i, r := range tt.reqs {
				frame := cookieFrame(t, tagged, r.src, r.dst, r.port, r.pl)
				var p event.Packet
				if res := d.Decode(layers.LinkTypeEthernet, frame, r.atSec*sec, len(frame), &p); res != Decoded {
					t.Fatalf("%s: decode: %v", tt.name, res)
				}
				if got := p.VLAN&event.HintCookieReuse != 0; got != r.want {
					t.Errorf("tagged %v, %s, request %d from %s: marked %v, want %v", tagged, tt.name, i, r.src, got, r.want)
				}
				if wantID := map[bool]uint16{false: 0, true: 42}[tagged]; p.VLANID() != wantID {
					t.Errorf("tagged %v: VLAN id %d, want %d", tagged, p.VLANID(), wantID)
				}
			}
		}
	}
}

// TestCookieTableShared: decoders that share a table (a live capture's
// sockets) compare clients across them; decoders with tables of their own
// (two capture files) do not.
func TestCookieTableShared(t *testing.T) {
	own := request("Cookie: PHPSESSID=" + sessionID)
	a, b := cookieFrame(t, false, "10.99.0.1", "10.99.0.80", 80, own), cookieFrame(t, false, "10.99.0.2", "10.99.0.80", 80, own)
	var p event.Packet
	shared := NewCookieTable()
	d1, d2 := NewDecoderWithCookies(shared), NewDecoderWithCookies(shared)
	d1.Decode(layers.LinkTypeEthernet, a, 1, len(a), &p)
	d2.Decode(layers.LinkTypeEthernet, b, 2, len(b), &p)
	if p.VLAN&event.HintCookieReuse == 0 {
		t.Error("shared table: the second client's request on the other decoder is not marked")
	}
	NewDecoder().Decode(layers.LinkTypeEthernet, a, 1, len(a), &p)
	NewDecoder().Decode(layers.LinkTypeEthernet, b, 2, len(b), &p)
	if p.VLAN&event.HintCookieReuse != 0 {
		t.Error("separate tables: marked")
	}
}

// TestCookieTableBounded: the table holds at most its capacity; when full,
// expired entries make room, and a cookie that finds none is counted, not
// followed.
func TestCookieTableBounded(t *testing.T) {
	tab := NewCookieTable()
	tab.max = 8
	var p event.Packet
	p.SetSrc(netip.MustParseAddr("10.99.0.1"))
	p.SetDst(netip.MustParseAddr("10.99.0.80"))
	p.DstPort = 80
	for i := range 20 {
		p.TimestampNs = int64(i)
		tab.check(&p, []byte(request("Cookie: sid="+strings.Repeat("ab", 8)+string(rune('a'+i)))))
	}
	if n, u := tab.Len(), tab.Untracked(); n != 8 || u != 12 {
		t.Fatalf("full table: %d entries, %d untracked; want 8 and 12", n, u)
	}
	p.TimestampNs = cookieTTL + 100 // every entry has expired
	tab.check(&p, []byte(request("Cookie: sid=zzzzzzzzzzzzzzzzzzzz")))
	if n, u := tab.Len(), tab.Untracked(); n != 1 || u != 12 {
		t.Fatalf("after expiry: %d entries, %d untracked; want 1 and 12", n, u)
	}
}

// TestCookieHintSharedData: on the shared captures the hint marks the
// hijacker's requests in sessionhijacking, and no packet of a benign
// capture.
func TestCookieHintSharedData(t *testing.T) {
	dir, hinted := sharedHinted(t, event.HintCookieReuse, "a reused session cookie")
	rel := filepath.Join("attacks", "chrissanders-packets", "sessionhijacking.pcapng")
	if _, err := os.Stat(filepath.Join(dir, rel)); err == nil && hinted[rel] < 2 {
		t.Errorf("%s: %d requests marked, want the hijacker's", rel, hinted[rel])
	}
}

func BenchmarkCookieHint(b *testing.B) {
	var p event.Packet
	p.SetSrc(netip.MustParseAddr("10.99.0.1"))
	p.SetDst(netip.MustParseAddr("10.99.0.80"))
	p.DstPort = 80
	pl := []byte("GET /static/app.js HTTP/1.1\r\nHost: www.example.org\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n" +
		"Accept: */*\r\nAccept-Language: en\r\nCookie: _ga=GA1.2.1234567890.1712345678; sid=" + sessionID + "; lang=en\r\n\r\n")
	tab := NewCookieTable()
	b.ReportAllocs()
	for b.Loop() {
		p.TimestampNs++
		tab.check(&p, pl)
	}
}

// FuzzCookieHint: any request (two clients present it in turn) gives the
// hint bit or nothing, the owner is never marked, and the table stays
// bounded.
func FuzzCookieHint(f *testing.F) {
	for _, s := range []string{request("Cookie: PHPSESSID=" + sessionID), request("Cookie: a=b; ;=;c="), "GET / HTTP/1.1\r\nCookie:",
		"GET / HTTP/1.1\r\ncookie: x=" + strings.Repeat("a", cookieMaxValue+1) + "\r\n\r\n", "GET / HTTP/1.1\n\n\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, pl []byte) {
		tab := NewCookieTable()
		tab.max = 4
		var p event.Packet
		p.SetSrc(netip.MustParseAddr("10.99.0.1"))
		p.SetDst(netip.MustParseAddr("10.99.0.80"))
		if got := tab.check(&p, pl); got != 0 {
			t.Fatalf("first client marked: %#x", got)
		}
		if got := tab.check(&p, pl); got != 0 {
			t.Fatalf("owner marked: %#x", got)
		}
		p.SetSrc(netip.MustParseAddr("10.99.0.2"))
		if got := tab.check(&p, pl); got != 0 && got != event.HintCookieReuse {
			t.Fatalf("bits outside the hint: %#x", got)
		}
		if tab.Len() > 4 {
			t.Fatalf("table holds %d entries, bound 4", tab.Len())
		}
	})
}

// TestCookieHintFile: a capture file's source marks the second client's
// request and counts the cookies its full table did not follow in Stats.
func TestCookieHintFile(t *testing.T) {
	own := request("Cookie: PHPSESSID=" + sessionID)
	other := request("Cookie: sid=" + strings.Repeat("z", 20))
	fr := [][]byte{
		cookieFrame(t, false, "10.99.0.1", "10.99.0.80", 80, own),
		cookieFrame(t, true, "10.99.0.2", "10.99.0.80", 80, own),
		cookieFrame(t, false, "10.99.0.3", "10.99.0.80", 80, other), // no room: untracked
	}
	src, err := OpenFile(writeFile(t, "cookies.pcap", writePcap(t, false, layers.LinkTypeEthernet, fr)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	src.(*fileSource).dec.cookies.max = 1
	pk, _ := readAll(t, src)
	if len(pk) != 3 {
		t.Fatalf("%d packets, want 3", len(pk))
	}
	for i, want := range []bool{false, true, false} {
		if got := pk[i].VLAN&event.HintCookieReuse != 0; got != want {
			t.Errorf("packet %d: marked %v, want %v", i, got, want)
		}
	}
	if u := src.Stats().CookiesUntracked; u != 1 {
		t.Errorf("CookiesUntracked %d, want 1", u)
	}
}
