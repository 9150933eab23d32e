package dataset

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Label is the ground truth of one attack capture: what it is and, where
// known, the attacker's address and the time span of the attack. Packets
// sent by Attacker (inside the span, when one is given) are the positives,
// and where the truth knows the attacker's MAC (the lab's), every frame the
// attacker sent, whatever address it claims (forged ARP replies).
type Label struct {
	What        string
	Attacker    netip.Addr
	AttackerMAC net.HardwareAddr // nil: unknown
	Start       time.Time        // zero: from the beginning
	End         time.Time        // zero: to the end
}

// Positive reports whether a packet from src (frame source MAC mac) at ts
// (unix ns) is an attack packet under this label. Without an attacker
// address nothing is.
func (l Label) Positive(src netip.Addr, mac [6]byte, ts int64) bool {
	if !l.Attacker.IsValid() {
		return false
	}
	if src.Unmap() != l.Attacker.Unmap() && !bytes.Equal(l.AttackerMAC, mac[:]) {
		return false
	}
	if !l.Start.IsZero() && ts < l.Start.UnixNano() {
		return false
	}
	if !l.End.IsZero() && ts > l.End.UnixNano() {
		return false
	}
	return true
}

// Labels maps capture paths (as the label source names them, e.g.
// "stratosphere-slips/test12-icmp-portscan.pcap") to their truth.
type Labels map[string][]Label

// For returns the labels of the capture at path: those whose key is path
// itself or a trailing part of it at a path-element boundary (the longest
// such key wins), so MANIFEST.csv rows match captures wherever the data
// folder lives.
func (ls Labels) For(path string) []Label {
	path = filepath.ToSlash(filepath.Clean(path))
	best := ""
	for k := range ls {
		if (path == k || strings.HasSuffix(path, "/"+k)) && len(k) > len(best) {
			best = k
		}
	}
	if best == "" {
		return nil
	}
	return ls[best]
}

var (
	ipRE    = regexp.MustCompile(`\b(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})\b`)
	arrowRE = regexp.MustCompile(`(?:attacker |server |client )?(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}) ->|attacker (\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})`)
)

// ReadLabels reads ground truth from a MANIFEST.csv (columns path, ...,
// attack_or_content (4), attacker (5)) or, for a .json file, from a lab truth
// file (test/lab). In a manifest the attacker is the attacker column when it
// holds an address (IPv4 or IPv6), else "attacker X" or "X -> Y" in the description; rows
// without one label the capture for detection only. Manifest keys are the
// path with its leading "attacks/" removed, and the full path.
func ReadLabels(path string) (Labels, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open labels: %w", err)
	}
	defer f.Close()
	if strings.HasSuffix(path, ".json") {
		ls, err := parseTruth(f, filepath.Base(strings.TrimSuffix(path, ".json")))
		if err != nil {
			return nil, fmt.Errorf("read labels %s: %w", path, err)
		}
		return ls, nil
	}
	ls, err := ParseManifest(f)
	if err != nil {
		return nil, fmt.Errorf("read labels %s: %w", path, err)
	}
	return ls, nil
}

// ParseManifest parses MANIFEST.csv rows (header first) of class "attack"
// or under attacks/.
func ParseManifest(r io.Reader) (Labels, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	recs, err := cr.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	out := Labels{}
	for i, rec := range recs {
		if i == 0 || len(rec) < 6 || !(strings.HasPrefix(rec[0], "attacks/") || (len(rec) > 3 && rec[3] == "attack")) {
			continue
		}
		l := Label{What: rec[4]}
		if m := ipRE.FindString(rec[5]); m != "" {
			l.Attacker, _ = netip.ParseAddr(m)
		} else if a, ok := firstAddr(rec[5]); ok { // IPv6
			l.Attacker = a
		} else if m := arrowRE.FindStringSubmatch(rec[4]); m != nil {
			s := m[1]
			if s == "" {
				s = m[2]
			}
			l.Attacker, _ = netip.ParseAddr(s)
		}
		out[rec[0]] = append(out[rec[0]], l)
		if k := strings.TrimPrefix(rec[0], "attacks/"); k != rec[0] {
			out[k] = append(out[k], l)
		}
	}
	return out, nil
}

// firstAddr returns the first word of s that is an IP address (words are
// separated by spaces, commas, semicolons and brackets).
func firstAddr(s string) (netip.Addr, bool) {
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(" \t,;()[]", r) }) {
		if a, err := netip.ParseAddr(w); err == nil {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Truth is the ground-truth file of a lab run (test/lab writes it).
type Truth struct {
	Capture string         `json:"capture"` // the pcap file's base name
	Start   time.Time      `json:"start"`
	End     time.Time      `json:"end"`
	Hosts   []TruthHost    `json:"hosts"`
	Attacks []TruthAttack  `json:"attacks"`
	Notes   []string       `json:"notes,omitempty"`
	Extra   map[string]any `json:"extra,omitempty"`
}

// TruthHost is one lab host.
type TruthHost struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	MAC  string `json:"mac,omitempty"` // the lab's fixed MAC address (ARP attacks)
	Role string `json:"role"`
}

// TruthAttack is one attack run in the lab: who, against whom, when.
type TruthAttack struct {
	Name     string    `json:"name"` // nmap, hping3, hydra, beacon, dnstunnel
	Command  string    `json:"command"`
	Attacker string    `json:"attacker"`
	Victim   string    `json:"victim"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Skipped  string    `json:"skipped,omitempty"` // why it did not run (tool absent)
}

func parseTruth(r io.Reader, fallbackName string) (Labels, error) {
	var t Truth
	dec := json.NewDecoder(io.LimitReader(r, 16<<20))
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("parse truth: %w", err)
	}
	name := t.Capture
	if name == "" {
		name = fallbackName + ".pcap"
	}
	macs := map[netip.Addr]net.HardwareAddr{}
	for _, h := range t.Hosts {
		if h.MAC == "" {
			continue
		}
		addr, err := netip.ParseAddr(h.Addr)
		if err != nil {
			return nil, fmt.Errorf("parse truth: host %q: address: %w", h.Name, err)
		}
		mac, err := net.ParseMAC(h.MAC)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("parse truth: host %q: MAC %q is not an Ethernet address", h.Name, h.MAC)
		}
		macs[addr.Unmap()] = mac
	}
	out := Labels{}
	for _, a := range t.Attacks {
		if a.Skipped != "" {
			continue
		}
		addr, err := netip.ParseAddr(a.Attacker)
		if err != nil {
			return nil, fmt.Errorf("parse truth: attack %s: attacker: %w", a.Name, err)
		}
		out[name] = append(out[name], Label{What: a.Name + ": " + a.Command, Attacker: addr, AttackerMAC: macs[addr.Unmap()],
			Start: a.Start, End: a.End})
	}
	return out, nil
}
