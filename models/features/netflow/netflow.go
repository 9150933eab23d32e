// Package netflow implements the feature set netflow/v1: Kitsune's
// AfterImage damped incremental statistics (Mirsky et al., "Kitsune: An
// Ensemble of Autoencoders for Online Network Intrusion Detection", NDSS
// 2018), the 115 features of the paper, computed per packet from
// event.Packet records.
//
// For every decay window λ in {5, 3, 1, 0.1, 0.01} (weights decay as
// 2^(-λ·Δt), Δt in seconds) and the packet's size on the wire:
//
//	MI_dir  source MAC+IP:                 weight, mean, std            (3)
//	H       source IP:                     weight, mean, std            (3)
//	HH      channel src IP -> dst IP:      weight, mean, std, magnitude,
//	                                       radius, covariance, pcc      (7)
//	HH_jit  channel inter-arrival times:   weight, mean, std            (3)
//	HpHp    socket src:port -> dst:port:   as HH                        (7)
//
// 23 × 5 = 115 features, ordered by group, then window, then statistic, as
// Names returns them (e.g. "MI_dir_L5_weight", "HH_L0.1_pcc").
//
// Differences from the reference code (AfterImage.py / netStat.py), on
// purpose:
//   - Work and memory per packet are O(1). The reference registers every
//     pairing of a stream and updates all of them on each packet (a port scan
//     makes that quadratic) and never forgets. Here each channel and each
//     socket pair is one fixed-size entry holding both directions and their
//     residual products, keyed by the unordered pair; the tables have a fixed
//     capacity and evict the least recently seen entry of a probe window.
//   - The 2D statistics relate the two directions of the same channel or
//     socket pair (the paper's definition), updated once per packet; the
//     reference updates the pair's residual twice per packet and shares the
//     source stream among all of its channels.
//   - The 1D "std" is the standard deviation (the reference outputs the
//     variance under that name). Radius is sqrt(var_i² + var_j²) and
//     magnitude sqrt(μ_i² + μ_j²), as in the reference.
//   - Sockets are keyed by address, port and IP protocol (the reference does
//     not separate TCP and UDP ports). ICMP sockets have no ports, ARP
//     sockets are the MAC pair, and frames without IP use MACs for addresses,
//     as in the reference.
//   - Statistics are kept in Welford form (weight, mean, squared deviations),
//     float32 for the fast windows (λ = 5, 3, 1) and float64 for the slow
//     ones, whose weights grow large on busy streams.
//
// Extraction is deterministic: the same packets in the same order with the
// same Config give the same features.
//
// Speed (about 3x the straightforward code, the frozen copy in
// internal/v1ref that the tests compare against): the state updates are
// the same float operations in the same order, so the state stays
// bit-identical to the straightforward code's and the features differ
// from it by at most a float32 rounding or two (the shared reciprocal in
// the 2D outputs). The gains come from keys of machine words, decay
// factors from an exponential that vector lanes compute exactly
// (fmath.Exp2Poly, the reference's too; the scalar code caches them per
// time step), computing a twin pair's update once (MI_dir and H, HH and HpHp
// whose states are bit-identical, see update), a shortcut for new entries
// (scans), no NaN/Inf pass (see stats.go), and, in ExtractBatch, table
// look-ups issued a run of packets ahead so that their cache misses
// overlap. Built with GOEXPERIMENT=simd on amd64, on CPUs with AVX-512,
// the window updates run the five windows as vector lanes
// (stats_simd_amd64.go), bit for bit the scalar code's results.
package netflow

