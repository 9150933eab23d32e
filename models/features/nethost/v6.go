package nethost

import "github.com/vigil-edge/vigil/plugins/sdk/event"

// nethost/v6 is nethost/v5 followed by HexDataDim features for hex-encoded
// data in clear text, as malware writes the ciphertext it exchanges with its
// command-and-control server over plain HTTP. CryptoWall 4's check-ins and
// their answers are well-formed HTTP of ordinary sizes and timing, so no
// earlier feature separated them from web browsing (docs/models.md,
// section 15). The agent's decoder marks a TCP payload, or an HTTP
// message's body, that is hex digits and nothing else
// (agent/capture/hexhint.go, event.HintHexData); nethost/v6 keeps per source
// a decayed count (λ = 0.1, as the other content hints) of such packets:
//
//	host_hex_data  the source's packets that carry hex-encoded data
//
// log1p-scaled. Both ends of a channel count: the infected host for its
// posts, the server for its answers. The first DimV5 features are
// nethost/v5's, bit for bit (TestPrefixVersions).
//
// Records from an agent older than the hint carry no mark: the feature is
// then 0, as for a source that sent no such payload.

// NameV6 is the name of the feature set nethost/v6.
const NameV6 = "nethost/v6"

// HexDataDim is the number of features nethost/v6 adds to nethost/v5's.
const HexDataDim = 1

// DimV6 is the number of nethost/v6 features per packet.
const DimV6 = DimV5 + HexDataDim

var hexDataNames = [HexDataDim]string{"host_hex_data"}

// NamesV6 returns the nethost/v6 feature names in output order (a fresh
// copy).
func NamesV6() []string { return append(NamesV5(), hexDataNames[:]...) }

// extractHexData counts p's hex-data hint in its source's entry v and writes
// the nethost/v6 raw feature to raw[DimV5:].
func extractHexData(p *event.Packet, v *hostVal, raw *Raw) {
	if p.VLAN&event.HintHexData != 0 {
		v.hexData++
	}
	raw[DimV5] = v.hexData
}
