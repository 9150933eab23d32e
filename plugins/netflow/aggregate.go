package netflow

import (
	"math"
	"net/netip"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Pre-aggregation of anomalies.
//
// During a scan nearly every packet is anomalous, and the agent merges the
// anomalous packets of a source into one finding per window anyway
// (agent/detect's Aggregator). Sending each packet as its own sdk.Anomaly,
// with a context map of a dozen strings that both processes build, parse
// and throw away, cost about 15 µs of CPU per anomalous packet: a port scan
// ran at a fraction of the benign rate. So the detector sends, per batch,
// one anomaly per source and aggregation window (sdk.Anomaly.Aggregate):
// the count, first and last time, bytes, kinds, distinct destination ports
// and addresses, and the score, threshold and top features of the packet
// with the largest score/threshold ratio (the first of equals, as the agent
// picks it); the context is the first packet's.
//
// So that a merged anomaly never straddles two of the agent's findings, the
// detector mirrors the agent's window rule per source: a window starts at a
// source's first anomalous packet and ends Options.AggregateWindow (the
// agent's window, default 30 s) later; an anomalous packet past it starts the
// next window and a new merged anomaly. The mirror is exact for packets in
// time order with the agent's default window; it is approximate only when
// the agent evicts findings (more than its MaxOpen sources at once) or runs
// with another window than the plugin (then a merged anomaly may straddle a
// window boundary of the agent by up to one batch).

// DefaultAggregateWindow is the default Options.AggregateWindow: the agent's
// default aggregation window.
const DefaultAggregateWindow = 30 * time.Second

// maxWindows bounds the per-source window mirror.
const maxWindows = 1 << 14

type srcKey struct {
	addr [16]byte
	kind uint8
	mac  [6]byte // ARP only
}

// aggKey is the source of an anomalous packet as the agent's aggregator
// keys it (agent/detect): its source address, its MAC without one, and for
// an ARP claim (nethost's ARPClaim: an unsolicited reply, a new MAC for the
// address) the pair of claimed address and frame source MAC, so that a
// poisoner's claims are not merged with the traffic of the address it
// claims.
func aggKey(p *event.Packet, claim arpClaim) srcKey {
	addr, kind := sourceKey(p)
	k := srcKey{addr: addr, kind: kind}
	if claim.is {
		k.kind, k.mac = 3, p.SrcMAC
	}
	return k
}

// aggState is the detector's pre-aggregation state: the window mirror
// (across batches) and the current batch's open records.
type aggState struct {
	windows map[srcKey]int64 // window start (packet time) per source
	recs    map[srcKey]int32 // open record per source in this batch
	build   []aggBuild       // per record of this batch
	ports   map[uint32]struct{}
	addrs   map[addrKey]struct{}
}

type addrKey struct {
	rec  int32
	addr netip.Addr
}

// aggBuild is one merged anomaly being built.
type aggBuild struct {
	first, max int     // packet index (in the chunk) of the first and the largest
	maxSlot    int     // feature-set slot of the largest
	maxRatio   float64 // as the agent computes it: float64(score)/float64(threshold)
	// beaconAt is the packet whose beacon evidence the anomaly carries when
	// the beacon rule leads it: of the record's beacon-flagged packets, the
	// one with the most connections, the later of equals, as the agent
	// picks among single anomalies (-1: none).
	beaconAt int
	agg      sdk.Aggregate
}

func newAggState() *aggState {
	return &aggState{windows: map[srcKey]int64{}, recs: map[srcKey]int32{},
		ports: map[uint32]struct{}{}, addrs: map[addrKey]struct{}{}}
}

// aggregate appends the anomalies of the chunk pkts (scored, with ratio and
// which set) to res, merged per source and window. base is the chunk's
// offset in the batch.
func (d *Detector) aggregate(pkts []event.Packet, base int, loaded *[nslots]*model, res *sdk.Result) {
	st := d.agg
	clear(st.recs)
	clear(st.ports)
	clear(st.addrs)
	st.build = st.build[:0]
	win := int64(d.opts.AggregateWindow)
	ratio, which := d.ratio[:len(pkts)], d.which[:len(pkts)]
	// The previous anomaly's source, its window start and record: runs of
	// anomalies from one source (a scan) skip the map lookups.
	var last srcKey
	var lastWs int64
	var lastR int32 = -1
	var lastDst netip.Addr // in lastR's address set, if lastDstOK
	lastDstOK := false
	lt := d.lead
	for i := range pkts {
		p := &pkts[i]
		var le *leadEntry
		if lt != nil {
			le = lt.entry(p)
		}
		if which[i] < 0 || !(ratio[i] > 1) {
			if le != nil {
				le.add(lt, p.TimestampNs, uint32(p.Length))
			}
			continue
		}
		s := int(which[i])
		k := aggKey(p, d.claim[i])
		ts := p.TimestampNs

		// The agent's rule: an anomaly more than the window after the
		// first one of its source's open finding starts a new finding.
		var ws int64
		var ok bool
		same := lastR >= 0 && k == last
		if same {
			ws, ok = lastWs, true
		} else {
			ws, ok = st.windows[k]
		}
		newWindow := !ok || ts-ws > win
		if newWindow {
			if !ok && len(st.windows) >= maxWindows {
				st.pruneWindows(ts, win)
			}
			st.windows[k] = ts
			ws = ts
		} else if ts < ws {
			st.windows[k] = ts
			ws = ts
		}
		var r int32
		if same && !newWindow {
			r = lastR
		} else {
			r, ok = st.recs[k]
			if !ok || newWindow {
				r = int32(len(st.build))
				st.recs[k] = r
				st.build = append(st.build, aggBuild{first: i, max: i, maxSlot: s, maxRatio: d.rowRatio(s, i, loaded), beaconAt: -1})
				g := &st.build[r].agg
				g.FirstNs, g.LastNs = ts, ts
				if newWindow && le != nil {
					// The window's first anomaly: the source's packets
					// just before it are the finding's lead-in.
					if first, n, b := le.lead(lt, ts); n > 0 {
						g.LeadFirstNs, g.LeadCount, g.LeadBytes = first, n, b
					}
				}
			}
		}
		sameRec := r == lastR
		last, lastWs, lastR = k, ws, r
		b := &st.build[r]
		g := &b.agg
		g.Count++
		g.Bytes += uint64(p.Length)
		g.FirstNs = min(g.FirstNs, ts)
		g.LastNs = max(g.LastNs, ts)
		switch {
		case p.Flags&event.FlagARP != 0:
			g.ARP++
		case p.Proto == event.ProtoTCP:
			if p.TCPFlags&(event.TCPSyn|event.TCPAck) == event.TCPSyn {
				g.TCPSyn++
			}
		case p.Proto == event.ProtoUDP:
			g.UDP++
		case p.Proto == event.ProtoICMP || p.Proto == event.ProtoICMPv6:
			g.ICMP++
		}
		if p.Flags&event.FlagARP == 0 && (p.Proto == event.ProtoTCP || p.Proto == event.ProtoUDP) {
			pk := uint32(r)<<16 | uint32(p.DstPort)
			if _, seen := st.ports[pk]; !seen {
				st.ports[pk] = struct{}{}
				g.DstPorts = append(g.DstPorts, p.DstPort)
			}
		}
		dstOK := false
		if p.Flags&(event.FlagIPv4|event.FlagIPv6|event.FlagARP) != 0 && !g.DstAddrsTruncated {
			ak := addrKey{rec: r, addr: p.DstAddr()}
			if sameRec && lastDstOK && ak.addr == lastDst {
				// the previous anomaly of this record went to the same
				// address: already in the set
				dstOK = true
			} else if _, seen := st.addrs[ak]; seen {
				dstOK = true
			} else if len(g.DstAddrs) < sdk.MaxAggregateAddrs {
				st.addrs[ak] = struct{}{}
				g.DstAddrs = append(g.DstAddrs, ak.addr)
				dstOK = true
			} else {
				g.DstAddrsTruncated = true
			}
			lastDst = ak.addr
		}
		lastDstOK = dstOK
		if s == slotBeacon && (b.beaconAt < 0 || d.beaconHit[i].Connections >= d.beaconHit[b.beaconAt].Connections) {
			b.beaconAt = i
		}
		if rt := d.rowRatio(s, i, loaded); rt > b.maxRatio {
			b.max, b.maxSlot, b.maxRatio = i, s, rt
		}
		if le != nil {
			le.add(lt, ts, uint32(p.Length))
			le.markAnomalous(lt, ts)
		}
	}
	for r := range st.build {
		b := &st.build[r]
		agg := b.agg
		a := d.anomalyOf(pkts, b.max, b.maxSlot, loaded, uint64(base+b.first), b.first, b.beaconAt)
		a.Aggregate = &agg
		res.Anomalies = append(res.Anomalies, a)
	}
}

// agentRatio is the agent's comparison key of an anomaly (agent/detect):
// score/threshold in float64, +Inf without a positive threshold or for a
// NaN score (flagged as the most anomalous: as NaN it would stay a
// record's maxRatio, as nothing compares greater, and hide the later
// packets as the agent would not).
func agentRatio(score, thr float32) float64 {
	if t := float64(thr); t > 0 {
		if r := float64(score) / t; r == r {
			return r
		}
	}
	return math.Inf(1)
}

// pruneWindows drops mirrored windows that ended before now (the next
// anomaly of such a source starts a new window anyway); if all are still
// open, it forgets them all (the mirror is then approximate, as is the
// agent, which evicts findings beyond its own cap).
func (s *aggState) pruneWindows(now, win int64) {
	for k, ws := range s.windows {
		if now-ws > win {
			delete(s.windows, k)
		}
	}
	if len(s.windows) >= maxWindows {
		clear(s.windows)
	}
}
