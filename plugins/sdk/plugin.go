package sdk

import (
	"context"
	"log/slog"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/vigil-edge/vigil/plugins/sdk/proto"
)

// ProtocolVersion is the plugin protocol version in the handshake.
//
// History:
//   - 1: Detector service of proto/detector.proto; ring layout 1; packet
//     record layout 1; ring passed as extra file 0 (fd 3) and the wake pipe's
//     read end as extra file 1 (fd 4).
const ProtocolVersion = 1

// PluginName is the name of the one plugin in the plugin map.
const PluginName = "detector"

// Handshake is the go-plugin handshake every Vigil detector uses. The cookie
// is not a secret: it only stops a plugin binary from being run by hand.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "VIGIL_PLUGIN",
	MagicCookieValue: "9b1f3c0e7d2a4c58a6e1f0d3b7c24e19-vigil-detector",
}

// PluginMap returns the plugin map for a host (impl nil) or a plugin.
func PluginMap(impl Detector, log *slog.Logger) map[string]plugin.Plugin {
	return map[string]plugin.Plugin{PluginName: &DetectorPlugin{Impl: impl, Log: log}}
}

// DetectorPlugin is the go-plugin glue: GRPCServer serves Impl in the plugin
// process; GRPCClient gives the host a *Client.
type DetectorPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Detector
	Log  *slog.Logger
}

var _ plugin.GRPCPlugin = (*DetectorPlugin)(nil)

// GRPCServer registers the Detector service backed by Impl.
func (p *DetectorPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterDetectorServer(s, newServer(p.Impl, p.Log))
	return nil
}

// GRPCClient returns a *Client on the plugin's connection.
func (p *DetectorPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Client{rpc: pb.NewDetectorClient(c)}, nil
}
