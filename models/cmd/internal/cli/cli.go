// Package cli is the common main of the model trainers (vigil-train-baseline,
// vigil-train-fileactivity): parse the flags, run until done or interrupted,
// and exit 2 on a usage error, 1 on a failure.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"
)

// Parse parses args into fs, refuses arguments after the flags, and returns
// the time that the -created flag (bound to created) names, RFC 3339.
func Parse(fs *flag.FlagSet, args []string, created *string) (time.Time, error) {
	if err := fs.Parse(args); err != nil {
		return time.Time{}, err
	}
	if fs.NArg() > 0 {
		return time.Time{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	t, err := time.Parse(time.RFC3339, *created)
	if err != nil {
		return time.Time{}, fmt.Errorf("-created: %w", err)
	}
	return t, nil
}

// Main parses os.Args with parse and calls run with a context that an
// interrupt cancels and a text logger on stderr; it exits the process.
func Main[C any](name string, parse func(args []string, stderr io.Writer) (C, error), run func(context.Context, C, *slog.Logger) error) {
	os.Exit(Run(name, os.Args[1:], os.Stderr, parse, run))
}

// Run is Main's body: it returns the exit code (0 also for -h).
func Run[C any](name string, args []string, stderr io.Writer, parse func([]string, io.Writer) (C, error), run func(context.Context, C, *slog.Logger) error) int {
	cfg, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, slog.New(slog.NewTextHandler(stderr, nil))); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}
