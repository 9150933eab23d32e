package nethost

import "github.com/vigil-edge/vigil/plugins/sdk/event"

// nethost/v5 is nethost/v4 followed by ICMPDataDim features for a covert
// channel or tunnel over ICMP echo, which the size of the echoes
// (nethost/v2's host_L0.1_icmp_size) shows only when it differs from the
// pings of the training data: ppa1e_covertinfo's two 182-byte echoes score
// 2.1 × the threshold, too little for a finding from two packets
// (docs/models.md, section 13). The agent's decoder marks an echo request
// or reply whose payload carries data that no ping program's fill pattern
// explains (agent/capture/icmphint.go, event.HintICMPData); nethost/v5 keeps
// per source a decayed count (λ = 0.1, as the other content hints) of such
// packets:
//
//	host_icmp_data  the source's echoes that carry covert data
//
// log1p-scaled. A reply echoes its request's payload, so both ends of a
// channel count. The first DimV4 features are nethost/v4's, bit for bit
// (TestPrefixVersions).
//
// Records from an agent older than the hint carry no mark: the feature is
// then 0, as for a source that sent no such echo.

// NameV5 is the name of the feature set nethost/v5.
const NameV5 = "nethost/v5"

// ICMPDataDim is the number of features nethost/v5 adds to nethost/v4's.
const ICMPDataDim = 1

// DimV5 is the number of nethost/v5 features per packet.
const DimV5 = DimV4 + ICMPDataDim

var icmpDataNames = [ICMPDataDim]string{"host_icmp_data"}

// NamesV5 returns the nethost/v5 feature names in output order (a fresh
// copy).
func NamesV5() []string { return append(NamesV4(), icmpDataNames[:]...) }

// extractICMPData counts p's covert-ICMP hint in its source's entry v and
// writes the nethost/v5 raw feature to raw[DimV4:].
func extractICMPData(p *event.Packet, v *hostVal, raw *Raw) {
	if p.VLAN&event.HintICMPData != 0 {
		v.icmpData++
	}
	raw[DimV4] = v.icmpData
}
