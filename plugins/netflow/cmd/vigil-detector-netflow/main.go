// Command vigil-detector-netflow is Vigil's packet anomaly detector plugin
// (package plugins/netflow). The agent starts it; run by hand it only prints
// go-plugin's refusal.
//
// It finds ONNX Runtime at -ort, else $ONNXRUNTIME_LIB, else
// ../lib/libonnxruntime.so or lib/libonnxruntime.so next to its own binary.
// Each -bundle is loaded at start (one per feature set; the agent passes the
// baseline bundles this way, so a restarted plugin gets them back).
package main

import (
	"context"
	"flag"
	"fmt"
	ortruntime "github.com/vigil-edge/vigil/models/runtime"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/plugins/netflow"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/selfcal"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var bundles list
	flag.Var(&bundles, "bundle", "model bundle to load at start (repeatable: one per feature set)")
	ort := flag.String("ort", "", "libonnxruntime.so (default: $ONNXRUNTIME_LIB, then ../lib and lib next to this binary)")
	calibrate := flag.Duration("calibrate", 0, "per-sensor calibration: observe this much traffic (packet time) before flagging")
	quantile := flag.Float64("calibrate-quantile", 0.999, "local score quantile the thresholds must reach after calibration")
	calibrated := flag.String("calibrated", "", "models already calibrated on this sensor (by an earlier instance): DIGEST=BITS,... with BITS the local quantile's float32 bits in hex")
	maxSockets := flag.Int("max-sockets", 0, "socket-pair table capacity (0: default)")
	hashSeed := flag.Uint64("hash-seed", 0, "feature table hash seed (0: random; set it for reproducible offline scans)")
	chunk := flag.Int("score-chunk", 0, "most rows per ONNX Runtime run (0: default 256; lowered at load to the largest run size whose scores match single-row runs on this CPU)")
	noAggregate := flag.Bool("no-aggregate", false, "report every anomalous packet as its own anomaly (default: merged per source, batch and window)")
	aggWindow := flag.Duration("aggregate-window", 0, "window of the per-source merge (0: default 30s, the agent's default aggregation window)")
	leadIn := flag.Duration("lead-in", 0, "how far back a source's first anomaly of a window reports its earlier packets (0: default 10s, at most 5m; a negative duration such as -1s: no lead-in)")
	beacon := flag.Int("beacon-intervals", 0, "regular intervals between a pair's connections before the beacon rule flags one (0: default 20, at most 31; negative: no beacon rule)")
	noReuse := flag.Bool("no-score-reuse", false, "score every packet's nethost/v1 vector (default: reuse a source's last score while its vector is unchanged within 1%)")
	flag.Parse()
	restored, err := selfcal.ParseRestored(*calibrated)
	if err != nil {
		// Fail safe: a plugin that cannot restore its calibration observes
		// again rather than not run at all.
		fmt.Fprintf(os.Stderr, "vigil-detector-netflow: -calibrated ignored (calibrating again): %v\n", err)
		restored = nil
	}
	// The live heap is mostly fixed (feature tables of up to about 8 MB,
	// scoring buffers, the score cache) and pointer-free, so a collection
	// is cheap; the garbage is per-batch results and the tables' old slot
	// arrays when they double. GOGC 20 keeps the heap within a fifth of its
	// live size (about 4 MB less resident than GOGC 50 on the reference
	// capture, docs/benchmarks.md) for about 7 more collections per million
	// packets, unless the operator set GOGC.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(20)
	}
	sdk.Serve(func(log *slog.Logger) sdk.Detector {
		d := netflow.New(log, netflow.Options{
			ORTLib: ortruntime.FindLibrary(*ort), Calibrate: *calibrate, CalibrateQuantile: *quantile, Calibrated: restored, MaxSockets: *maxSockets,
			HashSeed: *hashSeed, ScoreChunk: *chunk, NoReuse: *noReuse, NoAggregate: *noAggregate, AggregateWindow: *aggWindow,
			LeadIn: *leadIn, BeaconIntervals: *beacon,
		})
		for _, b := range bundles {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := d.LoadModel(ctx, b); err != nil {
				log.Error("loading bundle given at start", "bundle", b, "err", err)
			}
			cancel()
		}
		return d
	})
}
