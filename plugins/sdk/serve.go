package sdk

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Serve runs a detector plugin: it builds the detector with factory, gives it
// a logger that writes JSON lines to stderr (the agent forwards them to its
// own log, tagged with the plugin), and serves the Detector service until the
// agent stops the plugin. Call it from main and nothing else; never write to
// stdout before it (stdout carries go-plugin's handshake line).
func Serve(factory func(log *slog.Logger) Detector) {
	log := NewPluginLogger(os.Stderr, slog.LevelInfo)
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
