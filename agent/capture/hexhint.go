package capture

import (
	"bytes"
	"math/bits"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Content hint event.HintHexData: hex-encoded data carried in clear text
// over TCP.
//
// Malware that talks to its command-and-control server over plain HTTP often
// encrypts what it sends and receives and writes the ciphertext as hex
// digits, so that it passes as text: CryptoWall 4 posts "o=" and 128 hex
// digits to a PHP page and receives its instructions and its ransom note as a
// chunked body of hex digits, over 120 kB of it (cryptowall4_c2 and
// ek_to_cryptowall4 in the shared data, which no metadata feature separated
// from web browsing: docs/models.md, section 15). Benign protocols carry
// binary data as binary (TLS, SSH, SMB) or as base64 (mail, PEM, JSON
// tokens), and hashes as 32 to 64 hex digits inside other text. The decoder
// marks a TCP payload whose content, after the head of an HTTP message when
// it begins with one, is
//
//   - optionally a form field name of at most hexKeyMax letters, digits or
//     '_' and '=' ("o=…", a urlencoded form with one field),
//   - then nothing but hex digits and line ends (a chunked body's size
//     lines are hex digits too) in its first hexWindow bytes,
//   - with at least hexMinDigits digits, among which at least
//     hexMinDistinct of the 16 hex digits occur: ciphertext uses them all,
//     while a fill of "AAAA…" (protocol test traces) or a decimal number
//     does not.
//
// Cost: one table load for a payload that begins with none of the bytes
// the check reads; an HTTP message's head is searched for its end
// (bytes.Index, at most hexHeadMax bytes); other payloads are read until the
// first byte that is no hex digit, which for binary or prose is one of the
// first few. No allocation.
//
// Limits: base64-encoded ciphertext is not marked (benign traffic has too
// much base64), nor hex digits mixed with other text (JSON fields, several
// form fields), nor fewer than hexMinDigits in one segment. On the shared
// captures it marks the two CryptoWall captures and the hex-encoded
// shellcode of the Aurora exploit page, and no packet of a benign capture
// (TestHexHintSharedData).

// Bounds and thresholds of the check.
const (
	hexMinDigits   = 96   // hex digits a payload needs: more than a SHA-256 (64) with its key and line ends
	hexMinDistinct = 12   // distinct hex digits among them (random data: all 16 after ~64 digits)
	hexKeyMax      = 16   // bytes of a form field name before '='
	hexHeadMax     = 4096 // bytes of an HTTP message searched for the end of its head
	hexWindow      = 512  // bytes of the content read (after the field name)
)

// hexStart marks the first bytes of the payloads hexHint reads: hex digits,
// line ends (a segment may begin with a body's line end) and form field
// names (letters, digits, '_'); "HTTP/1." responses and "POST"/"PUT"
// requests begin with letters too.
var hexStart = func() (t [256]bool) {
	for c := range 256 {
		t[c] = keyByte(byte(c))
	}
	t['\r'], t['\n'] = true, true
	return t
}()

// hexDigit maps a hex digit to its value plus one (lower and upper case
// alike), a line end to 0x20, and every other byte to 0.
var hexDigit = func() (t [256]byte) {
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c-'0') + 1
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c-'a') + 11
		t[c-'a'+'A'] = byte(c-'a') + 11
	}
	t['\r'], t['\n'] = 0x20, 0x20
	return t
}()

// keyByte reports whether c may appear in a form field name.
func keyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// hexCandidate reports whether hexHint can return a hint for pl: the
// decoder's inline test.
func hexCandidate(pl []byte) bool {
	return len(pl) >= hexMinDigits && hexStart[pl[0]]
}

// hexHint returns event.HintHexData if the TCP payload pl carries
// hex-encoded data as the package documentation describes, and 0
// otherwise.
func hexHint(pl []byte) uint16 {
	if len(pl) < hexMinDigits {
		return 0
	}
	body := pl
	if httpWithBody(pl) {
		head := pl[:min(len(pl), hexHeadMax)]
		i := bytes.Index(head, []byte("\r\n\r\n"))
		if i < 0 {
			return 0
		}
		body = pl[i+4:]
	}
	if hexData(body) {
		return event.HintHexData
	}
	return 0
}

// httpWithBody reports whether pl begins an HTTP/1.x response or a request
// whose method carries a body (POST, PUT).
func httpWithBody(pl []byte) bool {
	switch pl[0] {
	case 'H':
		return bytes.HasPrefix(pl, []byte("HTTP/1."))
	case 'P':
		return bytes.HasPrefix(pl, []byte("POST ")) || bytes.HasPrefix(pl, []byte("PUT "))
	}
	return false
}

// hexData reports whether b is an optional form field name and '=', then
// only hex digits and line ends up to hexWindow bytes, with at least
// hexMinDigits digits of which at least hexMinDistinct distinct ones.
func hexData(b []byte) bool {
	k := 0
	for k < len(b) && k < hexKeyMax && keyByte(b[k]) {
		k++
	}
	if k > 0 && k < len(b) && b[k] == '=' {
		b = b[k+1:]
	}
	if len(b) < hexMinDigits {
		return false
	}
	b = b[:min(len(b), hexWindow)]
	var seen uint32 // bit v-1 for each digit value v-1 seen
	digits := 0
	for _, c := range b {
		v := hexDigit[c]
		switch {
		case v == 0:
			return false
		case v != 0x20:
			seen |= 1 << (v - 1)
			digits++
		}
	}
	return digits >= hexMinDigits && bits.OnesCount32(seen) >= hexMinDistinct
}
