package nethost

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// compareWithReference runs pk through the extractor and the reference copy
// of the code before its CPU work (ref_test.go) and fails at the first
// packet whose raw features or feature vector differ in any bit.
func compareWithReference(t *testing.T, name string, pk []event.Packet, cfg Config) {
	t.Helper()
	e, r := New(cfg), refNew(cfg)
	var raw Raw
	var rraw refRaw
	out, rout := make([]float32, Dim), make([]float32, Dim)
	for i := range pk {
		p := pk[i]
		e.ExtractRaw(&p, &raw)
		r.ExtractRaw(&p, &rraw)
		for j := range raw {
			if math.Float64bits(raw[j]) != math.Float64bits(rraw[j]) {
				t.Fatalf("%s: packet %d (%+v): raw %s = %v, reference %v", name, i, p, names[j], raw[j], rraw[j])
			}
		}
		raw.Features(out)
		rraw.Features(rout)
		for j := range out {
			if math.Float32bits(out[j]) != math.Float32bits(rout[j]) {
				t.Fatalf("%s: packet %d: feature %s = %v, reference %v", name, i, names[j], out[j], rout[j])
			}
			if f := raw.Feature(j); math.Float32bits(f) != math.Float32bits(rout[j]) {
				t.Fatalf("%s: packet %d: Feature(%s) = %v, reference %v", name, i, names[j], f, rout[j])
			}
		}
	}
	if st := e.Stats(); st.Entries != r.hosts.Len() || st.Evictions != r.hosts.Evictions() {
		t.Fatalf("%s: %d entries, %d evictions; reference %d, %d", name, st.Entries, st.Evictions, r.hosts.Len(), r.hosts.Evictions())
	}
}

// TestMatchesReferenceCaptures: on every benign capture and the reference
// capture (when built), the extractor's raw features and vectors equal the
// reference code's bit for bit, with the default table and with a small
// one that evicts.
func TestMatchesReferenceCaptures(t *testing.T) {
	files := benignCaptures(t)
	if len(files) == 0 {
		t.Skip("no benign captures in " + sharedData())
	}
	n := 0
	for _, f := range files {
		pk := readPackets(t, f, 0)
		n += len(pk)
		compareWithReference(t, filepath.Base(f), pk, Config{})
		compareWithReference(t, filepath.Base(f)+" (8 hosts)", pk, Config{MaxHosts: 8, HashSeed: 3})
	}
	t.Logf("%d captures, %d packets", len(files), n)
	if path := refCapturePath(); path != "" && !testing.Short() {
		pk := readPackets(t, path, 0)
		compareWithReference(t, "reference capture", pk, Config{})
		compareWithReference(t, "reference capture (256 hosts)", pk[:min(len(pk), 300_000)], Config{MaxHosts: 256})
		t.Logf("reference capture: %d packets", len(pk))
	}
}

// TestMatchesReferenceRandom: random packets of every kind the extractor
// tells apart, with repeated, backward, tiny and huge time steps.
func TestMatchesReferenceRandom(t *testing.T) {
	pk := randomPackets(200_000, 1)
	compareWithReference(t, "random", pk, Config{})
	compareWithReference(t, "random (16 hosts)", pk, Config{MaxHosts: 16, HashSeed: 9})
	compareWithReference(t, "rawTestPackets", rawTestPackets(), Config{HashSeed: 7})
}

