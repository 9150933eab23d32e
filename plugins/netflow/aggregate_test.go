package netflow

import (
	"log/slog"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/agent/detect"
	nffeat "github.com/vigil-edge/vigil/models/features/netflow"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// findings merges anomalies into findings as `vigil-agent scan --min-severity low --min-packets 1` does.
//
// Every window with an anomaly is a finding (lowest severity, one packet):
// the comparisons cover every window, not only those the agent reports.
func findings(as []sdk.Anomaly, window time.Duration) ([]*wirev1.Finding, uint64) {
	agg := detect.NewAggregator(detect.AggregatorConfig{Window: window, PacketTime: true,
		MinSeverity: wirev1.Severity_SEVERITY_LOW, MinPackets: 1})
	var out []*wirev1.Finding
	for i := range as {
		out = append(out, agg.Add(&as[i])...)
	}
	out = append(out, agg.Flush()...)
	n, _ := agg.Stats()
	return out, n
}

// withoutLead returns copies of fs without their lead-in (the fields and
// the summary's last clause): per-packet anomalies carry none, so the
// comparisons with them look at the rest.
func withoutLead(fs []*wirev1.Finding) []*wirev1.Finding {
	out := make([]*wirev1.Finding, len(fs))
	for i, f := range fs {
		f = proto.Clone(f).(*wirev1.Finding)
		f.LeadInUnixNano, f.LeadInPackets, f.LeadInBytes = 0, 0, 0
		if k := strings.Index(f.Summary, "; active since "); k >= 0 {
			f.Summary = f.Summary[:k]
		}
		out[i] = f
	}
	return out
}

func sameFindings(t *testing.T, what string, a, b []*wirev1.Finding) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d findings, per packet %d", what, len(b), len(a))
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			t.Fatalf("%s: finding %d differs:\n%v\nper packet:\n%v", what, i, b[i], a[i])
		}
	}
}

// TestAggregateMatchesPerPacket: merging a batch's anomalies per source in
// the plugin gives the agent exactly the findings (counts, times, kinds,
// ports, hosts, score, top features, order) of one anomaly per packet,
// whatever the batch sizes, and far fewer anomalies cross the boundary.
func TestAggregateMatchesPerPacket(t *testing.T) {
	pkts := scanPackets(t)
	// A second scan of another host two windows later, so that windows
	// roll over inside batches.
	shift := int64(65 * time.Second)
	n := len(pkts)
	for i := range n {
		p := pkts[i]
		p.TimestampNs += shift
		p.DstIP[15]++
		pkts = append(pkts, p)
	}
	per := scoreAll(t, newLoaded(t, Options{HashSeed: 3, NoAggregate: true}), pkts, []int{4096})
	want, wantN := findings(per, 30*time.Second)
	if len(want) == 0 || wantN != uint64(len(per)) {
		t.Fatalf("per packet: %d findings from %d anomalies (%d counted)", len(want), len(per), wantN)
	}
	var first []*wirev1.Finding
	for _, sizes := range [][]int{{4096}, {1, 7, 300, 64, 2048, 13}} {
		merged := scoreAll(t, newLoaded(t, Options{HashSeed: 3}), pkts, sizes)
		got, gotN := findings(merged, 30*time.Second)
		if gotN != wantN || sdk.CountRecords(merged) != wantN {
			t.Fatalf("batches %v: %d anomalous packets counted, per packet %d", sizes, gotN, wantN)
		}
		sameFindings(t, "batches", want, withoutLead(got))
		// The lead-in is computed in packet order: it does not depend
		// on the batches either.
		if first == nil {
			first = got
		} else {
			sameFindings(t, "batches, with lead-ins", first, got)
		}
		t.Logf("batches %v: %d anomalies per packet, %d merged; %d findings", sizes, len(per), len(merged), len(got))
		if sizes[0] == 4096 && len(merged)*20 > len(per) {
			t.Errorf("only %d anomalies merged into %d", len(per), len(merged))
		}
	}
}

