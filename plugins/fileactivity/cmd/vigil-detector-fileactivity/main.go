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
	ortruntime "github.com/vigil-edge/vigil/models/runtime"
	"log/slog"
	"time"

	"github.com/vigil-edge/vigil/plugins/fileactivity"
	"github.com/vigil-edge/vigil/plugins/sdk"
)

func main() {
	bundlePath := flag.String("bundle", "", "model bundle to load at start")
	ort := flag.String("ort", "", "libonnxruntime.so (default: $ONNXRUNTIME_LIB, then ../lib and lib next to this binary)")
	flag.Parse()
	sdk.Serve(func(log *slog.Logger) sdk.Detector {
		d := fileactivity.New(log, fileactivity.Options{ORTLib: ortruntime.FindLibrary(*ort)})
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