// randomPackets is a random mix of n packets: 40 addresses, few ports,
// every protocol and role, timestamps that repeat, step back and jump.
func randomPackets(n int, seed uint64) []event.Packet {
	rng := rand.New(rand.NewPCG(seed, 2))
	pk := make([]event.Packet, n)
	ts := int64(1_700_000_000) * sec
	for i := range pk {
		switch rng.IntN(10) {
		case 0: // same timestamp
		case 1:
			ts -= rng.Int64N(sec)
		case 2:
			ts += rng.Int64N(1000)
		case 3:
			ts += rng.Int64N(2000 * sec) // beyond exp2's fast range at times
		default:
			ts += rng.Int64N(sec / 100)
		}
		p := event.Packet{TimestampNs: ts, Length: uint16(rng.IntN(1600)), SrcPort: uint16(rng.IntN(5)), DstPort: uint16(rng.IntN(5))}
		if rng.IntN(2) == 0 {
			p.SrcPort, p.DstPort = uint16(30000+rng.IntN(4)), []uint16{53, 80, 443, 1, 2, 3}[rng.IntN(6)]
		}
		p.SrcIP[15], p.DstIP[15] = byte(rng.IntN(40)), byte(rng.IntN(40))
		p.SrcMAC[5], p.DstMAC[5] = byte(rng.IntN(4)), byte(rng.IntN(4))
		switch rng.IntN(8) {
		case 0:
			p.Flags = event.FlagARP
			p.DstPort = uint16(1 + rng.IntN(2))
		case 1:
			p.Flags = 0
		case 2:
			p.Flags = event.FlagIPv6
		case 3:
			p.Flags = event.FlagIPv4 | event.FlagFragment
		default:
			p.Flags = event.FlagIPv4
		}
		if rng.IntN(20) == 0 { // flag combinations no decoder makes
			p.Flags = uint8(rng.IntN(256))
		}
		p.Proto = []uint8{event.ProtoTCP, event.ProtoTCP, event.ProtoUDP, event.ProtoICMP, event.ProtoICMPv6, 47}[rng.IntN(6)]
		if p.Proto == event.ProtoICMP || p.Proto == event.ProtoICMPv6 {
			p.SrcPort = []uint16{0, 1, 3, 8, 13, 128, 133}[rng.IntN(7)]
		}
		p.TCPFlags = uint8(rng.IntN(64))
		if rng.IntN(2) == 0 {
			p.TCPFlags = []uint8{event.TCPSyn, event.TCPAck, event.TCPSyn | event.TCPAck, event.TCPRst, event.TCPFin | event.TCPAck}[rng.IntN(5)]
		}
		pk[i] = p
	}
	return pk
}

// TestFeaturesMatchReferenceEdge: Raw.Features on values no extractor
// produces (negative, huge, infinite, NaN) equals the reference.
func TestFeaturesMatchReferenceEdge(t *testing.T) {
	vals := []float64{0, math.Copysign(0, -1), -1, 1e-300, 5e-324, 1e-20, 0.5, 1, 3.5, 1e30, 1e300, math.MaxFloat64,
		math.Inf(1), math.Inf(-1), math.NaN(), math.MaxFloat32 * 2}
	out, rout := make([]float32, Dim), make([]float32, Dim)
	for _, x := range vals {
		var r Raw
		for j := range r {
			r[j] = x
		}
		rr := refRaw(r)
		r.Features(out)
		rr.Features(rout)
		for j := range out {
			if math.Float32bits(out[j]) != math.Float32bits(rout[j]) {
				t.Errorf("Features(%v)[%s] = %v, reference %v", x, names[j], out[j], rout[j])
			}
		}
	}
}

// TestSlowLambda: decay scales the λ = slowLambda sums with the factor of
// window 1, and rateScale is λ·ln 2 in float64 arithmetic.
func TestSlowLambda(t *testing.T) {
	if lambdas[1] != slowLambda {
		t.Fatalf("lambdas[1] = %v, decay assumes slowLambda %v", lambdas[1], slowLambda)
	}
	for i, l := range lambdas {
		if want := l * math.Ln2; math.Float64bits(rateScale[i]) != math.Float64bits(want) {
			t.Errorf("rateScale[%d] = %v, want %v", i, rateScale[i], want)
		}
	}
}

// FuzzMatchesReference: packet records from the fuzzer give the same raw
// features and vectors as the reference code, bit for bit.
func FuzzMatchesReference(f *testing.F) {
	var b [4 * event.PacketRecordSize]byte
	for i, p := range rawTestPackets()[:4] {
		p.Marshal(b[i*event.PacketRecordSize:])
	}
	f.Add(b[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		var pk []event.Packet
		for len(data) >= event.PacketRecordSize {
			var p event.Packet
			_ = p.Unmarshal(data)
			data = data[event.PacketRecordSize:]
			pk = append(pk, p)
		}
		compareWithReference(t, "fuzz", pk, Config{MaxHosts: 8})
	})
}
