// Package coverage measures how much of each labelled attack the agent's
// findings cover, as an analyst sees them: it runs `vigil-agent scan --json`
// (the real agent, plugin, model and aggregation) on attack captures with a
// known attacker and on benign captures, and counts the packets that fall
// inside a finding of their own source:
//
//   - in its span, from first_seen (the first anomalous packet) to
//     last_seen;
//   - with its lead-in, from lead_in.since (the source's first packet in the
//     seconds before first_seen; plugins/netflow/lead.go) to last_seen.
//
// Per-packet detection (is this packet's score above the threshold?) is the
// model's measure and models/cmd/vigil-train-baseline reports it; this is
// the system's: an attacker packet counts when a finding reported at the
// agent's default severity spans it. The same rule applied to held-out
// benign captures gives the share of benign packets inside some finding,
// the false-positive rate at the same level (docs/models.md, section 20).
package coverage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"slices"
	"time"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/models/dataset"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Span is one finding as coverage needs it: its source and the time it
// spans (Unix ns).
type Span struct {
	Src       netip.Addr // zero for a finding without an IP source (then MAC)
	MAC       string
	Severity  string
	Model     string // name-version digest
	First     int64
	Last      int64
	LeadSince int64 // 0: no lead-in
}

// scanJSON is the part of `vigil-agent scan --json` that coverage reads.
type scanJSON struct {
	Summary struct {
		Packets  uint64 `json:"packets"`
		Findings int    `json:"findings"`
	} `json:"summary"`
	Findings []struct {
		FirstSeen time.Time `json:"first_seen"`
		LastSeen  time.Time `json:"last_seen"`
		Severity  string    `json:"severity"`
		Model     struct {
			Name    string `json:"name"`
			Version uint64 `json:"version"`
			Digest  string `json:"digest"`
		} `json:"model"`
		Context struct {
			SrcIP  string `json:"src_ip"`
			SrcMAC string `json:"src_mac"`
		} `json:"context"`
		LeadIn *struct {
			Since time.Time `json:"since"`
		} `json:"lead_in"`
	} `json:"findings"`
}

// MaxScanOutput bounds the scan output ParseScan reads.
const MaxScanOutput = 64 << 20

// ParseScan reads `vigil-agent scan --json` output. A finding whose times
// are out of order, whose lead-in comes after its first packet, or whose
// source is neither an IP address nor empty is refused: coverage would
// count wrongly.
func ParseScan(r io.Reader) ([]Span, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxScanOutput+1))
	if err != nil {
		return nil, fmt.Errorf("read scan output: %w", err)
	}
	if len(b) > MaxScanOutput {
		return nil, fmt.Errorf("scan output larger than %d bytes", MaxScanOutput)
	}
	var s scanJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("parse scan output: %w", err)
	}
	if s.Summary.Findings != len(s.Findings) {
		return nil, fmt.Errorf("parse scan output: summary says %d findings, %d listed", s.Summary.Findings, len(s.Findings))
	}
	out := make([]Span, 0, len(s.Findings))
	for i, f := range s.Findings {
		sp := Span{MAC: f.Context.SrcMAC, Severity: f.Severity, First: f.FirstSeen.UnixNano(), Last: f.LastSeen.UnixNano()}
		if f.Model.Name != "" {
			sp.Model = fmt.Sprintf("%s-%d %s", f.Model.Name, f.Model.Version, f.Model.Digest)
		}
		if f.Context.SrcIP != "" {
			a, err := netip.ParseAddr(f.Context.SrcIP)
			if err != nil {
				return nil, fmt.Errorf("finding %d: source %q: %w", i+1, f.Context.SrcIP, err)
			}
			sp.Src = a.Unmap()
		}
		if sp.Last < sp.First {
			return nil, fmt.Errorf("finding %d: last_seen %s before first_seen %s", i+1, f.LastSeen, f.FirstSeen)
		}
		if f.LeadIn != nil {
			sp.LeadSince = f.LeadIn.Since.UnixNano()
			if sp.LeadSince > sp.First || sp.LeadSince == 0 {
				return nil, fmt.Errorf("finding %d: lead-in from %s, first_seen %s", i+1, f.LeadIn.Since, f.FirstSeen)
			}
		}
		out = append(out, sp)
	}
	return out, nil
}

// Packet is what coverage needs of a packet: its source and time.
type Packet struct {
	Src netip.Addr
	MAC [6]byte
	TS  int64
}

// ReadPackets reads at most max packets of the capture at path through the
// agent's own decoder (agent/capture), so that sources are what the agent
// saw.
func ReadPackets(ctx context.Context, path string, max int) ([]Packet, error) {
	src, err := capture.OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var out []Packet
	buf := make([]event.Packet, 1024)
	for len(out) < max {
		n, err := src.Next(ctx, buf[:min(len(buf), max-len(out))])
		for i := range buf[:n] {
			p := &buf[i]
			out = append(out, Packet{Src: p.SrcAddr().Unmap(), MAC: p.SrcMAC, TS: p.TimestampNs})
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			if len(out) > 0 && ctx.Err() == nil {
				return out, nil // keep what decoded before a damaged record, as the agent does
			}
			return nil, err
		}
	}
	return out, nil
}

// Index finds the findings of a source quickly.
type Index struct {
	byIP  map[netip.Addr][]Span
	byMAC map[string][]Span
}

