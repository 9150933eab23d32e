package netflow

import (
	"context"
	"os"
	"testing"
)

// BenchmarkScoreReference scores the first 200,000 packets of the 1M-packet
// reference capture (.cache/bench/netflow-ref-1000000.pcap, built by
// test/e2e/netflow_bench.sh; VIGIL_NETFLOW_REF overrides the path) with the
// shipped nethost model, in ring-sized batches of 4096, as the plugin does
// during `vigil-agent scan`: the plugin's share of the scan's CPU, in
// ns/packet. Each iteration starts from a fresh detector (not timed).
func BenchmarkScoreReference(b *testing.B) {
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
		d := newNethost(b, Options{HashSeed: 1})
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
