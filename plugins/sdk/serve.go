package sdk

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// Serve runs a detector plugin: it builds the detector with factory, gives it
// a logger that writes JSON lines to stderr (the agent forwards them to its
// own log, tagged with the plugin), points the plugin's standard input at
// /dev/null (detachStdin), and serves the Detector service until the agent
// stops the plugin. Call it from main and nothing else; never write to stdout
// before it (stdout carries go-plugin's handshake line).
func Serve(factory func(log *slog.Logger) Detector) {
	log := NewPluginLogger(os.Stderr, slog.LevelInfo)
	if err := detachStdin(); err != nil {
		log.Error("plugin start refused", "err", err)
		os.Exit(1)
	}
	d := factory(log)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         PluginMap(d, log),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return plugin.DefaultGRPCServer(append(opts, grpc.ForceServerCodecV2(newRingCodec())))
		},
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: "go-plugin", Output: os.Stderr, Level: hclog.Info, JSONFormat: true,
		}),
	})
}

// NewPluginLogger returns a slog logger writing JSON lines in the shape
// go-plugin's host understands (@level, @message, @timestamp).
func NewPluginLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
			case slog.LevelKey:
				return slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}

// detachStdin points standard input (fd 0) at /dev/null before the plugin
// reads anything it is sent. go-plugin starts every plugin with the host's
// standard input (its Client sets cmd.Stdin = os.Stdin, with no option), a
// terminal when an admin runs `vigil-agent scan` or `vigil-agent run` by
// hand, and the sandbox does not restrict descriptors a plugin inherits: a
// plugin compromised through the records it parses could read what is typed
// there or, with TIOCSTI, type commands into the admin's shell. A plugin
// never reads its standard input.
func detachStdin() error {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("detach standard input: %w", err)
	}
	defer null.Close()
	if err := unix.Dup3(int(null.Fd()), unix.Stdin, 0); err != nil {
		return fmt.Errorf("detach standard input: dup3: %w", err)
	}
	return nil
}
