package capture

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

func TestShellHint(t *testing.T) {
	long := "C:\\" + strings.Repeat("a", 300) + ">"
	cases := []struct {
		name, payload string
		want          bool
	}{
		// cmd.exe and PowerShell
		{"cmd banner xp", "Microsoft Windows XP [Version 5.1.2600]\r\n(C) Copyright 1985-2001 Microsoft Corp.\r\n\r\nC:\\Documents and Settings\\Administrator\\Desktop>", true},
		{"cmd banner 10", "Microsoft Windows [Version 10.0.19045.3693]\r\n(c) Microsoft Corporation. All rights reserved.\r\n", true},
		{"cmd prompt after output", "\r\n Volume in drive C has no label.\r\n\r\nC:\\WINNT\\system32>", true},
		{"cmd prompt alone", "C:\\>", true},
		{"cmd prompt lower-case drive", "\r\nd:\\temp>", true},
		{"powershell prompt", "PS C:\\Users\\victim> ", false}, // trailing space: waits after "> "
		{"powershell prompt bare", "\r\nPS C:\\Users\\victim>", true},
		{"powershell banner", "Windows PowerShell\r\nCopyright (C) Microsoft Corporation. All rights reserved.\r\n", true},
		// Unix shells
		{"bash no job control", "bash: cannot set terminal process group (812): Inappropriate ioctl for device\nbash: no job control in this shell\n", true},
		{"sh no job control", "sh: no job control in this shell\n", true},
		{"bash prompt", "bash-5.2$ ", true},
		{"sh root prompt", "sh-4.4# ", true},
		{"id output", "uid=0(root) gid=0(root) groups=0(root)\n", true},
		{"id output www-data", "uid=33(www-data) gid=33(www-data) groups=33(www-data)\n", true},
		// ordinary traffic
		{"html end", "<p>Windows</p>\r\n</body></html>", false},
		{"xml end", "<?xml version=\"1.0\"?><a>C:\\x</a>", false},
		{"ftp pwd", "257 \"C:\\ftp\" is the current directory\r\n", false},
		{"path in text, not last line", "C:\\temp>\r\nmore text", false},
		{"prompt line too long", long, false},
		{"prompt with forbidden char", "\r\nC:\\a|b>", false},
		{"no drive", "\r\n:\\temp>", false},
		{"Microsoft without version", "Microsoft Windows Server 2003\r\nMicrosoft Windows XP", false},
		{"Microsoft version too far", "Microsoft Windows" + strings.Repeat(" ", 60) + "[Version 1]", false},
		{"PowerShell without copyright", "Windows PowerShell is a shell", false},
		{"bash text", "bash: command not found\n", false},
		{"sh in prose", "she said no job control", false},
		{"bash prompt with more", "bash-5.2$ ls\n", false},
		{"bash prompt no version", "bash-$ ", false},
		{"sh version without minor", "sh-4# ", false},
		{"uid in query", "uid=42&gid=7", false},
		{"uid no gid", "uid=0(root) groups=0(root)", false},
		{"uid unclosed", "uid=0(" + strings.Repeat("r", 100), false},
		{"ssh banner", "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", false},
		{"tls", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", false},
		{"short", ">", false},
		{"empty", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pl := []byte(c.payload)
			for _, port := range []uint16{4321, telnetPort} {
				got := shellHint(pl, port) == event.HintCmdShell
				if got != c.want {
					t.Errorf("shellHint(%q, %d) = %v, want %v", c.payload, port, got, c.want)
				}
				if got && !shellCandidate(pl, port) {
					t.Errorf("shellCandidate filters %q out", c.payload)
				}
			}
		})
	}
}