// NewIndex indexes spans by source.
func NewIndex(spans []Span) *Index {
	x := &Index{byIP: map[netip.Addr][]Span{}, byMAC: map[string][]Span{}}
	for _, s := range spans {
		if s.Src.IsValid() {
			x.byIP[s.Src] = append(x.byIP[s.Src], s)
		} else if s.MAC != "" {
			x.byMAC[s.MAC] = append(x.byMAC[s.MAC], s)
		}
	}
	return x
}

// Covered reports whether a finding of p's source spans p's time: from its
// first_seen, or with lead from its lead-in's start when it has one, to its
// last_seen.
func (x *Index) Covered(p Packet, lead bool) bool {
	spans := x.byIP[p.Src]
	if !p.Src.IsValid() {
		spans = x.byMAC[macString(p.MAC)]
	}
	for _, s := range spans {
		start := s.First
		if lead && s.LeadSince != 0 {
			start = s.LeadSince
		}
		if p.TS >= start && p.TS <= s.Last {
			return true
		}
	}
	return false
}

func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// Count is the packets of one kind and how many findings cover.
type Count struct {
	Packets  int `json:"packets"`
	Span     int `json:"in_finding_span"`
	WithLead int `json:"in_finding_span_with_lead_in"`
}

// Add counts one packet.
func (c *Count) Add(x *Index, p Packet) {
	c.Packets++
	if x.Covered(p, false) {
		c.Span++
	}
	if x.Covered(p, true) {
		c.WithLead++
	}
}

// Fractions returns the covered shares (0 without packets).
func (c Count) Fractions() (span, lead float64) {
	if c.Packets == 0 {
		return 0, 0
	}
	return float64(c.Span) / float64(c.Packets), float64(c.WithLead) / float64(c.Packets)
}

// Scanner runs the agent on one capture and returns its output.
type Scanner func(ctx context.Context, path string) ([]byte, error)

// AgentScanner runs `agent scan --pcap PATH --json` with extra arguments.
func AgentScanner(agent string, extra ...string) Scanner {
	return func(ctx context.Context, path string) ([]byte, error) {
		args := append([]string{"scan", "--pcap", path, "--json"}, extra...)
		cmd := exec.CommandContext(ctx, agent, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			msg := bytes.TrimSpace(stderr.Bytes())
			if len(msg) > 400 {
				msg = msg[len(msg)-400:]
			}
			return nil, fmt.Errorf("%s scan %s: %w: %s", agent, path, err, msg)
		}
		return out, nil
	}
}

// Attack is one labelled attack capture's result.
type Attack struct {
	Path      string   `json:"path"`
	What      string   `json:"what"`
	Attacker  string   `json:"attacker"`
	Findings  int      `json:"findings"`
	Models    []string `json:"models,omitempty"` // the findings' models (name-version digest)
	Positives Count    `json:"attacker_packets"`
}

// Benign is the result over benign captures.
type Benign struct {
	Captures int   `json:"captures"`
	Findings int   `json:"findings"`
	Packets  Count `json:"packets"`
	Skipped  int   `json:"skipped"`
}

// MaxPackets bounds the packets read per capture.
const MaxPackets = 4 << 20

// EvalAttack scans one labelled capture and counts its positives (packets
// that a label calls the attacker's) covered by the attacker's findings.
func EvalAttack(ctx context.Context, scan Scanner, path string, labels []dataset.Label) (Attack, error) {
	a := Attack{Path: path}
	for _, l := range labels {
		if a.What == "" {
			a.What = l.What
		}
		if l.Attacker.IsValid() && a.Attacker == "" {
			a.Attacker = l.Attacker.String()
		}
	}
	out, err := scan(ctx, path)
	if err != nil {
		return a, err
	}
	spans, err := ParseScan(bytes.NewReader(out))
	if err != nil {
		return a, fmt.Errorf("%s: %w", path, err)
	}
	a.Findings = len(spans)
	for _, sp := range spans {
		if sp.Model != "" && !slices.Contains(a.Models, sp.Model) {
			a.Models = append(a.Models, sp.Model)
		}
	}
	pkts, err := ReadPackets(ctx, path, MaxPackets)
	if err != nil {
		return a, err
	}
	x := NewIndex(spans)
	for _, p := range pkts {
		if slices.ContainsFunc(labels, func(l dataset.Label) bool { return l.Positive(p.Src, p.MAC, p.TS) }) {
			a.Positives.Add(x, p)
		}
	}
	return a, nil
}

// EvalBenign scans benign captures and counts their packets covered by any
// finding of their source. A capture the agent cannot read is skipped and
// counted.
func EvalBenign(ctx context.Context, scan Scanner, paths []string) (Benign, error) {
	var b Benign
	for _, p := range paths {
		out, err := scan(ctx, p)
		if err != nil {
			if ctx.Err() != nil {
				return b, ctx.Err()
			}
			b.Skipped++
			continue
		}
		spans, err := ParseScan(bytes.NewReader(out))
		if err != nil {
			return b, fmt.Errorf("%s: %w", p, err)
		}
		pkts, err := ReadPackets(ctx, p, MaxPackets)
		if err != nil {
			b.Skipped++
			continue
		}
		b.Captures++
		b.Findings += len(spans)
		x := NewIndex(spans)
		for _, q := range pkts {
			b.Packets.Add(x, q)
		}
	}
	return b, nil
}
