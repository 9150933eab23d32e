package netflow

import (
	"context"
	"net/netip"
	"os"
	"testing"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// BenchmarkScoreReference scores the first 200,000 packets of the 1M-packet
// reference capture (.cache/bench/netflow-ref-1000000.pcap, built by
// test/e2e/netflow_bench.sh; VIGIL_NETFLOW_REF overrides the path) with the
// shipped nethost model, in ring-sized batches of 4096, as the plugin does
// during `vigil-agent scan`: the plugin's share of the scan's CPU, in
// ns/packet. Each iteration starts from a fresh detector (not timed).
func BenchmarkScoreReference(b *testing.B) { benchReference(b, Options{HashSeed: 1}) }

// BenchmarkScoreReferenceNoLeadIn is BenchmarkScoreReference without the
// findings' lead-in (lead.go): the difference is its cost.
func BenchmarkScoreReferenceNoLeadIn(b *testing.B) {
	benchReference(b, Options{HashSeed: 1, LeadIn: -1})
}

func benchReference(b *testing.B, opts Options) {
	path := os.Getenv("VIGIL_NETFLOW_REF")
	if path == "" {
		path = "../../.cache/bench/netflow-ref-1000000.pcap"
	}
	if _, err := os.Stat(path); err != nil {
		b.Skipf("no reference capture (run test/e2e/netflow_bench.sh): %v", err)
	}
	pkts := filePackets(b, path, 200_000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		d := newNethost(b, opts)
		b.StartTimer()
		for off := 0; off < len(pkts); off += 4096 {
			n := min(4096, len(pkts)-off)
			if _, err := d.ScorePackets(context.Background(), pkts[off:off+n]); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		_ = d.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(pkts)), "ns/packet")
}

// BenchmarkLeadTable is the lead-in's cost per packet: the lookup of the
// packet's source and the count in its slot, for packets of 1,000 sources.
func BenchmarkLeadTable(b *testing.B) {
	lt := newLeadTable(1, DefaultLeadIn)
	pkts := make([]event.Packet, 4096)
	for i := range pkts {
		p := &pkts[i]
		p.TimestampNs, p.Length, p.Flags = int64(i)*1e5, 100, event.FlagIPv4
		p.SetSrc(netip.AddrFrom4([4]byte{10, 99, byte(i % 1000 >> 8), byte(i % 1000)}))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		p := &pkts[i%len(pkts)]
		lt.entry(p).add(lt, p.TimestampNs+int64(i/len(pkts))*4096e5, uint32(p.Length))
	}
}
