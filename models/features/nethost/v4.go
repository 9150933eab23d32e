package nethost

import "github.com/vigil-edge/vigil/plugins/sdk/event"

// nethost/v4 is nethost/v3 followed by ShellDim features for a command
// shell served over the network, which no rate or timing of the packets
// shows: the Aurora exploit's reverse shell and Blaster's bind shell are
// one ordinary flow each (docs/models.md, section 3). The agent's decoder
// marks a TCP payload that is a shell's banner, prompt or first output
// (agent/capture/shellhint.go, event.HintCmdShell); nethost/v4 keeps per
// source a decayed count (λ = 0.1, as the web features) of such packets:
//
//	host_cmd_shell  the source's packets that serve a command shell
//
// log1p-scaled. The source is the host that runs the shell: the victim of
// the exploit, whose other packets then carry the evidence for tens of
// seconds. The first DimV3 features are nethost/v3's, bit for bit
// (TestV4Prefix).
//
// Records from an agent older than the hint carry no mark: the feature is
// then 0, as for a source that served no shell.

// NameV4 is the name of the feature set nethost/v4.
const NameV4 = "nethost/v4"

// ShellDim is the number of features nethost/v4 adds to nethost/v3's.
const ShellDim = 1

// DimV4 is the number of nethost/v4 features per packet.
const DimV4 = DimV3 + ShellDim

var shellNames = [ShellDim]string{"host_cmd_shell"}

// NamesV4 returns the nethost/v4 feature names in output order (a fresh
// copy).
func NamesV4() []string { return append(NamesV3(), shellNames[:]...) }

// extractShell counts p's command-shell hint in its source's entry v and
// writes the nethost/v4 raw feature to raw[DimV3:].
func extractShell(p *event.Packet, v *hostVal, raw *Raw) {
	if p.VLAN&event.HintCmdShell != 0 {
		v.cmdShell++
	}
	raw[DimV3] = v.cmdShell
}
