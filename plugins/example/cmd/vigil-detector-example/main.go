// Command vigil-detector-example is the example detector plugin. The agent
// starts it; run by hand it only prints go-plugin's refusal.
package main

import (
	"flag"
	"log/slog"

	"github.com/vigil-edge/vigil/plugins/example"
	"github.com/vigil-edge/vigil/plugins/sdk"
)

func main() {
	noop := flag.Bool("noop", false, "score nothing (IPC benchmarks)")
	batchSleep := flag.Duration("batch-sleep", 0, "sleep this long per batch (a slow detector, for tests)")
	flag.Parse()
	sdk.Serve(func(log *slog.Logger) sdk.Detector {
		return example.New(log, example.Options{Noop: *noop, BatchSleep: *batchSleep})
	})
}