// TestAggregateShortWindow: with a window shorter than a batch, the plugin
// (told the window) still never merges across the agent's windows.
func TestAggregateShortWindow(t *testing.T) {
	pkts := scanPackets(t)
	per := scoreAll(t, newLoaded(t, Options{HashSeed: 3, NoAggregate: true}), pkts, []int{4096})
	want, _ := findings(per, 2*time.Second)
	merged := scoreAll(t, newLoaded(t, Options{HashSeed: 3, AggregateWindow: 2 * time.Second}), pkts, []int{4096})
	got, _ := findings(merged, 2*time.Second)
	sameFindings(t, "2 s windows", want, withoutLead(got))
	if len(want) < 3 {
		t.Fatalf("only %d findings with 2 s windows", len(want))
	}
}

// TestAggregateAttackCaptures compares merged and per-packet anomalies on
// the real attack captures (VIGIL_SHARED_DATA).
func TestAggregateAttackCaptures(t *testing.T) {
	dir := os.Getenv("VIGIL_SHARED_DATA")
	if dir == "" {
		t.Skip("VIGIL_SHARED_DATA not set")
	}
	var files []string
	_ = filepath.WalkDir(filepath.Join(dir, "attacks"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (filepath.Ext(p) == ".pcap" || filepath.Ext(p) == ".pcapng" || filepath.Ext(p) == ".cap") {
			files = append(files, p)
		}
		return nil
	})
	if len(files) == 0 {
		t.Skip("no attack captures")
	}
	for _, f := range files {
		pkts := filePackets(t, f, 1<<22)
		per := scoreAll(t, newNethost(t, Options{HashSeed: 3, NoAggregate: true}), pkts, []int{4096})
		merged := scoreAll(t, newNethost(t, Options{HashSeed: 3}), pkts, []int{4096})
		want, _ := findings(per, 30*time.Second)
		got, _ := findings(merged, 30*time.Second)
		sameFindings(t, filepath.Base(f), want, withoutLead(got))
	}
}

// TestAggregateARPClaims: an ARP poisoner's replies claiming a server's
// address, among the server's own traffic, merge into findings of their
// own (keyed by sender address and MAC, as the agent keys them), exactly as
// the per-packet anomalies do.
func TestAggregateARPClaims(t *testing.T) {
	pkts := benignGenPackets(t)
	if len(pkts) < 1000 {
		t.Fatalf("%d benign packets", len(pkts))
	}
	server := netip.MustParseAddr("10.99.1.10") // trafficgen's first server
	poisoner := [6]byte{0x02, 0x00, 0x0a, 0x63, 0x00, 0x42}
	var client event.Packet
	for _, p := range pkts {
		if p.DstAddr() == server && p.Flags&event.FlagIPv4 != 0 {
			client = p
			break
		}
	}
	// One reply every 2 s for 20 s, from the 10th second (dsniff's
	// arpspoof), each placed among the benign packets by time.
	t0 := pkts[0].TimestampNs + int64(10*time.Second)
	var arps []event.Packet
	for i := range 10 {
		p := event.Packet{TimestampNs: t0 + int64(i)*int64(2*time.Second), SrcMAC: poisoner, DstMAC: client.SrcMAC,
			DstPort: 2, Length: 42, Flags: event.FlagARP}
		p.SetSrc(server)
		p.SetDst(client.SrcAddr())
		arps = append(arps, p)
	}
	all := make([]event.Packet, 0, len(pkts)+len(arps))
	for _, p := range pkts {
		for len(arps) > 0 && arps[0].TimestampNs <= p.TimestampNs {
			all, arps = append(all, arps[0]), arps[1:]
		}
		all = append(all, p)
	}
	all = append(all, arps...)

	per := scoreAll(t, newNethost(t, Options{HashSeed: 3, NoAggregate: true}), all, []int{4096})
	want, _ := findings(per, 30*time.Second)
	merged := scoreAll(t, newNethost(t, Options{HashSeed: 3}), all, []int{1, 7, 300, 64, 2048, 13})
	got, _ := findings(merged, 30*time.Second)
	sameFindings(t, "ARP claims", want, withoutLead(got))
	// Without the score cache the vectors are built by the other path.
	fresh := scoreAll(t, newNethost(t, Options{HashSeed: 3, NoReuse: true}), all, []int{4096})
	noReuse, _ := findings(fresh, 30*time.Second)
	var claims, claimsNoReuse int
	for _, f := range noReuse {
		if f.GetContext().GetProto() == "arp" {
			claimsNoReuse += int(f.GetPackets())
		}
	}
	for _, f := range got {
		c := f.GetContext()
		if c.GetProto() == "arp" && c.GetSrcIp() == server.String() {
			if c.GetSrcMac() != "02:00:0a:63:00:42" {
				t.Errorf("ARP finding for %s with MAC %s: %v", server, c.GetSrcMac(), f)
			}
			claims += int(f.GetPackets())
			t.Logf("%s (%.1fx)", f.GetSummary(), f.GetScore()/f.GetThreshold())
		}
	}
	if claims == 0 {
		t.Fatalf("no ARP finding for the poisoner's claims on %s among %d findings", server, len(got))
	}
	if claimsNoReuse != claims {
		t.Errorf("claims in ARP findings: %d with the score cache, %d without", claims, claimsNoReuse)
	}
}

