package nethost

import "github.com/vigil-edge/vigil/plugins/sdk/event"

// nethost/v7 is nethost/v6 followed by CookieReuseDim features for hijacked
// web sessions: a client that presents another client's session cookie to a
// server. The hijacker's requests are ordinary HTTP of ordinary sizes and
// timing, so no earlier feature separated the shared data's
// sessionhijacking capture from web browsing (docs/models.md, sections 3
// and 19). The agent's decoder marks an HTTP request that presents a
// session cookie which another client address presented to the same server
// within an hour (agent/capture/cookiehint.go, event.HintCookieReuse);
// nethost/v7 keeps per source a decayed count (λ = 0.1, as the other content
// hints) of such requests:
//
//	host_cookie_reuse  the source's requests with another client's session cookie
//
// log1p-scaled. Only the second client counts (the cookie's first client
// stays its owner). The first DimV6 features are nethost/v6's, bit for bit
// (TestPrefixVersions).
//
// Records from an agent older than the hint carry no mark: the feature is
// then 0, as for a source that presented no one else's cookie.

// NameV7 is the name of the feature set nethost/v7.
const NameV7 = "nethost/v7"

// CookieReuseDim is the number of features nethost/v7 adds to nethost/v6's.
const CookieReuseDim = 1

// DimV7 is the number of nethost/v7 features per packet.
const DimV7 = DimV6 + CookieReuseDim

var cookieReuseNames = [CookieReuseDim]string{"host_cookie_reuse"}

// NamesV7 returns the nethost/v7 feature names in output order (a fresh
// copy).
func NamesV7() []string { return append(NamesV6(), cookieReuseNames[:]...) }

// extractCookieReuse counts p's cookie-reuse hint in its source's entry v
// and writes the nethost/v7 raw feature to raw[DimV6:].
func extractCookieReuse(p *event.Packet, v *hostVal, raw *Raw) {
	if p.VLAN&event.HintCookieReuse != 0 {
		v.cookieReuse++
	}
	raw[DimV6] = v.cookieReuse
}
