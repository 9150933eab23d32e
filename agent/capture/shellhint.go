package capture

import (
	"bytes"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Content hint event.HintCmdShell: a command shell served over TCP.
//
// An exploit that succeeds usually ends in a shell: a reverse shell that the
// victim opens back to the attacker, or a bind shell on a port the exploit
// opened (Blaster's cmd.exe on 4444, the Aurora exploit's on 4321). The
// exploit itself is one ordinary-looking HTTP or RPC flow and the shell one
// more flow, so no rate or timing feature sees it (docs/models.md, section
// 3), but the shell announces itself in clear text, which IDS rule sets have
// long matched (Snort's ATTACK-RESPONSES class: "Microsoft cmd.exe banner",
// "id check returned root"). The decoder marks a TCP payload that is
//
//   - the banner of cmd.exe or PowerShell: it begins with "Microsoft
//     Windows" and has "[Version " within its first 64 bytes, or begins
//     with "Windows PowerShell" and has "Copyright" within them;
//   - a cmd.exe or PowerShell prompt waiting for input: the payload's last
//     line is a drive path followed by '>' ("C:\WINNT\system32>", "PS
//     C:\Users\x>") and nothing after it;
//   - the first words of a shell started without a terminal, as a reverse
//     shell (`bash -i`, `sh -i`) prints them: it begins with "bash: " or
//     "sh: " and says "job control" within its first 256 bytes;
//   - a bare interactive shell prompt ("sh-5.2# ", "bash-4.4$ ", what bash
//     prints when it reads no profile), the whole payload;
//   - the output of id(1): it begins with "uid=N(name) gid=N(";
//   - from TCP port 23 (telnet) only, a command prompt on the payload's
//     last line, which a telnet login reaches once it succeeded: a router's
//     or switch's ("Router>", "core1(config-if)#", "admin@srx> ",
//     "Matrix N7 Platinum(su)->", "[admin@MikroTik] > ") or a Unix
//     shell's ("pi@host:~$ ", "[root@host etc]# ") (telnetPrompt).
//
// Each test looks at the payload's first bytes or its last one, so a
// payload that is none of these costs a table load and a comparison.
// Limits: a shell inside TLS or SSH is not seen, nor one whose banner and
// prompt are suppressed; an administrator's cleartext telnet session to a
// Windows or Unix shell is reported, which on a network that forbids
// cleartext remote shells is the right answer.

// Bounds of the work done for one payload.
const (
	maxPromptLine = 260 + 4 // MAX_PATH and "PS " and '>'
	bannerWindow  = 64      // bytes searched for "[Version " and "Copyright"
	jobWindow     = 256     // bytes searched for "job control"
)

// shellStart marks the first bytes of the payloads shellHint reads from
// the start: 'M' (cmd.exe's banner), 'W' (PowerShell's), 'b' and 's' (bash
// and sh), 'u' (id). A payload whose last byte is '>' is read from the end.
var shellStart = [256]bool{'M': true, 'W': true, 'b': true, 's': true, 'u': true}

// telnetPort is the TCP port whose payloads telnetPrompt reads.
const telnetPort = 23

// shellCandidate reports whether shellHint can return a hint for pl, sent
// from TCP port sport: the decoder's inline test.
func shellCandidate(pl []byte, sport uint16) bool {
	return len(pl) >= 3 && (shellStart[pl[0]] || pl[len(pl)-1] == '>' || sport == telnetPort)
}

// shellHint returns event.HintCmdShell if the TCP payload pl, sent from
// port sport, is a command shell's banner, prompt or first output, and 0
// otherwise.
func shellHint(pl []byte, sport uint16) uint16 {
	if len(pl) < 3 {
		return 0
	}
	if pl[len(pl)-1] == '>' && windowsPrompt(pl) {
		return event.HintCmdShell
	}
	if sport == telnetPort && telnetPrompt(pl) {
		return event.HintCmdShell
	}
	head := pl[:min(len(pl), jobWindow)]
	switch pl[0] {
	case 'M':
		if bytes.HasPrefix(pl, []byte("Microsoft Windows")) &&
			bytes.Contains(head[:min(len(head), bannerWindow)], []byte("[Version ")) {
			return event.HintCmdShell
		}
	case 'W':
		if bytes.HasPrefix(pl, []byte("Windows PowerShell")) &&
			bytes.Contains(head[:min(len(head), bannerWindow)], []byte("Copyright")) {
			return event.HintCmdShell
		}
	case 'b', 's':
		if (bytes.HasPrefix(pl, []byte("bash: ")) || bytes.HasPrefix(pl, []byte("sh: "))) &&
			bytes.Contains(head, []byte("job control")) {
			return event.HintCmdShell
		}
		if unixPrompt(pl) {
			return event.HintCmdShell
		}
	case 'u':
		if idOutput(pl) {
			return event.HintCmdShell
		}
	}
	return 0
}

// windowsPrompt reports whether pl's last line (after its last '\n') is a
// cmd.exe or PowerShell prompt: an optional "PS ", a drive letter, ":\",
// path characters, and the final '>'. It reads backwards from the '>' and
// stops at the first byte that cannot be in a path ("</html>" stops at
// once), so a payload costs at most maxPromptLine bytes.
func windowsPrompt(pl []byte) bool {
	from := max(0, len(pl)-maxPromptLine)
	i := len(pl) - 2
	for i >= from && pathByte(pl[i]) {
		i--
	}
	// pl[i] must be the drive's ':', with the letter before and '\' after.
	if i < 1 || i < from || pl[i] != ':' || pl[i+1] != '\\' || !isLetter(pl[i-1]) {
		return false
	}
	i -= 2 // before the letter
	if i >= 2 && string(pl[i-2:i+1]) == "PS " {
		i -= 3
	}
	return i < 0 || pl[i] == '\n'
}

// telnetPrompt reports whether the last line of pl (after its last '\n',
// without a leading '\r' or NUL: telnet's line ends) is a command prompt
// waiting for input, in one of the forms of network devices and Unix
// shells:
//
//	name>  name#  name(mode)#           Cisco IOS and NX-OS, Arista, HPE, Brocade
//	user@name>  user@name#  (+ ' ')     Juniper Junos
//	name(su)->  name(rw)->  name(ro)->  Enterasys and Extreme EOS (name may have spaces)
//	[user@name] >                       MikroTik RouterOS
//	user@name:path$  user@name:path#    Unix shells (+ ' '), also "[user@name path]$ "
//
// Only payloads from the telnet port are read (the decoder's check): on
// other ports "name>" is too common a line end. A prompt reached over
// telnet means a cleartext login succeeded.
func telnetPrompt(pl []byte) bool {
	line := pl
	if i := bytes.LastIndexByte(pl, '\n'); i >= 0 {
		line = pl[i+1:]
	}
	for len(line) > 0 && (line[0] == '\r' || line[0] == 0) {
		line = line[1:]
	}
	if len(line) < 2 || len(line) > maxTelnetPrompt {
		return false
	}
	spaced := line[len(line)-1] == ' '
	if spaced {
		line = line[:len(line)-1]
	}
	end := line[len(line)-1]
	body := line[:len(line)-1]
	switch {
	case end == '>' && !spaced && bytes.HasSuffix(body, []byte("-")):
		body = body[:len(body)-1]
		for _, mode := range []string{"(su)", "(rw)", "(ro)"} {
			if name, ok := bytes.CutSuffix(body, []byte(mode)); ok {
				return len(name) > 0 && allBytes(name, nameOrSpaceByte)
			}
		}
		return false
	case (end == '>' || end == '#') && !spaced:
		name, mode, hasMode := bytes.Cut(body, []byte("("))
		if hasMode && (len(mode) < 2 || mode[len(mode)-1] != ')' || !allBytes(mode[:len(mode)-1], nameByte)) {
			return false
		}
		if bytes.IndexByte(name, '@') >= 0 {
			return userAtHost(name)
		}
		return len(name) > 0 && allBytes(name, nameByte)
	case end == '>' && spaced:
		// "user@name> " (Junos) or "[user@name] > " (RouterOS)
		if inner, ok := bytes.CutSuffix(body, []byte("] ")); ok && len(inner) > 0 && inner[0] == '[' {
			body = inner[1:]
		}
		return userAtHost(body)
	case end == '#' && spaced && userAtHost(body): // "user@name# " (Junos configuration mode)
		return true
	case (end == '$' || end == '#') && spaced:
		if inner, ok := bytes.CutPrefix(body, []byte("[")); ok { // "[user@name path]$ "
			inner, ok = bytes.CutSuffix(inner, []byte("]"))
			userHost, path, sp := bytes.Cut(inner, []byte(" "))
			return ok && sp && userAtHost(userHost) && len(path) > 0 && allBytes(path, pathNameByte)
		}
		userHost, path, ok := bytes.Cut(body, []byte(":")) // "user@name:path$ "
		return ok && userAtHost(userHost) && len(path) > 0 && allBytes(path, pathNameByte)
	}
	return false
}

// userAtHost reports whether b is "user@name".
func userAtHost(b []byte) bool {
	user, host, ok := bytes.Cut(b, []byte("@"))
	return ok && len(user) > 0 && allBytes(user, nameByte) && len(host) > 0 && allBytes(host, nameByte)
}

// maxTelnetPrompt bounds the prompt line telnetPrompt accepts.
const maxTelnetPrompt = 128

// nameByte: a host, user or mode name's bytes (letters, digits, '.', '_',
// '-').
func nameByte(c byte) bool {
	return isLetter(c) || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

func nameOrSpaceByte(c byte) bool { return nameByte(c) || c == ' ' }

// pathNameByte: a Unix prompt's working directory ('~', '/' and names).
func pathNameByte(c byte) bool { return nameByte(c) || c == '/' || c == '~' }

func allBytes(b []byte, ok func(byte) bool) bool {
	for _, c := range b {
		if !ok(c) {
			return false
		}
	}
	return true
}

// pathByte reports whether c may appear in a Windows path after its drive:
// not a control byte nor one of the characters Windows forbids (a second
// ':' included).
func pathByte(c byte) bool {
	switch c {
	case '<', '>', '|', '"', '*', '?', ':', 0x7f:
		return false
	}
	return c >= 0x20
}

// unixPrompt reports whether pl is exactly bash's or sh's default prompt
// without a profile: "bash-5.2$ ", "sh-4.4# ".
func unixPrompt(pl []byte) bool {
	rest, ok := bytes.CutPrefix(pl, []byte("bash-"))
	if !ok {
		if rest, ok = bytes.CutPrefix(pl, []byte("sh-")); !ok {
			return false
		}
	}
	// a version: digits '.' digits
	n := digits(rest)
	if n == 0 || n >= len(rest) || rest[n] != '.' {
		return false
	}
	rest = rest[n+1:]
	n = digits(rest)
	if n == 0 {
		return false
	}
	rest = rest[n:]
	return len(rest) == 2 && (rest[0] == '$' || rest[0] == '#') && rest[1] == ' '
}

// idOutput reports whether pl begins as id(1)'s output: "uid=N(name)
// gid=N(".
func idOutput(pl []byte) bool {
	rest, ok := bytes.CutPrefix(pl, []byte("uid="))
	if !ok {
		return false
	}
	n := digits(rest)
	if n == 0 || n >= len(rest) || rest[n] != '(' {
		return false
	}
	rest = rest[n+1:]
	end := bytes.IndexByte(rest[:min(len(rest), 64)], ')')
	if end <= 0 {
		return false
	}
	rest, ok = bytes.CutPrefix(rest[end+1:], []byte(" gid="))
	if !ok {
		return false
	}
	n = digits(rest)
	return n > 0 && n < len(rest) && rest[n] == '('
}

// digits returns the number of leading ASCII digits of b (at most 10).
func digits(b []byte) int {
	n := 0
	for n < len(b) && n < 10 && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	return n
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
