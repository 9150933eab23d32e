// Command vigilctl administers a Vigil deployment: enrollment tokens, agents,
// users, findings and the audit log (see server/ctl).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/vigil-edge/vigil/server/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
