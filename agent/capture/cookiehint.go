package capture

import (
	"bytes"
	"hash/maphash"
	"sync"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Content hint event.HintCookieReuse: a web session's cookie presented by a
// second client.
//
// A web application knows a logged-in user by a session cookie (PHPSESSID,
// JSESSIONID, a framework's signed token): whoever presents it is that user.
// An attacker who reads it off the network (sidejacking over plain HTTP, a
// captured proxy log, cross-site scripting) and sends it from his own host
// takes the session over without a password. The requests are ordinary
// HTTP, the same sizes and timing as the victim's, so no metadata feature
// separated the shared data's sessionhijacking capture from web browsing
// (docs/models.md, section 3). What gives it away is that one session cookie
// arrives at one server from two client addresses: the classic sidejacking
// check (Zeek's http-sidejacking policy, Firesheep's detectors).
//
// The decoder reads the Cookie header of every HTTP/1.x request whose
// first segment it sees (the same requests the HTTP hints read) and keeps,
// per capture (a file, or a live capture's sockets together: CookieTable),
// which client address first presented each session cookie to each server
// (address and port). A request that presents a session cookie which
// another client presented to the same server within cookieTTL of packet
// time is marked; the first client stays the owner, so each of the second
// client's requests is marked and the owner's are not.
//
// A session cookie is a name=value pair whose value has at least
// cookieMinValue bytes of token characters (letters, digits and
// "-_.+/=%:"): session identifiers are long and random, while preferences
// ("security=low", "lang=en") are short and the same for many clients.
//
// Cost: nothing for packets that are no HTTP request (the method check
// already runs for the HTTP hints); for a request, its head is searched for
// a Cookie header (bytes.Index, at most cookieHeadMax bytes), and each
// session cookie costs one hash and one map access under the table's
// mutex. Memory: at most cookieMaxEntries entries (about 60 bytes each);
// when the table is full, entries older than cookieTTL are dropped, and a
// cookie that still finds no room is not followed (counted:
// CookieTable.Untracked).
//
// Limits: a client that changes its address within a session (a mobile
// client, IPv4 and IPv6 of one dual-stack host, a pool of NAT addresses)
// looks like a second client; a cookie set alike for every client (a
// long constant token) would be marked for all but the first. Only the
// first segment of a request is read, and TLS hides the header: the hint
// sees plain HTTP, where sidejacking happens. On the shared captures it
// marks the hijacker's requests in sessionhijacking and no packet of a
// benign capture (TestCookieHintSharedData).

// Bounds of the check.
const (
	cookieHeadMax    = 8192    // bytes of a request searched for its Cookie header
	cookieMinValue   = 16      // bytes of a session cookie's value, at least
	cookieMaxValue   = 4096    // longer values are not session identifiers (and not hashed)
	cookieMaxPairs   = 32      // pairs of one header checked
	cookieMaxEntries = 1 << 14 // cookies followed per table
	cookieTTL        = 3600e9  // ns of packet time a cookie stays bound to its first client
)

// CookieTable remembers which client first presented each session cookie to
// each server. It is safe for concurrent use: a live capture's readers share
// one (NewDecoderWithCookies), so that the two clients of a hijacked session
// are compared even when their packets reach different sockets.
type CookieTable struct {
	mu        sync.Mutex
	seed      maphash.Seed
	m         map[uint64]cookieOwner
	max       int
	swept     int64 // packet time of the last sweep for expired entries
	untracked uint64
}

type cookieOwner struct {
	client [16]byte
	seenNs int64 // last request of the owner
}

// NewCookieTable returns an empty table.
func NewCookieTable() *CookieTable {
	return &CookieTable{seed: maphash.MakeSeed(), m: make(map[uint64]cookieOwner), max: cookieMaxEntries}
}

// Untracked returns the number of session cookies that were not followed
// because the table was full.
func (t *CookieTable) Untracked() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.untracked
}

// Len returns the number of cookies followed.
func (t *CookieTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// cookieToken marks the bytes of a session cookie's value.
var cookieToken = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "-_.+/=%:" {
		t[c] = true
	}
	return t
}()

// cookieHeader returns the value of the first Cookie header in the head of
// the HTTP request pl (which begins with a method), or nil.
func cookieHeader(pl []byte) []byte {
	head := pl[:min(len(pl), cookieHeadMax)]
	if end := bytes.Index(head, []byte("\r\n\r\n")); end >= 0 {
		head = head[:end+2]
	}
	// The request line first, then one header per line.
	i := bytes.IndexByte(head, '\n')
	for i >= 0 && i+1 < len(head) {
		line := head[i+1:]
		next := bytes.IndexByte(line, '\n')
		if next >= 0 {
			line = line[:next]
		}
		if len(line) > 7 && line[6] == ':' && asciiEqualFold(line[:6], "cookie") {
			return bytes.TrimRight(line[7:], "\r")
		}
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return nil
}

// asciiEqualFold compares b with the lower-case ASCII word s, ignoring case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if b[i]|0x20 != s[i] {
			return false
		}
	}
	return true
}

// check marks p (an HTTP request with payload pl, addresses and ports set)
// when it presents a session cookie that another client presented to the
// same server, and records the cookies it presents first.
func (t *CookieTable) check(p *event.Packet, pl []byte) uint16 {
	hdr := cookieHeader(pl)
	if len(hdr) == 0 {
		return 0
	}
	var mark uint16
	pairs := 0
	for len(hdr) > 0 && pairs < cookieMaxPairs {
		var pair []byte
		if k := bytes.IndexByte(hdr, ';'); k >= 0 {
			pair, hdr = hdr[:k], hdr[k+1:]
		} else {
			pair, hdr = hdr, nil
		}
		pair = bytes.TrimSpace(pair)
		eq := bytes.IndexByte(pair, '=')
		if eq <= 0 {
			continue
		}
		pairs++
		val := pair[eq+1:]
		if len(val) < cookieMinValue || len(val) > cookieMaxValue || !allToken(val) {
			continue
		}
		if t.seen(p, pair) {
			mark = event.HintCookieReuse
		}
	}
	return mark
}

func allToken(b []byte) bool {
	for _, c := range b {
		if !cookieToken[c] {
			return false
		}
	}
	return true
}

// seen records the session cookie pair (name=value) as presented by p's
// source to p's destination and reports whether another client owns it.
func (t *CookieTable) seen(p *event.Packet, pair []byte) bool {
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.Write(p.DstIP[:])
	h.WriteByte(byte(p.DstPort >> 8))
	h.WriteByte(byte(p.DstPort))
	h.Write(pair)
	key := h.Sum64()
	now := p.TimestampNs

	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.m[key]
	if ok && now-o.seenNs <= cookieTTL {
		if o.client == p.SrcIP {
			o.seenNs = max(o.seenNs, now)
			t.m[key] = o
			return false
		}
		return true
	}
	// New, or expired: p's source owns it now.
	if !ok && len(t.m) >= t.max {
		if now-t.swept >= cookieTTL/60 { // at most one sweep a minute of packet time
			t.swept = now
			for k, e := range t.m {
				if now-e.seenNs > cookieTTL {
					delete(t.m, k)
				}
			}
		}
		if len(t.m) >= t.max {
			t.untracked++
			return false
		}
	}
	t.m[key] = cookieOwner{client: p.SrcIP, seenNs: now}
	return false
}
