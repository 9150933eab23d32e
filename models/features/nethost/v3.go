package nethost

import "github.com/vigil-edge/vigil/plugins/sdk/event"

// nethost/v3 is nethost/v2 followed by WebDim features for attacks on web
// applications, which no rate or timing of the packets shows: the DVWA
// captures' SQL injections and directory traversal were invisible to every
// earlier set (docs/models.md, section 3). The agent's decoder reads the
// request line of HTTP requests and sets two content-hint flags on the
// packet record (agent/capture/httphint.go: libinjection for SQL injection
// and XSS in query values, ".." path segments); nethost/v3 keeps per source
// a decayed count (λ = 0.1, as arp_mac_changes) of each:
//
//	host_http_injection  the source's HTTP requests whose query carries SQL
//	                     injection or XSS (event.FlagHTTPInjection)
//	host_http_traversal  its requests whose target climbs directories
//	                     (event.FlagHTTPTraversal)
//
// both log1p-scaled. The count stays up for tens of seconds after the
// request, so the attacker's other packets (its handshakes, the rest of
// its session) carry it too. The first DimV2 features are nethost/v2's, bit
// for bit (TestV3Prefix).
//
// Records from an agent older than the content hints carry neither flag:
// the two features are then 0, as for a source that sent no such request.

// NameV3 is the name of the feature set nethost/v3.
const NameV3 = "nethost/v3"

// WebDim is the number of features nethost/v3 adds to nethost/v2's.
const WebDim = 2

// DimV3 is the number of nethost/v3 features per packet.
const DimV3 = DimV2 + WebDim

var webNames = [WebDim]string{"host_http_injection", "host_http_traversal"}

// NamesV3 returns the nethost/v3 feature names in output order (a fresh
// copy).
func NamesV3() []string { return append(NamesV2(), webNames[:]...) }

// extractWeb counts p's content hints in its source's entry v and writes
// the nethost/v3 raw features to raw[DimV2:].
func extractWeb(p *event.Packet, v *hostVal, raw *Raw) {
	if h := p.Flags & (event.FlagHTTPInjection | event.FlagHTTPTraversal); h != 0 {
		if h&event.FlagHTTPInjection != 0 {
			v.httpInject++
		}
		if h&event.FlagHTTPTraversal != 0 {
			v.httpTraversal++
		}
	}
	raw[DimV2] = v.httpInject
	raw[DimV2+1] = v.httpTraversal
}
