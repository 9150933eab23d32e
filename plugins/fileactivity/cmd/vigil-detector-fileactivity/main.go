// Command vigil-detector-fileactivity is Vigil's file-event anomaly detector
// plugin (package plugins/fileactivity). The agent starts it; run by hand it
// only prints go-plugin's refusal.
//
// It finds ONNX Runtime at -ort, else $ONNXRUNTIME_LIB, else
// ../lib/libonnxruntime.so or lib/libonnxruntime.so next to its own binary.
// A -bundle is loaded at start (the agent passes the baseline bundle this
// way, so a restarted plugin gets it back).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	ortruntime "github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/plugins/fileactivity"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/selfcal"
)

func main() {
	bundlePath := flag.String("bundle", "", "model bundle to load at start")
	ort := flag.String("ort", "", "libonnxruntime.so (default: $ONNXRUNTIME_LIB, then ../lib and lib next to this binary)")
	calibrate := flag.Duration("calibrate", 0, "per-sensor calibration: observe this much file activity (event time) before flagging")
	quantile := flag.Float64("calibrate-quantile", 0.999, "local score quantile the threshold must reach after calibration")
	calibrated := flag.String("calibrated", "", "models already calibrated on this sensor (by an earlier instance): DIGEST=BITS,... with BITS the local quantile's float32 bits in hex")
	flag.Parse()
	restored, err := selfcal.ParseRestored(*calibrated)
	if err != nil {
		// Fail safe: a plugin that cannot restore its calibration observes
		// again rather than not run at all.
		fmt.Fprintf(os.Stderr, "vigil-detector-fileactivity: -calibrated ignored (calibrating again): %v\n", err)
		restored = nil
	}
	sdk.Serve(func(log *slog.Logger) sdk.Detector {
		d := fileactivity.New(log, fileactivity.Options{ORTLib: ortruntime.FindLibrary(*ort),
			Calibrate: *calibrate, CalibrateQuantile: *quantile, Calibrated: restored})
		if *bundlePath != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := d.LoadModel(ctx, *bundlePath); err != nil {
				log.Error("loading bundle given at start", "bundle", *bundlePath, "err", err)
			}
			cancel()
		}
		return d
	})
}
