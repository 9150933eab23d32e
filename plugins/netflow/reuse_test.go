package netflow

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/vigil-edge/vigil/agent/capture"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// filePackets reads a capture file's packets.
func filePackets(t testing.TB, path string, limit int) []event.Packet {
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var out []event.Packet
	buf := make([]event.Packet, 1024)
	for len(out) < limit {
		n, err := src.Next(context.Background(), buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// ratios scores pkts in batches of 4096 and returns every packet's
// score/threshold ratio and the anomalous packets' indexes.
func ratios(t testing.TB, d *Detector, pkts []event.Packet) ([]float32, map[uint64]bool) {
	var r []float32
	anom := map[uint64]bool{}
	for off := 0; off < len(pkts); off += 4096 {
		n := min(4096, len(pkts)-off)
		res, err := d.ScorePackets(context.Background(), pkts[off:off+n])
		if err != nil {
			t.Fatal(err)
		}
		r = append(r, res.Scores...)
		for _, a := range res.Anomalies {
			anom[uint64(off)+a.Index] = true
		}
	}
	return r, anom
}

// newNethost returns a detector with the shipped nethost/v1 bundle only.
func newNethost(t testing.TB, opts Options) *Detector {
	opts.ORTLib = ortLib(t)
	d := New(slog.New(slog.DiscardHandler), opts)
	b, _ := filepath.Glob("../../models/baseline/nethost-*.vgb")
	if len(b) == 0 {
		t.Skip("no nethost bundle in models/baseline")
	}
	if _, err := d.LoadModel(context.Background(), b[0]); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

type reuseCmp struct {
	packets, exactAnom, reuseAnom, onlyExact, onlyReuse int
	maxDiff                                             float64
	hitRate                                             float64
	// the largest exact ratio (score/threshold) of a packet that reuse
	// left unflagged, and the smallest of a packet that only reuse flagged
	maxLost, minAdded float64
}

func compareReuse(t testing.TB, pkts []event.Packet, opts Options) reuseCmp {
	exact := newNethost(t, Options{HashSeed: 5, NoReuse: true, NoAggregate: true})
	opts.HashSeed = 5
	opts.NoAggregate = true
	reuse := newNethost(t, opts)
	re, ae := ratios(t, exact, pkts)
	rr, ar := ratios(t, reuse, pkts)
	c := reuseCmp{packets: len(pkts), exactAnom: len(ae), reuseAnom: len(ar)}
	for i := range re {
		if x := math.Abs(float64(re[i]-rr[i])) / math.Max(1, float64(re[i])); x > c.maxDiff && !math.IsInf(float64(re[i]), 0) {
			c.maxDiff = x
		}
	}
	c.minAdded = math.Inf(1)
	for i := range ae {
		if !ar[i] {
			c.onlyExact++
			c.maxLost = max(c.maxLost, float64(re[i]))
		}
	}
	for i := range ar {
		if !ae[i] {
			c.onlyReuse++
			c.minAdded = min(c.minAdded, float64(re[i]))
		}
	}
	if reuse.cache != nil {
		c.hitRate = float64(reuse.cache.hits) / float64(max(1, reuse.cache.hits+reuse.cache.misses))
	}
	return c
}

// TestScoreReuseKeepsAnomalies: reusing a source's score while its
// nethost vector is unchanged (hostcache.go) changes only marginal
// decisions, on the SYN-scan capture and on the attack captures of
// VIGIL_SHARED_DATA (when set): every packet whose exact score is at least
// 5% above the threshold is flagged, no packet more than 5% below it is,
// and the flips in that band are at most 5% of the anomalies (or 3).
// VIGIL_REUSE_PCAP=FILE (and VIGIL_REUSE_TOL) compare on one capture instead.
func TestScoreReuseKeepsAnomalies(t *testing.T) {
	type capt struct {
		name string
		pkts []event.Packet
	}
	caps := []capt{{"trafficgen-scan", scanPackets(t)}}
	var files []string
	if f := os.Getenv("VIGIL_REUSE_PCAP"); f != "" {
		files, caps = []string{f}, nil
	} else if dir := os.Getenv("VIGIL_SHARED_DATA"); dir != "" {
		files, _ = filepath.Glob(filepath.Join(dir, "attacks", "*", "*"))
	}
	for _, f := range files {
		caps = append(caps, capt{filepath.Base(f), filePackets(t, f, 1<<21)})
	}
	var o Options
	if v, err := strconv.ParseFloat(os.Getenv("VIGIL_REUSE_TOL"), 32); err == nil {
		o.ReuseAbs, o.ReuseRel = float32(v), float32(v)
	}
	for _, c := range caps {
		r := compareReuse(t, c.pkts, o)
		t.Logf("%-45s %+v", c.name, r)
		// A reused score is the exact score of a vector within the
		// tolerance of the packet's own, which is not the packet's score:
		// a packet just above the threshold can get a reused score just
		// below it, and the other way round. With nethost-1.vgb no attack
		// capture lost one; with nethost-2.vgb two did (ftp-crack: exact
		// 1.061 × the threshold, reused 0.998; test-cc-capture-1: 1.0009,
		// reused 0.9987); with nethost-3.vgb test8-malicious loses 2 of
		// 271 and gains 8, all within 5% of the threshold. Such packets
		// are below every severity the agent reports (1.5 ×); a finding
		// can change only through its packet count (Options.NoReuse scores
		// every packet exactly).
		if os.Getenv("VIGIL_REUSE_TOL") != "" {
			continue
		}
		if r.maxLost >= 1.05 || r.minAdded <= 0.95 {
			t.Errorf("%s: reuse flipped a decision outside the marginal band: lost up to %.4f × the threshold, added down to %.4f × (%+v)",
				c.name, r.maxLost, r.minAdded, r)
		}
		if flips := r.onlyExact + r.onlyReuse; flips > max(3, r.exactAnom/20) {
			t.Errorf("%s: %d decisions flipped by score reuse (%+v)", c.name, flips, r)
		}
	}
}

// TestScoreReuseAfterFailedBatch: a batch whose scoring fails (an error,
// or a panic that the SDK recovers) leaves no cache entry pointing at its
// rows: the next batch's scores are those of a detector that scored the
// failed batch, up to the reuse tolerance. An entry left pending used to
// give a later packet of its source the score of whatever packet took that
// row in the later batch (off by several thresholds).
func TestScoreReuseAfterFailedBatch(t *testing.T) {
	pkts := scanPackets(t)
	const n = 1000
	if len(pkts) < 3*n {
		t.Fatalf("only %d packets", len(pkts))
	}
	a, b, c := pkts[:n], pkts[n:2*n], pkts[2*n:3*n]
	opts := Options{HashSeed: 5, NoAggregate: true}
	score := func(d *Detector, pkts []event.Packet) []float32 {
		t.Helper()
		res, err := d.ScorePackets(context.Background(), pkts)
		if err != nil {
			t.Fatal(err)
		}
		return res.Scores
	}
	clean := newNethost(t, opts)
	score(clean, a)
	score(clean, b)
	want := score(clean, c)

	// A scorer that fails: a closed one.
	closed := newNethost(t, opts)
	failing := closed.models[slotNethost].Load().scorer
	_ = closed.Close()

	for _, tc := range []struct {
		name   string
		scorer *runtime.Scorer
	}{
		{"error", failing},
		{"panic", nil}, // a nil scorer panics in ScoreInto
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newNethost(t, opts)
			score(d, a)
			m := d.models[slotNethost].Load()
			orig := m.scorer
			m.scorer = tc.scorer
			func() {
				defer func() { _ = recover() }() // as sdk's server does
				if _, err := d.ScorePackets(context.Background(), b); err == nil {
					t.Fatal("scoring with a broken scorer did not fail")
				}
			}()
			m.scorer = orig
			got := score(d, c)
			worst, bad := 0.0, 0
			for i := range want {
				x := math.Abs(float64(got[i]-want[i])) / math.Max(1, float64(want[i]))
				if x > 0.05 {
					bad++
				}
				worst = max(worst, x)
			}
			if bad > 0 {
				t.Fatalf("after a failed batch, %d of %d scores of the next batch differ from a clean detector's by more than 5%% of the threshold (up to %.2f)",
					bad, len(want), worst)
			}
			t.Logf("largest difference %.4f of max(1, ratio)", worst)
		})
	}
}
