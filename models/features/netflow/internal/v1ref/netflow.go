// Package v1ref is a frozen copy of the netflow/v1 extractor as it was
// before its speed-up (2026-11-27), kept only so that tests can check that
// the optimised extractor computes the same features (within float32
// rounding) on real and synthetic traffic. Do not use it elsewhere.
package v1ref

import (
	"bytes"
	"github.com/vigil-edge/vigil/models/features/internal/flowtab"
	"runtime"

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
	kindIP   uint8 = 1 // IP addresses (ARP: the protocol addresses)
	kindMAC  uint8 = 2 // frames without IP: MAC addresses
	kindARPs uint8 = 3 // ARP sockets: the MAC pair
)

type miKey struct {
	mac  [6]byte
	ip   [16]byte
	kind uint8
}

type hostKey struct {
	ip   [16]byte
	kind uint8
}

type chanKey struct {
	a, b [16]byte
	kind uint8
}

type sockKey struct {
	a, b   [16]byte
	pa, pb uint16
	proto  uint8
	kind   uint8
}

type chanVal struct {
	hh      multi2
	jitLast [2]int64
	jit     [2]multi1
	seen    [2]bool
}

// Extractor computes netflow/v1 features. It is not safe for concurrent use.
type Extractor struct {
	seed  uint64
	mi    flowtab.Table[miKey, multi1]
	host  flowtab.Table[hostKey, multi1]
	chans flowtab.Table[chanKey, chanVal]
	socks flowtab.Table[sockKey, multi2]
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

// advance moves an entry's clock to now and returns the decay factors for
// the time elapsed since its previous packet.
func advance(last *int64, now int64) decays {
	dt := now - *last
	if dt <= 0 {
		return decayFactors(0)
	}
	*last = now
	return decayFactors(dt)
}

// Extract updates the state with p and writes its Dim features to out,
// which must hold at least Dim values.
func (e *Extractor) Extract(p *event.Packet, out []float32) {
	out = out[:Dim]
	now := p.TimestampNs
	size := float64(p.Length)

	// Source and destination identities.
	var src, dst [16]byte
	kind := kindIP
	if p.Flags&(event.FlagIPv4|event.FlagIPv6|event.FlagARP) != 0 {
		src, dst = p.SrcIP, p.DstIP
	} else {
		kind = kindMAC
		copy(src[:], p.SrcMAC[:])
		copy(dst[:], p.DstMAC[:])
	}

	// MI_dir: source MAC + IP.
	{
		k := miKey{mac: p.SrcMAC, ip: src, kind: kind}
		h := flowtab.Mix(e.seed^flowtab.LE64(k.ip[0:])^uint64(k.kind)<<56, flowtab.LE64(k.ip[8:])^macWord(k.mac))
		v, last := e.mi.Get(&k, h, now)
		f := advance(last, now)
		v.insert(&f, size)
		v.put(out[offMI : offMI+3*nLambda])
	}
	// H: source IP.
	{
		k := hostKey{ip: src, kind: kind}
		h := flowtab.Mix(e.seed^flowtab.LE64(k.ip[0:])^uint64(k.kind)<<56, flowtab.LE64(k.ip[8:]))
		v, last := e.host.Get(&k, h, now)
		f := advance(last, now)
		v.insert(&f, size)
		v.put(out[offH : offH+3*nLambda])
	}
	// HH and HH_jit: the channel, keyed by the unordered address pair.
	{
		k := chanKey{a: src, b: dst, kind: kind}
		dir := 0
		if bytes.Compare(src[:], dst[:]) > 0 {
			k.a, k.b, dir = dst, src, 1
		}
		h := flowtab.Mix(e.seed^flowtab.LE64(k.a[0:])^uint64(k.kind)<<56, flowtab.LE64(k.a[8:]))
		h = flowtab.Mix(h^flowtab.LE64(k.b[0:]), flowtab.LE64(k.b[8:]))
		s, last := e.chans.Get(&k, h, now)
		f := advance(last, now)
		s.hh.insert(&f, dir, size)
		s.hh.put(dir, out[offHH:offHH+7*nLambda])

		jit := 0.0
		if !s.seen[dir] {
			s.seen[dir] = true
			s.jitLast[dir] = now
		} else if d := now - s.jitLast[dir]; d > 0 {
			jit = float64(d) * 1e-9
		}
		fj := advance(&s.jitLast[dir], now)
		s.jit[dir].insert(&fj, jit)
		s.jit[dir].put(out[offJit : offJit+3*nLambda])
	}
	// HpHp: the socket pair.
	{
		k := sockKey{a: src, b: dst, kind: kind}
		switch {
		case p.Flags&event.FlagARP != 0:
			k.kind = kindARPs
			k.a, k.b = [16]byte{}, [16]byte{}
			copy(k.a[:], p.SrcMAC[:])
			copy(k.b[:], p.DstMAC[:])
		case kind == kindIP:
			k.proto = p.Proto
			if (p.Proto == event.ProtoTCP || p.Proto == event.ProtoUDP) && p.Flags&event.FlagFragment == 0 {
				k.pa, k.pb = p.SrcPort, p.DstPort
			}
		}
		dir := 0
		if c := bytes.Compare(k.a[:], k.b[:]); c > 0 || (c == 0 && k.pa > k.pb) {
			k.a, k.b, k.pa, k.pb, dir = k.b, k.a, k.pb, k.pa, 1
		}
		h := flowtab.Mix(e.seed^flowtab.LE64(k.a[0:])^uint64(k.kind)<<56^uint64(k.proto)<<48, flowtab.LE64(k.a[8:])^uint64(k.pa)<<32^uint64(k.pb))
		h = flowtab.Mix(h^flowtab.LE64(k.b[0:]), flowtab.LE64(k.b[8:]))
		v, last := e.socks.Get(&k, h, now)
		f := advance(last, now)
		v.insert(&f, dir, size)
		v.put(dir, out[offHpHp:offHpHp+7*nLambda])
	}
	// Defence in depth: a model must never see NaN or Inf.
	for i, v := range out {
		if d := v - v; d != d { // NaN or ±Inf
			out[i] = 0
		}
	}
	runtime.KeepAlive(e) // pointers into e's tables were used above (flowtab)
}

func macWord(m [6]byte) uint64 {
	return uint64(m[0]) | uint64(m[1])<<8 | uint64(m[2])<<16 | uint64(m[3])<<24 | uint64(m[4])<<32 | uint64(m[5])<<40
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
	// with use up to their capacities).
	MemoryBytes int64
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
	return st
}

func tableStats[K comparable, V any](name string, t *flowtab.Table[K, V]) TableStats {
	return TableStats{Name: name, Entries: t.Len(), Capacity: t.Cap(), Slots: t.Slots(), Evictions: t.Evictions(), EntryBytes: t.EntryBytes()}
}
