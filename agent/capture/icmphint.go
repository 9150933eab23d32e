package capture

import "github.com/vigil-edge/vigil/plugins/sdk/event"

// Content hint event.HintICMPData: an ICMP echo that carries data no ping
// program sends.
//
// Ping programs fill the echo payload with a fixed pattern: iputils, BSD,
// macOS and busybox a timestamp followed by incrementing bytes (0x10,
// 0x11, …), Windows the alphabet "abcdefghijklmnopqrstuvw" over and over,
// Cisco IOS 0xabcd repeated, fping, hping3, mtr and tracert zeros or one
// repeated byte. A covert channel or a tunnel over ICMP (Loki, icmpsh,
// ptunnel, hans, "ping -p" exfiltration) puts its own data there instead:
// text, commands, file contents or whole IP packets. IDS rule sets match
// such payloads one tool at a time (Snort's "ICMP PING" rules name the
// pinging OS by its pattern; Suricata's tunnel rules match tool magics);
// the decoder instead marks an echo request or reply whose payload
// departs from every fixed pattern: it counts the adjacent byte pairs
// (a, b) that are both printable ASCII (0x20-0x7e) and are not a pattern
// step (b = a, b = a + 1, or Windows' wrap from 'w' back to 'a'), and
// marks the packet from icmpDataPairs such pairs on.
//
// A timestamp of 8 or 16 bytes gives at most a few such pairs by chance
// (each pair is printable with probability (95/256)² ≈ 0.14); text gives
// one per character, and random or compressed data about one per seven
// bytes, so a tunnel's packets of 64 bytes or more are marked too. Replies
// echo the request's payload, so both ends of a channel are marked. The
// scan stops at icmpDataWindow bytes.
//
// Limits: a channel that hides its data in the timestamp bytes, in the
// identifier and sequence fields, in packet sizes or timing, or that
// encodes it as a pattern of non-printable bytes is not seen; "ping -p"
// with a text pattern is marked, which is what it is used for.

// Bounds of the work done for one payload.
const (
	icmpDataPairs  = 12  // non-pattern printable pairs that mark a payload
	icmpDataWindow = 512 // bytes scanned
)

// printable marks the printable ASCII bytes 0x20-0x7e.
var printable = func() (t [256]bool) {
	for b := 0x20; b < 0x7f; b++ {
		t[b] = true
	}
	return t
}()

// icmpHint returns event.HintICMPData if the ICMP or ICMPv6 message of type
// typ (the first byte of its header; the code does not matter) is an echo
// request or reply whose payload pl (after the identifier and sequence
// number) carries data that no ping pattern explains, and 0 otherwise.
func icmpHint(v6 bool, typ uint8, pl []byte) uint16 {
	echo := typ == 0 || typ == 8
	if v6 {
		echo = typ == 128 || typ == 129
	}
	if !echo || len(pl) <= icmpDataPairs {
		return 0
	}
	pl = pl[:min(len(pl), icmpDataWindow)]
	n := 0
	a := pl[0]
	for _, b := range pl[1:] {
		if printable[a] && printable[b] && b != a && b != a+1 && (a != 'w' || b != 'a') {
			n++
			if n >= icmpDataPairs {
				return event.HintICMPData
			}
		}
		a = b
	}
	return 0
}