// TestAggregateNaNScore: a NaN score is flagged as the most anomalous, so
// the merged anomaly carries it (as the agent, comparing NaN as +Inf, picks
// it among the per-packet anomalies) whatever comes before or after it, and
// the finding is critical with a finite score. As NaN it used to lose every
// comparison: the merge kept a later, lower packet, and a NaN first stayed
// the agent's largest ratio (low severity) after anomalies at 25x.
func TestAggregateNaNScore(t *testing.T) {
	nan := float32(math.NaN())
	for _, scores := range [][]float32{{25, nan, 30, 2}, {nan, 25, 30}, {30, 40, nan}} {
		d := New(slog.New(slog.DiscardHandler), Options{MaxBatch: 8})
		const s = slotNetflow
		d.dims[s] = nffeat.Dim
		d.con[s] = make([]float32, 8*nffeat.Dim)
		m := &model{thr: 1, names: nffeat.Names(), ctxVer: "1",
			info: sdk.ModelInfo{Name: "netflow", Version: 1, Digest: "sha256:ab", FeatureSet: nffeat.Name}}
		loaded := [nslots]*model{s: m}
		pkts := make([]event.Packet, len(scores))
		var per []sdk.Anomaly
		nanAt := -1
		for i, v := range scores {
			p := &pkts[i]
			p.TimestampNs, p.Length, p.Flags, p.Proto = int64(i+1)*1e9, 60, event.FlagIPv4, event.ProtoTCP
			p.TCPFlags, p.SrcPort, p.DstPort = event.TCPSyn, 40000, uint16(100+i)
			p.SetSrc(netip.MustParseAddr("10.0.0.1"))
			p.SetDst(netip.MustParseAddr("10.0.0.2"))
			d.con[s][i*nffeat.Dim+i] = v // a distinct top feature per packet
			d.rsc[s*8+i] = v
			d.ratio[i], d.which[i] = v/m.thr, s
			if v != v {
				d.ratio[i], nanAt = float32(math.Inf(1)), i // as scoreChunk flags it
			}
			per = append(per, sdk.Anomaly{Index: uint64(i), Score: v, Threshold: m.thr,
				TopFeatures: sdk.TopContributions(d.contrib(s, i), m.names, TopK), Context: packetContext(p, m, arpClaim{})})
		}
		var res sdk.Result
		d.aggregate(pkts, 0, &loaded, &res)
		if len(res.Anomalies) != 1 || res.Anomalies[0].Records() != uint64(len(scores)) {
			t.Fatalf("scores %v: merged into %d anomalies, want 1 of %d packets", scores, len(res.Anomalies), len(scores))
		}
		if sc := res.Anomalies[0].Score; sc == sc {
			t.Fatalf("scores %v: merged anomaly carries score %v, not the NaN of packet %d", scores, sc, nanAt)
		}
		want, _ := findings(per, 30*time.Second)
		got, _ := findings(res.Anomalies, 30*time.Second)
		sameFindings(t, "NaN score", want, got)
		f := got[0]
		if f.Severity != wirev1.Severity_SEVERITY_CRITICAL || math.IsNaN(f.Score) || math.IsInf(f.Score, 0) {
			t.Fatalf("scores %v: finding %v (want critical, finite score)", scores, f)
		}
	}
}