import (
	"encoding/binary"
	"math/bits"
	"runtime"
	"unsafe"

	"github.com/vigil-edge/vigil/models/features/internal/flowtab"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Name is the feature-set name that model manifests refer to.
const Name = "netflow/v1"

// Dim is the number of features per packet.
const Dim = 115

// Offsets of the feature groups in the output vector.
const (
	offMI   = 0
	offH    = offMI + 3*nLambda
	offHH   = offH + 3*nLambda
	offJit  = offHH + 7*nLambda
	offHpHp = offJit + 3*nLambda
)

var stat1Names = []string{"weight", "mean", "std"}
var stat2Names = []string{"weight", "mean", "std", "magnitude", "radius", "covariance", "pcc"}

var names = func() []string {
	groups := []struct {
		prefix string
		stats  []string
	}{{"MI_dir", stat1Names}, {"H", stat1Names}, {"HH", stat2Names}, {"HH_jit", stat1Names}, {"HpHp", stat2Names}}
	var n []string
	for _, g := range groups {
		for _, l := range lambdaLabels {
			for _, s := range g.stats {
				n = append(n, g.prefix+"_L"+l+"_"+s)
			}
		}
	}
	if len(n) != Dim {
		panic("netflow: feature names do not match Dim")
	}
	return n
}()

// Names returns the feature names in output order (a fresh copy).
func Names() []string { return append([]string(nil), names...) }

// Config bounds the extractor's state. Zero values take the defaults.
type Config struct {
	// MaxSockets caps the socket-pair table (HpHp), the biggest one: about
	// one entry per transport flow. Default 65536.
	MaxSockets int
	// MaxChannels caps the host-pair table (HH and HH_jit). Default 16384.
	MaxChannels int
	// MaxHosts caps each of the per-source tables (MI_dir and H). Default 16384.
	MaxHosts int
	// HashSeed seeds the table hash. Features depend on it only when tables
	// are full (which entries get evicted); a secret seed keeps outsiders from
	// crafting keys that evict each other's state.
	HashSeed uint64
}

// Default capacities.
const (
	DefaultMaxSockets  = 1 << 16
	DefaultMaxChannels = 1 << 14
	DefaultMaxHosts    = 1 << 14
)

// Key kinds: non-zero, so that a zero key marks an empty slot.
const (
	kindIP   = 1 // IP addresses (ARP: the protocol addresses)
	kindMAC  = 2 // frames without IP: MAC addresses
	kindARPs = 3 // ARP sockets: the MAC pair
)

// Keys are made of little-endian words of the addresses (an address is
// the 16 bytes of event.Packet's IP fields, or a MAC in the first 6 bytes),
// so that building, hashing and comparing them takes a few word operations.

// miKey: source MAC and IP. mac holds the MAC's 6 bytes and the kind in
// its top byte.
type miKey struct{ ip0, ip1, mac uint64 }

// hostKey: source IP.
type hostKey struct{ ip0, ip1, kind uint64 }

// chanKey: the unordered address pair, a <= b in byte order.
type chanKey struct{ a0, a1, b0, b1, kind uint64 }

// sockKey: the unordered (address, port) pair, (a, pa) <= (b, pb); meta is
// pa<<32 | pb<<16 | proto<<8 | kind.
type sockKey struct{ a0, a1, b0, b1, meta uint64 }

type chanVal struct {
	hh      multi2
	jitLast [2]int64
	jit     [2]multi1
	seen    [2]bool
}

// batchSize is how many packets ExtractBatch looks up ahead of updating
// them: their table slots are loaded first, so that the cache misses of a
// batch overlap instead of following each other. 16 packets load about
// 200 cache lines, which stay in the L1 and L2 caches until they are used.
const batchSize = 16

// pktKeys is a packet's keys and hashes for the four tables.
type pktKeys struct {
	mi                     miKey
	host                   hostKey
	ch                     chanKey
	sock                   sockKey
	hMI, hHost, hCh, hSock uint64
	now                    int64
	size                   float64
	chDir, sockDir         int
}

// Extractor computes netflow/v1 features. It is not safe for concurrent use.
type Extractor struct {
	seed  uint64
	mi    flowtab.Table[miKey, multi1]
	host  flowtab.Table[hostKey, multi1]
	chans flowtab.Table[chanKey, chanVal]
	socks flowtab.Table[sockKey, multi2]
	dc    decayCache
	keys  [batchSize]pktKeys
	sink  uint64 // keeps the look-ahead loads from being optimised away
}

// New returns an extractor with empty state.
func New(cfg Config) *Extractor {
	if cfg.MaxSockets <= 0 {
		cfg.MaxSockets = DefaultMaxSockets
	}
	if cfg.MaxChannels <= 0 {
		cfg.MaxChannels = DefaultMaxChannels
	}
	if cfg.MaxHosts <= 0 {
		cfg.MaxHosts = DefaultMaxHosts
	}
	return &Extractor{
		seed:  cfg.HashSeed,
		mi:    flowtab.New[miKey, multi1](cfg.MaxHosts),
		host:  flowtab.New[hostKey, multi1](cfg.MaxHosts),
		chans: flowtab.New[chanKey, chanVal](cfg.MaxChannels),
		socks: flowtab.New[sockKey, multi2](cfg.MaxSockets),
	}
}

// le64 reads a little-endian word of an address.
func le64(b *[16]byte, i int) uint64 { return binary.LittleEndian.Uint64(b[i : i+8]) }

// cmpAddr compares addresses (a0, a1) and (b0, b1) in byte order, as
// bytes.Compare does their 16 bytes: -1, 0 or 1.
func cmpAddr(a0, a1, b0, b1 uint64) int {
	if a0 != b0 {
		if bits.ReverseBytes64(a0) < bits.ReverseBytes64(b0) {
			return -1
		}
		return 1
	}
	if a1 != b1 {
		if bits.ReverseBytes64(a1) < bits.ReverseBytes64(b1) {
			return -1
		}
		return 1
	}
	return 0
}

// prepare computes p's keys and hashes into k.
func (e *Extractor) prepare(p *event.Packet, k *pktKeys) {
	k.now = p.TimestampNs
	k.size = float64(p.Length)

	// Source and destination identities.
	var s0, s1, d0, d1 uint64
	kind := uint64(kindIP)
	if p.Flags&(event.FlagIPv4|event.FlagIPv6|event.FlagARP) != 0 {
		s0, s1 = le64(&p.SrcIP, 0), le64(&p.SrcIP, 8)
		d0, d1 = le64(&p.DstIP, 0), le64(&p.DstIP, 8)
	} else {
		kind = kindMAC
		s0, d0 = macWord(&p.SrcMAC), macWord(&p.DstMAC)
	}
	seed := e.seed

	// MI_dir: source MAC + IP.
	mac := macWord(&p.SrcMAC)
	// The keys are written field by field: a composite literal is built on
	// the stack with 8-byte stores and copied with 16-byte loads, which
	// cannot be forwarded from those stores and wait for them to retire.
	k.mi.ip0, k.mi.ip1, k.mi.mac = s0, s1, mac|kind<<56
	k.hMI = flowtab.Mix(seed^s0^kind<<56, s1^mac)
	// H: source IP.
	k.host.ip0, k.host.ip1, k.host.kind = s0, s1, kind
	k.hHost = flowtab.Mix(seed^s0^kind<<56, s1)
	// HH and HH_jit: the channel, keyed by the unordered address pair.
	c := cmpAddr(s0, s1, d0, d1)
	a0, a1, b0, b1, dir := s0, s1, d0, d1, 0
	if c > 0 {
		a0, a1, b0, b1, dir = d0, d1, s0, s1, 1
	}
	k.ch.a0, k.ch.a1, k.ch.b0, k.ch.b1, k.ch.kind = a0, a1, b0, b1, kind
	k.chDir = dir
	h := flowtab.Mix(seed^a0^kind<<56, a1)
	k.hCh = flowtab.Mix(h^b0, b1)
	// HpHp: the socket pair.
	var proto, pa, pb uint64
	sk := kind
	switch {
	case p.Flags&event.FlagARP != 0:
		sk = kindARPs
		s0, s1, d0, d1 = mac, 0, macWord(&p.DstMAC), 0
		c = cmpAddr(s0, s1, d0, d1)
	case kind == kindIP:
		proto = uint64(p.Proto)
		if (p.Proto == event.ProtoTCP || p.Proto == event.ProtoUDP) && p.Flags&event.FlagFragment == 0 {
			pa, pb = uint64(p.SrcPort), uint64(p.DstPort)
		}
	}
	a0, a1, b0, b1, dir = s0, s1, d0, d1, 0
	if c > 0 || (c == 0 && pa > pb) {
		a0, a1, b0, b1, pa, pb, dir = d0, d1, s0, s1, pb, pa, 1
	}
	k.sock.a0, k.sock.a1, k.sock.b0, k.sock.b1, k.sock.meta = a0, a1, b0, b1, pa<<32|pb<<16|proto<<8|sk
	k.sockDir = dir
	h = flowtab.Mix(seed^a0^sk<<56^proto<<48, a1^pa<<32^pb)
	k.hSock = flowtab.Mix(h^b0, b1)
}

// touch loads the table slots k's lookups start at.
func (e *Extractor) touch(k *pktKeys) {
	e.sink += e.mi.Prefetch(k.hMI) + e.host.Prefetch(k.hHost) + e.chans.Prefetch(k.hCh) + e.socks.Prefetch(k.hSock)
}

// Extract updates the state with p and writes its Dim features to out,
// which must hold at least Dim values.
func (e *Extractor) Extract(p *event.Packet, out []float32) {
	o := (*[Dim]float32)(out[:Dim])
	k := &e.keys[0]
	e.prepare(p, k)
	e.touch(k)
	e.update(k, o)
	runtime.KeepAlive(e) // update wrote through pointers into e's tables (flowtab)
}

// ExtractBatch is Extract for each packet of pkts in order, writing packet
// i's features to out[i*Dim:(i+1)*Dim]; out must hold len(pkts)*Dim
// values. It computes the same features as Extract, faster: it looks the
// packets up in runs of a few before updating them, so that the memory
// accesses of a run overlap.
func (e *Extractor) ExtractBatch(pkts []event.Packet, out []float32) {
	out = out[:len(pkts)*Dim]
	for len(pkts) > 0 {
		n := min(len(pkts), batchSize)
		for i := range n {
			k := &e.keys[i]
			e.prepare(&pkts[i], k)
			e.touch(k)
		}
		for i := range n {
			e.update(&e.keys[i], (*[Dim]float32)(out[i*Dim:(i+1)*Dim]))
		}
		pkts, out = pkts[n:], out[n*Dim:]
	}
	runtime.KeepAlive(e) // update wrote through pointers into e's tables (flowtab)
}

// update applies a prepared packet to the state and writes its features.
//
// The MAC+IP and the IP statistics of a source almost always see the same
// packets (one MAC per IP), and so do a channel and its socket pair when
// the two hosts talk over one connection: their states are then
// bit-identical before the packet and after it. On the reference capture
// that holds for 90% and 66% of the packets. update checks it (a
// comparison of the states' bytes and clocks) and computes such a pair's
// update once, copying state and features to the twin: the features are
// exactly those of two separate updates.
func (e *Extractor) update(k *pktKeys, o *[Dim]float32) {
	now, size := k.now, k.size
	// A twin's copy waits until the end: the state and features it copies
	// were just stored by the vector code (masked and overlapping stores),
	// and loading them at once would stall until those stores retire; by
	// the end of the packet they have.
	var mv, hv *multi1
	var ml, hl *int64
	miTwin := false
	{
		var mNew, hNew bool
		mv, ml, mNew = e.mi.Acquire(&k.mi, k.hMI, now)
		hv, hl, hNew = e.host.Acquire(&k.host, k.hHost, now)
		mo := (*[3 * nLambda]float32)(o[offMI:offH])
		if mNew {
			mv.fresh(size, mo)
		} else {
			miTwin = *ml == *hl && twins1(mv, hv)
			mv.update(e.dc.advance(ml, now), size, mo)
		}
		if !miTwin {
			ho := (*[3 * nLambda]float32)(o[offH:offHH])
			if hNew {
				hv.fresh(size, ho)
			} else {
				hv.update(e.dc.advance(hl, now), size, ho)
			}
		}
	}
	{
		s, cl, cNew := e.chans.Acquire(&k.ch, k.hCh, now)
		sv, sl, sNew := e.socks.Acquire(&k.sock, k.hSock, now)
		dir := k.chDir & 1
		co := (*[7 * nLambda]float32)(o[offHH:offJit])
		so := (*[7 * nLambda]float32)(o[offHpHp:Dim])
		twin := false
		if cNew {
			s.hh.fresh(dir, size, co)
		} else {
			twin = dir == k.sockDir && *cl == *sl && twins2(&s.hh, sv)
			s.hh.update(e.dc.advance(cl, now), dir, size, co)
		}
		jo := (*[3 * nLambda]float32)(o[offJit:offHpHp])
		if !s.seen[dir] { // the direction's first packet: inter-arrival 0
			s.seen[dir] = true
			s.jitLast[dir] = now
			s.jit[dir].fresh(0, jo)
		} else {
			jit := 0.0
			if d := now - s.jitLast[dir]; d > 0 {
				jit = float64(d) * 1e-9
			}
			s.jit[dir].update(e.dc.advance(&s.jitLast[dir], now), jit, jo)
		}
		switch {
		case twin:
			*sv, *sl = s.hh, *cl
			*so = *co
		case sNew:
			sv.fresh(k.sockDir, size, so)
		default:
			sv.update(e.dc.advance(sl, now), k.sockDir, size, so)
		}
	}
	if miTwin {
		*hv, *hl = *mv, *ml
		*(*[3 * nLambda]float32)(o[offH:offHH]) = *(*[3 * nLambda]float32)(o[offMI:offH])
	}
}

// macWord is a MAC's 6 bytes as a little-endian word.
func macWord(m *[6]byte) uint64 {
	return uint64(binary.LittleEndian.Uint32(m[0:4])) | uint64(binary.LittleEndian.Uint16(m[4:6]))<<32
}

// TableStats describes one state table.
type TableStats struct {
	Name       string // "MI_dir", "H", "HH", "HpHp"
	Entries    int    // occupied slots
	Capacity   int    // the most slots the table grows to
	Slots      int    // slots allocated now
	Evictions  uint64 // entries replaced because their probe window was full
	EntryBytes int    // bytes per slot (key, clock and statistics)
}

// Stats reports the extractor's state tables and memory.
type Stats struct {
	Tables [4]TableStats
	// MemoryBytes is the memory the tables hold (their slot arrays grow
	// with use up to their capacities) plus the extractor's fixed scratch
	// (ScratchBytes).
	MemoryBytes int64
	// ScratchBytes is the fixed memory besides the tables: the decay
	// factors and the look-ahead keys, about 3 KB (and the scalar code's
	// decay cache, 288 KB, where the window updates run without SIMD).
	ScratchBytes int64
	// UsedBytes is the memory of the occupied entries.
	UsedBytes int64
}

// Stats returns the current table statistics.
func (e *Extractor) Stats() Stats {
	var st Stats
	st.Tables[0] = tableStats("MI_dir", &e.mi)
	st.Tables[1] = tableStats("H", &e.host)
	st.Tables[2] = tableStats("HH", &e.chans)
	st.Tables[3] = tableStats("HpHp", &e.socks)
	for _, t := range st.Tables {
		st.MemoryBytes += int64(t.Slots * t.EntryBytes)
		st.UsedBytes += int64(t.Entries * t.EntryBytes)
	}
	st.ScratchBytes = e.dc.bytes() + int64(unsafe.Sizeof(e.keys))
	st.MemoryBytes += st.ScratchBytes
	return st
}

func tableStats[K comparable, V any](name string, t *flowtab.Table[K, V]) TableStats {
	return TableStats{Name: name, Entries: t.Len(), Capacity: t.Cap(), Slots: t.Slots(), Evictions: t.Evictions(), EntryBytes: t.EntryBytes()}
}