// TestTelnetPrompt: from the telnet port, the prompts of network devices
// and Unix shells on the payload's last line are marked (a login that
// succeeded); login and password prompts, banners, text and the same
// prompts from any other port are not.
func TestTelnetPrompt(t *testing.T) {
	cases := []struct {
		name, payload string
		want          bool
	}{
		{"cisco user exec", "\r\nRouter>", true},
		{"cisco privileged", "\r\ncore-sw1.lab#", true},
		{"cisco config mode", "\r\nR1(config-if)#", true},
		{"after output", "Interface    IP-Address\r\nGi0/1        10.0.0.1\r\nsw1#", true},
		{"prompt alone", "sw1>", true},
		{"junos", "\r\nadmin@srx> ", true},
		{"junos config", "\r\n[edit]\r\nadmin@srx# ", true},
		{"junos without space", "admin@srx>", true},
		{"enterasys", "\r\n\r\nMatrix N7 Platinum(su)->", true},
		{"enterasys read-only", "Switch 1(ro)->", true},
		{"mikrotik", "\r\n[admin@MikroTik] > ", true},
		{"debian shell", "Last login: Sat Nov 28\r\npi@raspberrypi:~$ ", true},
		{"root shell", "\r\nroot@host:/etc# ", true},
		{"rhel shell", "\r\n[root@db1 ~]# ", true},
		{"telnet CR NUL line end", "\r\x00sw1#", true},
		{"username prompt", "\r\nUsername: ", false},
		{"login prompt", "\r\ndebian login: ", false},
		{"password prompt", "Password: ", false},
		{"banner", "\r\nUnauthorized access prohibited\r\n", false},
		{"html end", "<div>\r\n</div>", false},
		{"C sharp", "\r\nC#", true}, // telnet only: a line that is a name and '#'
		{"arrow without mode", "name->", false},
		{"unknown mode", "name(xx)->", false},
		{"mode with space", "R1(config if)#", false},
		{"empty mode", "R1()#", false},
		{"bad host char", "\r\nrou!ter>", false},
		{"user without host", "admin@> ", false},
		{"shell without path", "pi@host:$ ", false},
		{"shell without user", "@host:~$ ", false},
		{"rhel without path", "[root@db1]# ", false},
		{"prompt then text", "sw1#\r\nmore", false},
		{"too long", "\r\n" + strings.Repeat("a", maxTelnetPrompt) + ">", false},
		{"just the end", "\r\n>", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pl := []byte(c.payload)
			if got := shellHint(pl, telnetPort) == event.HintCmdShell; got != c.want {
				t.Errorf("from port 23: shellHint(%q) = %v, want %v", c.payload, got, c.want)
			}
			if !shellCandidate(pl, telnetPort) && len(pl) >= 3 {
				t.Errorf("shellCandidate filters %q out", c.payload)
			}
			if got := shellHint(pl, 8023) == event.HintCmdShell; got {
				t.Errorf("from port 8023: %q marked", c.payload)
			}
		})
	}
}

// TestShellHintDecode: both decoder paths (the Ethernet/IPv4 fast path and
// gopacket's layers, which a VLAN tag selects) set the hint, keep the VLAN
// id beside it, and leave other payloads unmarked.
func TestShellHintDecode(t *testing.T) {
	shell := []byte("Microsoft Windows [Version 10.0.19045.3693]\r\n")
	for _, tagged := range []bool{false, true} {
		for _, pl := range [][]byte{shell, []byte("hello\r\n")} {
			frame := shellFrame(t, tagged, 4321, pl)
			var p event.Packet
			if r := NewDecoder().Decode(layers.LinkTypeEthernet, frame, 1, len(frame), &p); r != Decoded {
				t.Fatalf("decode: %v", r)
			}
			want := uint16(0)
			if string(pl) == string(shell) {
				want = event.HintCmdShell
			}
			if p.VLAN&event.HintCmdShell != want {
				t.Errorf("tagged %v, payload %q: hint %#x, want %#x", tagged, pl, p.VLAN&event.HintCmdShell, want)
			}
			if wantID := map[bool]uint16{false: 0, true: 42}[tagged]; p.VLANID() != wantID {
				t.Errorf("tagged %v: VLAN id %d, want %d", tagged, p.VLANID(), wantID)
			}
		}
	}
}

// TestTelnetPromptDecode: both decoder paths mark a device prompt from the
// telnet port, and not from another port.
func TestTelnetPromptDecode(t *testing.T) {
	pl := []byte("\r\nMatrix N7 Platinum(su)->")
	for _, tagged := range []bool{false, true} {
		for port, want := range map[layers.TCPPort]uint16{23: event.HintCmdShell, 2323: 0} {
			frame := shellFrame(t, tagged, port, pl)
			var p event.Packet
			if r := NewDecoder().Decode(layers.LinkTypeEthernet, frame, 1, len(frame), &p); r != Decoded {
				t.Fatalf("decode: %v", r)
			}
			if p.VLAN&event.HintCmdShell != want {
				t.Errorf("tagged %v, port %d: hint %#x, want %#x", tagged, port, p.VLAN&event.HintCmdShell, want)
			}
		}
	}
}

// shellFrame is an Ethernet/IPv4/TCP frame from port sport carrying pl,
// with an 802.1Q tag (VLAN 42) if tagged.
func shellFrame(t *testing.T, tagged bool, sport layers.TCPPort, pl []byte) []byte {
	tcp := &layers.TCP{SrcPort: sport, DstPort: 49200, PSH: true, ACK: true, Window: 512}
	ip := ip4(layers.IPProtocolTCP)
	_ = tcp.SetNetworkLayerForChecksum(ip)
	if tagged {
		return serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 42, Type: layers.EthernetTypeIPv4},
			ip, tcp, gopacket.Payload(pl))
	}
	return serialize(t, eth(layers.EthernetTypeIPv4), ip, tcp, gopacket.Payload(pl))
}

