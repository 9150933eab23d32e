package dataset

import (
	"net/netip"
	"strings"
	"testing"
)

// TestParseManifestIPv6Attacker: an IPv6 address in the attacker column is
// an address like an IPv4 one. It used to be ignored (only dotted quads
// were looked for), so the capture was evaluated as unlabelled: every
// packet, the victims' and bystanders' too, counted as an attack packet.
func TestParseManifestIPv6Attacker(t *testing.T) {
	const m = `path,bytes,packets,class,attack_or_content,attacker,victim
attacks/v6/scan6.pcap,1,1,attack,ICMPv6 sweep,2001:db8::66,2001:db8::/64
attacks/v6/mapped.pcap,1,1,attack,scan,"fe80::1 (link-local, likely)",
attacks/v6/none.pcap,1,1,attack,undocumented,see description,
`
	ls, err := ParseManifest(strings.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"v6/scan6.pcap": "2001:db8::66", "v6/mapped.pcap": "fe80::1", "v6/none.pcap": ""} {
		got := ls.For("/data/attacks/" + path)
		if len(got) != 1 {
			t.Fatalf("%s: %d labels", path, len(got))
		}
		a := ""
		if got[0].Attacker.IsValid() {
			a = got[0].Attacker.String()
		}
		if a != want {
			t.Errorf("%s: attacker %q, want %q", path, a, want)
		}
		if want != "" && !got[0].Positive(netip.MustParseAddr(want), [6]byte{}, 0) {
			t.Errorf("%s: the attacker's packet is not positive", path)
		}
	}
}
