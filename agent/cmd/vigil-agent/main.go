// Command vigil-agent is Vigil's edge agent. The command tree lives in
// agent/app; this main only runs it.
package main

import (
	"context"
	"os"

	"github.com/vigil-edge/vigil/agent/app"
)

func main() {
	os.Exit(app.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
