package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/internal/buildinfo"
	"github.com/vigil-edge/vigil/internal/termsafe"
)

// Globals are the root command's shared settings, available to every
// subcommand when it runs.
type Globals struct {
	Stdout, Stderr io.Writer
	LogLevel       string
	LogFormat      string
}

// Logger makes the logger for a command (text on a terminal, JSON otherwise).
func (g *Globals) Logger() *slog.Logger {
	l, err := NewLogger(g.Stderr, g.LogFormat, g.LogLevel)
	if err != nil {
		l, _ = NewLogger(g.Stderr, "auto", "info")
	}
	return l
}

// subcommands are registered by each command's file (init functions).
var subcommands []func(g *Globals) *cobra.Command

// Register adds a subcommand to vigil-agent. Call it from an init function
// in a file of this package (cmd_NAME.go), one subcommand per file.
func Register(f func(g *Globals) *cobra.Command) { subcommands = append(subcommands, f) }

// NewRootCommand builds the vigil-agent command tree.
func NewRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &Globals{Stdout: stdout, Stderr: stderr}
	root := &cobra.Command{
		Use:           "vigil-agent",
		Short:         "Vigil edge agent: captures, detects, spools and ships findings",
		Version:       buildinfo.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.LogLevel, "log-level", "", "log level: debug, info, warn, error (default from config, else info)")
	root.PersistentFlags().StringVar(&g.LogFormat, "log-format", "", "log format: auto (text on a terminal, JSON otherwise), text, json")
	for _, f := range subcommands {
		root.AddCommand(f(g))
	}
	return root
}

// Main runs the command line and returns the process exit status. An error
// goes to stderr on one line, escaped (termsafe.Text): errors carry text
// others control (names of files in watched or listed folders, the server's
// answers, configuration values), which must not move the cursor, retitle
// the terminal, reorder what it shows or add lines.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewRootCommand(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		code, msg := 1, err.Error()
		var ee *exitError
		if errors.As(err, &ee) {
			code, msg = ee.code, ee.msg
		}
		if msg != "" {
			fmt.Fprintf(stderr, "vigil-agent: %s\n", termsafe.Text(msg))
		}
		return code
	}
	return 0
}

// exitError carries a specific exit status.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// NewLogger makes a slog logger writing to w. format "auto" means text when
// w is a terminal, JSON otherwise (e.g. under systemd).
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		lv = slog.LevelInfo
	case "debug":
		lv = slog.LevelDebug
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "auto":
		if isTerminal(w) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want auto, text or json", format)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
