package capture

import (
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

const (
	hInj = event.FlagHTTPInjection
	hTrv = event.FlagHTTPTraversal
)

func TestHTTPHints(t *testing.T) {
	cases := []struct {
		name, payload string
		want          uint8
	}{
		// Attacks (the first three are the requests of the shared DVWA captures).
		{"sql injection", "GET /dvwa/vulnerabilities/sqli/?id=%25%27+or+%270%27%3D%270&Submit=Submit HTTP/1.1\r\nHost: x\r\n\r\n", hInj},
		{"union select", "GET /dvwa/vulnerabilities/sqli/?id=%25%27+and+1%3D0+union+select+null%2C+concat%28first_name%2C0x0a%29+from+users+%23&Submit=Submit HTTP/1.1\r\n", hInj},
		{"traversal", "GET /dvwa/vulnerabilities/fi/?page=../../../../../../etc/passwd HTTP/1.1\r\n", hTrv},
		{"traversal, encoded", "GET /files/%2e%2e%2f%2e%2e%2fetc/passwd HTTP/1.1\r\n", hTrv},
		{"traversal, backslash", "GET /scripts/..%5c..%5cwinnt/system32/cmd.exe?/c+dir HTTP/1.0\r\n", hTrv},
		{"xss", "GET /search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E HTTP/1.1\r\n", hInj},
		{"both", "POST /a/../b?id=1'+or+'1'%3D'1 HTTP/1.1\r\n", hInj | hTrv},
		{"injection in a later parameter", "GET /p?a=1&b=2&c=1%27%20OR%201%3D1%20--%20 HTTP/1.1\r\n", hInj},
		{"other methods", "DELETE /x?id=1'+or+'1'='1 HTTP/1.1\r\n", hInj},
		{"last segment", "GET /a/b/.. HTTP/1.1\r\n", hTrv},
		{"value", "GET /x?f=..%5Cwin.ini HTTP/1.1\r\n", hTrv},
		{"no version (HTTP/0.9 style)", "GET /../../etc/passwd\r\n", hTrv},
		{"target ends the payload", "GET /?q=1'+or+'1'='1", hInj},
		// Benign requests with quotes, keywords and odd characters.
		{"plain", "GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n", 0},
		{"search with quotes", "GET /search?q=%22exact+phrase%22+-minus&hl=en HTTP/1.1\r\n", 0},
		{"apostrophe", "GET /books?author=O%27Reilly&title=it%27s+raining HTTP/1.1\r\n", 0},
		{"sql words", "GET /search?q=select+a+car+or+a+bike HTTP/1.1\r\n", 0},
		{"html", "GET /render?x=%3Cb%3Ebold%3C%2Fb%3E HTTP/1.1\r\n", 0},
		{"analytics", "GET /__utm.gif?utmwv=4.6.5&utmn=1916954472&utmcc=__utma%3D43838368.1.2.3%3B%2B__utmz%3D43838368.1.1.1.utmcsr%3D(direct)%7Cutmccn%3D(direct) HTTP/1.1\r\n", 0},
		{"dots", "GET /a/b.../c..d/..e HTTP/1.1\r\n", 0},
		{"traversal after the target is not read", "GET /ok HTTP/1.1\r\nReferer: http://x/../../etc\r\n", 0},
		{"not a request", "HTTP/1.1 200 OK\r\n\r\n../../etc/passwd", 0},
		{"lower-case method", "get /../../etc/passwd HTTP/1.1\r\n", 0},
		{"method without a space", "GETX /../ HTTP/1.1\r\n", 0},
		{"empty target", "GET  HTTP/1.1\r\n", 0},
		{"short", "GET ", 0},
		{"binary", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0},
		{"invalid escapes", "GET /a?x=%zz%2%%25 HTTP/1.1\r\n", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := httpHints([]byte(c.payload)); got != c.want {
				t.Errorf("httpHints(%q) = %02b, want %02b", c.payload, got>>6, c.want>>6)
			}
		})
	}
}