func BenchmarkShellHint(b *testing.B) {
	for _, c := range []struct{ name, payload string }{
		{"tls", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls client hello"},
		{"html-end", "<html><body>" + strings.Repeat("x", 1400) + "</html>"},
		{"cmd-prompt", "\r\n Directory of C:\\\r\n\r\nC:\\Windows\\system32>"},
		{"telnet-prompt", "Interface    IP-Address\r\nGi0/1        10.0.0.1\r\ncore-sw1(config-if)#"},
		{"telnet-output", strings.Repeat("Gi0/1        10.0.0.1     up\r\n", 40)},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := []byte(c.payload)
			sport := uint16(4321)
			if strings.HasPrefix(c.name, "telnet") {
				sport = telnetPort
			}
			b.ReportAllocs()
			for b.Loop() {
				if shellCandidate(p, sport) {
					shellHint(p, sport)
				}
			}
		})
	}
}

// FuzzShellHint: any payload gives the hint bit or nothing, and never one
// that the decoder's inline filter would have skipped.
func FuzzShellHint(f *testing.F) {
	for _, s := range []string{
		"Microsoft Windows [Version 10.0]", "\r\nC:\\WINNT\\system32>", "PS C:\\>", "bash-5.2$ ", "sh: no job control",
		"uid=0(root) gid=0(root)", "Windows PowerShell Copyright", "uid=1(", "C:\\" + strings.Repeat("\n", 300) + ">",
		"\r\nR1(config-if)#", "Matrix N7 Platinum(su)->", "[admin@MikroTik] > ", "[root@db1 ~]# ", "pi@host:~$ ",
	} {
		f.Add([]byte(s), uint16(telnetPort))
	}
	f.Fuzz(func(t *testing.T, payload []byte, sport uint16) {
		got := shellHint(payload, sport)
		if got != 0 && got != event.HintCmdShell {
			t.Fatalf("bits outside the hint: %#x", got)
		}
		if got != 0 && !shellCandidate(payload, sport) {
			t.Fatalf("hint for a payload the decoder skips: %q", payload)
		}
	})
}

// sharedHinted decodes every frame of the shared captures
// (VIGIL_SHARED_DATA; skipped when absent) and counts, per capture, the
// packets whose record carries the content hint bit hint (of the VLAN
// field). It logs the counts, fails the test for every benign capture
// with a marked packet (what: what the mark says), and returns the data
// folder and the counts.
func sharedHinted(t *testing.T, hint uint16, what string) (string, map[string]int) {
	t.Helper()
	dir := sharedData(t)
	hinted := map[string]int{}
	sharedFiles(t, dir, func(rel string, data []byte) {
		d := NewDecoder() // one per capture, as the agent's (session cookies are per capture)
		eachFrame(t, data, func(lt layers.LinkType, f []byte) {
			var p event.Packet
			if d.Decode(lt, f, 1, len(f), &p) <= DecodedTruncated && p.VLAN&hint != 0 {
				hinted[rel]++
			}
		})
	})
	names := make([]string, 0, len(hinted))
	for n := range hinted {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t.Logf("%s: %d packets marked as %s", n, hinted[n], what)
		if strings.HasPrefix(n, "benign"+string(filepath.Separator)) {
			t.Errorf("benign capture %s: %d packets marked as %s", n, hinted[n], what)
		}
	}
	return dir, hinted
}

// TestShellHintSharedData: on the shared captures the shells of the Aurora
// and Blaster attacks and the switch CLI that hackersview's telnet login
// reaches are marked, and no benign capture has a marked packet. (Among the parser corpus, suricata-verify's FTP tests are
// marked: the file they transfer is id's output, "uid=0(root) gid=0(root)
// groups=0(root)"; on a sensor that is a finding to look at, and those
// captures are no training data.)
func TestShellHintSharedData(t *testing.T) {
	dir, hinted := sharedHinted(t, event.HintCmdShell, "a command shell")
	for _, want := range []string{"aurora.pcapng", "ppa2e_aurora.pcap", "ppa1e_blaster.pcap", "ppa1e_hackersview.pcap"} {
		rel := filepath.Join("attacks", "chrissanders-packets", want)
		if _, err := os.Stat(filepath.Join(dir, rel)); err == nil && hinted[rel] == 0 {
			t.Errorf("%s: its command shell is not marked", rel)
		}
	}
}
