package netflow

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// beaconFuzzRec is the size of one packet record of FuzzBeaconObserve's
// input: control byte, source port (2), destination port selector (1), a
// time value (8).
const beaconFuzzRec = 12

// beaconFuzzInput encodes a run of starts of one pair every period, from
// start (a seed for the fuzzer that reaches the flagging path).
func beaconFuzzInput(n int, start int64, period uint64) []byte {
	var b []byte
	for i := range n {
		rec := make([]byte, beaconFuzzRec)
		binary.LittleEndian.PutUint16(rec[1:], uint16(30000+i))
		if i == 0 {
			rec[0] = 0x80 // absolute time
			binary.LittleEndian.PutUint64(rec[4:], uint64(start))
		} else {
			binary.LittleEndian.PutUint64(rec[4:], period)
		}
		b = append(b, rec...)
	}
	return b
}

// FuzzBeaconObserve feeds arbitrary packet sequences (times, including
// extreme and out-of-order ones; TCP flags; protocols; ports; a few
// sources and destinations) into a beacon table and checks its
// invariants: no panic, the ring's bounds hold, and a flagged start has a
// period of at least beaconMinPeriod, a span of at least beaconMinSpan and
// at least intervals+1 connections.
func FuzzBeaconObserve(f *testing.F) {
	f.Add(beaconFuzzInput(40, 0, uint64(3*time.Second)), int8(20))
	f.Add(beaconFuzzInput(40, math.MinInt64, uint64(3*time.Second)), int8(5))
	f.Add(beaconFuzzInput(40, math.MaxInt64-int64(60*time.Second), uint64(3*time.Second)), int8(20))
	f.Add(beaconFuzzInput(33, math.MinInt64, uint64(math.MaxInt64/20)), int8(31))
	f.Add([]byte{}, int8(-1))
	// One table, cleared for each input: a new one (1.3 MB) per input
	// made the fuzzer's minimization crawl.
	bt := newBeaconTable(7, DefaultBeaconIntervals)
	var tmpl [4]event.Packet // the sources and destinations, parsed once
	for i, a := range [4][2]string{{"10.0.0.1", "10.0.1.1"}, {"10.0.0.2", "10.0.1.1"}, {"2001:db8::1", "2001:db8::2"}, {"10.0.0.1", "10.0.1.2"}} {
		tmpl[i] = syn(a[0], a[1], 0, 0, 0)
		if i == 2 {
			tmpl[i].Flags = event.FlagIPv6
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, intervals int8) {
		clear(bt.tags)
		clear(bt.entries)
		bt.intervals = min(int(intervals), beaconRing-1) // as newBeaconTable
		flags := [4]uint8{event.TCPSyn, event.TCPSyn | event.TCPAck, event.TCPAck, event.TCPSyn | event.TCPFin}
		var ts int64
		for n := 0; len(data) >= beaconFuzzRec && n < 4096; n++ {
			rec := data[:beaconFuzzRec]
			data = data[beaconFuzzRec:]
			c := rec[0]
			v := binary.LittleEndian.Uint64(rec[4:])
			if c&0x80 != 0 {
				ts = int64(v)
			} else {
				ts += int64(v % (1 << 42)) // up to about 73 min later; may wrap
			}
			p := tmpl[c>>4&3]
			p.TimestampNs, p.DstPort, p.SrcPort = ts, 443+uint16(rec[3]&3), binary.LittleEndian.Uint16(rec[1:])
			p.TCPFlags = flags[c&3]
			if c&4 != 0 {
				p.Proto = event.ProtoUDP
			}
			if c&8 != 0 {
				p.Flags = 0
			}
			b, ok := bt.observe(&p)
			if !ok {
				continue
			}
			if b.PeriodNs < beaconMinPeriod || b.SpanNs < beaconMinSpan || int(b.Connections) < bt.intervals+1 || bt.intervals <= 0 {
				t.Fatalf("flagged %+v with intervals %d (ts %d)", b, bt.intervals, ts)
			}
		}
		for i := range bt.entries {
			if e := &bt.entries[i]; e.n > beaconRing || e.head >= beaconRing || uint32(e.n) > e.total {
				t.Fatalf("entry %d: n %d head %d total %d", i, e.n, e.head, e.total)
			}
		}
	})
}
