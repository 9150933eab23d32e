package capture

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Payloads of CryptoWall 4's command-and-control traffic
// (cryptowall4_c2.pcapng of the shared data): the body of a check-in POST,
// sent as its own segment, and the start of the answer.
const (
	cwBody = "o=6b787638683333616b6431660f05f2393c1a354ad6e57d984568037ecebfe360e70ca9e211cdc0f5cf1b065484cf67e605493877069bbcc6b7eae868198581"
	cwHex  = "a7f0e58a407a2b37e2918b9f8525298503153333345443c2cea53de77f0861041a4ced4b741c16544baf96264354ecc882ea7807d470a6baae03a923e0084f5917ffa2e4de51f0fb6a08db30e523d12954531a399871b17a3caf6db0ff02450e275d2734"
	cwHead = "HTTP/1.1 200 OK\r\nDate: Mon, 04 Jan 2016 16:26:45 GMT\r\nServer: Apache/2.2.31 (Unix)\r\n" +
		"X-Powered-By: PHP/5.4.45\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nContent-Type: text/html\r\n\r\n"
	sha256Hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

func TestHexHint(t *testing.T) {
	tests := []struct {
		name string
		pl   string
		want bool
	}{
		{"form field of ciphertext (CryptoWall check-in)", cwBody, true},
		{"continuation segment of a hex body", cwHex + cwHex, true},
		{"chunked response: head, size line, hex", cwHead + "1e304\r\n" + cwHex, true},
		{"POST with its body in the same segment", "POST /76N1Lm.php?n=x4tk7t4jo6 HTTP/1.1\r\nContent-Length: 131\r\n\r\n" + cwBody, true},
		{"PUT of hex", "PUT /up HTTP/1.1\r\nHost: x\r\n\r\n" + cwHex, true},
		{"upper-case hex lines", strings.ToUpper(cwHex[:64]) + "\r\n" + strings.ToUpper(cwHex[64:160]) + "\r\n", true},
		{"segment that begins with a line end", "\r\n" + cwHex, true},
		{"field name of hexKeyMax bytes", strings.Repeat("k", hexKeyMax) + "=" + cwHex, true},

		{"field name too long", strings.Repeat("k", hexKeyMax+1) + "=" + cwHex, false},
		{"a SHA-256 as the only field", "sha256=" + sha256Hex, false},
		{"two SHA-256 lines (under hexMinDigits)", sha256Hex[:47] + "\n" + sha256Hex[:47] + "\n", false},
		{"95 hex digits", cwHex[:95] + strings.Repeat("\n", 10), false},
		{"fill of one letter (protocol test traces)", strings.Repeat("A", 1400), false},
		{"decimal digits", strings.Repeat("0123456789", 20), false},
		{"few distinct digits", strings.Repeat("deadbeef", 30), false},
		{"two form fields", cwBody + "&x=1", false},
		{"JSON with a hex value", `{"id":"` + cwHex + `"}`, false},
		{"hex dump with spaces", strings.Repeat("6b 78 76 38 68 33 33 61 6b 64 31 66 0f 05 f2 39\n", 10), false},
		{"base64", "dGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZyBhbmQgdGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVy" + cwHex, false},
		{"GET with hex in the target", "GET /" + cwHex + " HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"response with an HTML body", cwHead + "<html><body>" + cwHex + "</body></html>", false},
		{"response head without its end", cwHead[:60] + cwHex, false},
		{"response with an empty body", cwHead, false},
		{"HTTP head over hexHeadMax", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("y", hexHeadMax) + "\r\n\r\n" + cwHex, false},
		{"hex beyond hexWindow is not read", cwBody + strings.Repeat("0", hexWindow) + " trailing text", true},
		{"binary (TLS record)", "\x17\x03\x03\x01\x00" + cwHex, false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := []byte(tt.pl)
			got := hexHint(pl)
			if want := map[bool]uint16{true: event.HintHexData}[tt.want]; got != want {
				t.Fatalf("hexHint = %#x, want %#x", got, want)
			}
			if got != 0 && !hexCandidate(pl) {
				t.Fatal("hint for a payload the decoder's inline test skips")
			}
		})
	}
}

// TestHexHintDecode: both decoder paths (the IPv4 fast path for untagged
// frames, gopacket for tagged ones) mark a hex-encoded payload, and only
// that one; the VLAN id stays intact next to the hint.
func TestHexHintDecode(t *testing.T) {
	for _, tagged := range []bool{false, true} {
		for pl, want := range map[string]uint16{cwBody: event.HintHexData, cwHead + "<html></html>" + cwHex: 0} {
			frame := shellFrame(t, tagged, 80, []byte(pl))
			var p event.Packet
			if r := NewDecoder().Decode(layers.LinkTypeEthernet, frame, 1, len(frame), &p); r != Decoded {
				t.Fatalf("decode: %v", r)
			}
			if p.VLAN&event.HintHexData != want {
				t.Errorf("tagged %v, payload %.20q: hint %#x, want %#x", tagged, pl, p.VLAN&event.HintHexData, want)
			}
			if wantID := map[bool]uint16{false: 0, true: 42}[tagged]; p.VLANID() != wantID {
				t.Errorf("tagged %v: VLAN id %d, want %d", tagged, p.VLANID(), wantID)
			}
		}
	}
}

// TestHexHintSharedData: on the shared captures the hint marks CryptoWall's
// command-and-control traffic in both captures that hold it, and no packet
// of a benign capture.
func TestHexHintSharedData(t *testing.T) {
	dir, hinted := sharedHinted(t, event.HintHexData, "hex-encoded data")
	for _, want := range []string{"cryptowall4_c2.pcapng", "ek_to_cryptowall4.pcapng"} {
		rel := filepath.Join("attacks", "chrissanders-packets", want)
		if _, err := os.Stat(filepath.Join(dir, rel)); err == nil && hinted[rel] < 3 {
			t.Errorf("%s: %d packets marked, want its check-ins and their answers", rel, hinted[rel])
		}
	}
}

func BenchmarkHexHint(b *testing.B) {
	for _, c := range []struct{ name, payload string }{
		{"tls", "\x17\x03\x03\x05\xa0" + strings.Repeat("\x8f", 1400)},
		{"html", "<!DOCTYPE html><html><body>" + strings.Repeat("x", 1400)},
		{"text", "Subject: hello " + strings.Repeat("x", 1400)},
		{"http-response", cwHead + "<html>" + strings.Repeat("x", 1000)},
		{"hex-1400B", strings.Repeat(cwHex[:140], 10)},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := []byte(c.payload)
			b.ReportAllocs()
			for b.Loop() {
				if hexCandidate(p) {
					hexHint(p)
				}
			}
		})
	}
}

// FuzzHexHint: any payload gives the hint bit or nothing, never one that
// the decoder's inline test skips, and never one for a payload shorter than
// hexWindow with a byte that is neither a hex digit nor a line end after
// its HTTP head and field name.
func FuzzHexHint(f *testing.F) {
	for _, s := range []string{cwBody, cwHex, cwHead + "1e304\r\n" + cwHex, "sha=" + sha256Hex, strings.Repeat("A", 200),
		"POST / HTTP/1.1\r\n\r\n" + cwHex} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, pl []byte) {
		got := hexHint(pl)
		if got != 0 && got != event.HintHexData {
			t.Fatalf("bits outside the hint: %#x", got)
		}
		if got != 0 && !hexCandidate(pl) {
			t.Fatalf("hint for a payload the decoder skips: %q", pl)
		}
		if got != 0 && len(pl) < hexWindow && hexHint(append(append([]byte(nil), pl...), ' ')) != 0 {
			t.Fatalf("hint with a space at the end: %q", pl)
		}
	})
}
