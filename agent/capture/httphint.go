package capture

import (
	"bytes"
	"sync"
	"unsafe"

	libinjection "github.com/corazawaf/libinjection-go"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Content hints (event.FlagHTTPInjection, event.FlagHTTPTraversal).
//
// The packet record carries no payload (DESIGN.md, the ring format), so
// attacks on web applications, which differ from a benign request only in
// the request's text, were invisible to every detector: the three DVWA
// captures of the shared data had no anomalous packet. The decoder now reads
// the request line of a TCP payload that begins an HTTP/1.x request and sets
// two flag bits, which the nethost/v3 feature set turns into per-source
// evidence.
//
//   - Injection: each query parameter's value, percent-decoded ('+' as a
//     space), is checked with libinjection (corazawaf/libinjection-go, the
//     grammar behind ModSecurity's and Coraza's @detectSQLi and @detectXSS):
//     a tokenizer and fingerprint list of real SQL injection and a
//     tag/attribute parser for XSS, not a list of suspicious characters.
//     Quotes and keywords in ordinary text ("O'Reilly", "select a car",
//     "\"exact phrase\"") are not flagged (TestHTTPHints), and of the 519
//     HTTP requests in the shared benign captures only a DVWA SQL injection
//     that zeek's tests keep among them is.
//   - Traversal: the percent-decoded target contains "../" or "..\".
//
// Cost: one comparison of the payload's first bytes for every TCP packet
// with a payload; the request line is read only for requests, and
// libinjection runs only for requests with a query.
//
// Limits: only the first segment of a request is read (the request line
// fits in it in practice); requests split across IP fragments, HTTP/2 and
// TLS are not read; bodies (POST forms) are not read.

// Bounds of the work done for one request.
const (
	maxRequestLine = 8192 // bytes of the payload searched for the end of the target
	maxHintParams  = 64   // query parameters checked
	maxHintValue   = 4096 // bytes of one parameter value checked (decoded)
)

// hintBufs recycles the buffers values are decoded into.
var hintBufs = sync.Pool{New: func() any { b := make([]byte, 0, maxHintValue); return &b }}

// methodStart marks the first letters of the HTTP methods httpMethod
// knows: one table load, inline in the decoder, keeps the call off nearly
// every TCP payload.
var methodStart = [256]bool{'G': true, 'P': true, 'H': true, 'D': true, 'O': true}

// httpMethod reports whether b begins with an HTTP method followed by a
// space, and returns the index after that space.
func httpMethod(b []byte) (int, bool) {
	if len(b) < 5 {
		return 0, false
	}
	// One comparison of the first four bytes rejects nearly every payload.
	switch string(b[:4]) {
	case "GET ", "PUT ":
		return 4, true
	case "POST", "HEAD":
		if b[4] == ' ' {
			return 5, true
		}
	case "DELE":
		if len(b) >= 7 && string(b[4:7]) == "TE " {
			return 7, true
		}
	case "PATC":
		if len(b) >= 6 && string(b[4:6]) == "H " {
			return 6, true
		}
	case "OPTI":
		if len(b) >= 8 && string(b[4:8]) == "ONS " {
			return 8, true
		}
	}
	return 0, false
}

// httpHints returns the content-hint flags of a TCP payload: zero unless
// it begins an HTTP request whose target is an injection or a traversal.
func httpHints(payload []byte) uint8 {
	start, ok := httpMethod(payload)
	if !ok {
		return 0
	}
	line := payload[start:min(len(payload), maxRequestLine)]
	target := line
	if i := bytes.IndexAny(line, " \r\n"); i >= 0 {
		target = line[:i]
	}
	if len(target) == 0 {
		return 0
	}
	bp := hintBufs.Get().(*[]byte)
	defer hintBufs.Put(bp)
	var hints uint8
	// ".." needs a dot, raw or percent-encoded.
	if bytes.IndexByte(target, '.') >= 0 || bytes.IndexByte(target, '%') >= 0 {
		dec := percentDecode((*bp)[:0], target, false)
		*bp = dec[:0]
		if climbs(dec) {
			hints |= event.FlagHTTPTraversal
		}
	}
	q := bytes.IndexByte(target, '?')
	if q < 0 {
		return hints
	}
	query := target[q+1:]
	if i := bytes.IndexByte(query, '#'); i >= 0 {
		query = query[:i]
	}
	for n := 0; len(query) > 0 && n < maxHintParams; n++ {
		kv := query
		if i := bytes.IndexByte(query, '&'); i >= 0 {
			kv, query = query[:i], query[i+1:]
		} else {
			query = nil
		}
		v := kv
		if i := bytes.IndexByte(kv, '='); i >= 0 {
			v = kv[i+1:]
		}
		if len(v) == 0 {
			continue
		}
		dec := percentDecode((*bp)[:0], v[:min(len(v), maxHintValue)], true)
		*bp = dec[:0]
		if len(dec) == 0 || plainToken(dec) {
			continue
		}
		// libinjection reads the value and keeps nothing of it.
		s := unsafe.String(&dec[0], len(dec))
		if sqli, _ := libinjection.IsSQLi(s); sqli || libinjection.IsXSS(s) {
			return hints | event.FlagHTTPInjection
		}
	}
	return hints
}

// climbs reports whether the decoded target has a ".." path segment: ".."
// at the start of the target, of a path segment or of a query value, and
// followed by a separator or the end ("a.../b" and "..e" do not climb).
func climbs(t []byte) bool {
	for i := 0; ; {
		j := bytes.Index(t[i:], []byte(".."))
		if j < 0 {
			return false
		}
		j += i
		startOK := j == 0
		if !startOK {
			switch t[j-1] {
			case '/', '\\', '=', '?', '&':
				startOK = true
			}
		}
		endOK := j+2 == len(t) || t[j+2] == '/' || t[j+2] == '\\'
		if startOK && endOK {
			return true
		}
		i = j + 1
	}
}

// plainToken reports whether a decoded value is one token of letters,
// digits and URL punctuation ("42", "en-US", "a.b@c", "http://x/y"):
// neither SQL injection nor XSS can be written without a quote, a bracket,
// an operator, a comment or a second token, so libinjection is not asked
// (it costs 1-4 µs and a few dozen allocations per value).
func plainToken(v []byte) bool {
	for _, c := range v {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_', c == '.', c == '-', c == ':', c == '/', c == '@':
		default:
			return false
		}
	}
	return true
}

// percentDecode appends src to dst with %XX escapes decoded (an invalid
// escape is kept as it is) and, if plus, '+' read as a space.
func percentDecode(dst, src []byte, plus bool) []byte {
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '%' && i+2 < len(src):
			h, ok1 := unhex(src[i+1])
			l, ok2 := unhex(src[i+2])
			if ok1 && ok2 {
				dst = append(dst, h<<4|l)
				i += 2
				continue
			}
		case c == '+' && plus:
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