// TestDecodeHTTPHints checks that both decoder paths set the hints: the
// Ethernet/IPv4 fast path and gopacket's (IPv6, VLAN), and that only the
// TCP payload is read.
func TestDecodeHTTPHints(t *testing.T) {
	req := gopacket.Payload("GET /dvwa/vulnerabilities/fi/?page=../../../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n")
	tcp := func() *layers.TCP {
		return &layers.TCP{SrcPort: 40000, DstPort: 8080, ACK: true, PSH: true, Window: 1024, Seq: 1}
	}
	v4 := func() []byte {
		ip, l4 := ip4(layers.IPProtocolTCP), tcp()
		_ = l4.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(layers.EthernetTypeIPv4), ip, l4, req)
	}
	v6 := func() []byte {
		ip, l4 := ip6(layers.IPProtocolTCP), tcp()
		_ = l4.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(layers.EthernetTypeIPv6), ip, l4, req)
	}
	vlan := func() []byte {
		ip, l4 := ip4(layers.IPProtocolTCP), tcp()
		_ = l4.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4}, ip, l4, req)
	}
	udp := func() []byte {
		ip := ip4(layers.IPProtocolUDP)
		u := &layers.UDP{SrcPort: 40000, DstPort: 80}
		_ = u.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(layers.EthernetTypeIPv4), ip, u, req)
	}
	for _, c := range []struct {
		name  string
		frame []byte
		fast  bool
		want  uint8
	}{
		{"ipv4 (fast path)", v4(), true, hTrv},
		{"ipv6", v6(), false, hTrv},
		{"vlan", vlan(), false, hTrv},
		{"udp payload is not read", udp(), true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var p event.Packet
			if _, ok := fastEthIPv4(c.frame, 0, len(c.frame), &p); ok != c.fast {
				t.Fatalf("fast path taken: %v, want %v", !c.fast, c.fast)
			}
			d := NewDecoder()
			if r := d.Decode(layers.LinkTypeEthernet, c.frame, 1, len(c.frame), &p); r != Decoded {
				t.Fatalf("decode: %v", r)
			}
			if got := p.Flags & (hInj | hTrv); got != c.want {
				t.Errorf("hint flags %08b, want %08b (record %+v)", got, c.want, p)
			}
			if c.want != 0 && p.Flags&(event.FlagIPv4|event.FlagIPv6) == 0 {
				t.Errorf("address flags lost: %08b", p.Flags)
			}
		})
	}
}

// TestHTTPHintsBounded checks that a huge request line and a query of many
// parameters are read only up to the limits, and that the result does not
// depend on bytes beyond them.
func TestHTTPHintsBounded(t *testing.T) {
	long := "GET /" + strings.Repeat("a", maxRequestLine) + "/../x HTTP/1.1\r\n"
	if got := httpHints([]byte(long)); got != 0 {
		t.Errorf("traversal beyond %d bytes read: %08b", maxRequestLine, got)
	}
	many := "GET /?" + strings.Repeat("a=1&", maxHintParams) + "b=1'+or+'1'='1 HTTP/1.1\r\n"
	if got := httpHints([]byte(many)); got != 0 {
		t.Errorf("parameter beyond %d read: %08b", maxHintParams, got)
	}
	within := "GET /?" + strings.Repeat("a=1&", maxHintParams-1) + "b=1'+or+'1'='1 HTTP/1.1\r\n"
	if got := httpHints([]byte(within)); got != hInj {
		t.Errorf("last parameter within the limit: %08b, want %08b", got, hInj)
	}
}

// TestHTTPHintsNoAllocs: a benign request whose query values are plain
// tokens costs no allocation in the steady state (the decode buffer is
// pooled; libinjection, which allocates, is not asked about plain tokens).
func TestHTTPHintsNoAllocs(t *testing.T) {
	req := []byte("GET /search?q=vigil-edge&page=2&lang=en-US&next=http%3A%2F%2Fexample.org%2Fa HTTP/1.1\r\nHost: example.org\r\n\r\n")
	allocs := testing.AllocsPerRun(1000, func() {
		if httpHints(req) != 0 {
			t.Fatal("benign request flagged")
		}
	})
	if allocs > 0 {
		t.Errorf("httpHints allocates %v times per request", allocs)
	}
}

func BenchmarkHTTPHints(b *testing.B) {
	for _, c := range []struct{ name, payload string }{
		{"not-http", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls client hello"},
		{"request-no-query", "GET /static/app.js HTTP/1.1\r\nHost: example.org\r\n\r\n"},
		{"request-query", "GET /search?q=vigil+edge&page=2&lang=en HTTP/1.1\r\nHost: example.org\r\n\r\n"},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := []byte(c.payload)
			b.ReportAllocs()
			for b.Loop() {
				httpHints(p)
			}
		})
	}
}

// FuzzHTTPHints: any payload gives only the two hint bits, and a payload
// that does not begin with a method gives none.
func FuzzHTTPHints(f *testing.F) {
	for _, s := range []string{
		"GET /?id=1'+or+'1'='1 HTTP/1.1\r\n", "GET /../../etc/passwd HTTP/1.1\r\n", "POST /a?b=%3Cscript%3E HTTP/1.1\r\n",
		"GET /a?=&&=%%%2 HTTP/1.1", "OPTIONS * HTTP/1.1\r\n", "PATCH /x?y=\x00\xff HTTP/1.1",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got := httpHints(payload)
		if got&^(hInj|hTrv) != 0 {
			t.Fatalf("bits outside the hints: %08b", got)
		}
		if _, ok := httpMethod(payload); !ok && got != 0 {
			t.Fatalf("hints %08b for a payload that is not a request", got)
		}
	})
}

// TestMethodStart: the decoder's one-byte filter lets every method through
// that httpMethod accepts.
func TestMethodStart(t *testing.T) {
	for _, m := range []string{"GET", "PUT", "POST", "HEAD", "DELETE", "PATCH", "OPTIONS"} {
		if _, ok := httpMethod([]byte(m + " /x HTTP/1.1\r\n")); !ok {
			t.Errorf("httpMethod does not accept %s", m)
		}
		if !methodStart[m[0]] {
			t.Errorf("methodStart filters %s out", m)
		}
	}
}
