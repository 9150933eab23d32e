package registry

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
)

// findPlugin looks for vigil-detector-<detector> in the configured directories.
func (r *Registry) findPlugin(detector string) (string, error) {
	name := "vigil-detector-" + detector
	for _, d := range r.cfg.PluginDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("no %s plugin on the server (looked in %v); install it next to vigil-server or publish with --no-smoke", name, r.cfg.PluginDirs)
}

// DefaultPluginDirs: next to the server binary, then the packaged locations.
func DefaultPluginDirs() []string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		if r, err := filepath.EvalSymlinks(exe); err == nil {
			exe = r
		}
		dirs = append(dirs, filepath.Dir(exe))
	}
	return append(dirs, "/usr/lib/vigil", "/usr/lib/vigil/plugins")
}

// smoke starts the detector plugin, loads the bundle and scores a small probe batch.
func (r *Registry) smoke(ctx context.Context, path string, m *bundle.Manifest) (string, error) {
	bin, err := r.findPlugin(m.Detector)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.Command(bin)
	cmd.Env = r.cfg.PluginEnv
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          sdk.PluginMap(nil, nil),
		Cmd:              cmd,
		AutoMTLS:         true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		SkipHostEnv:      true,
		StartTimeout:     30 * time.Second,
		Logger:           hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Off}),
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		return "", fmt.Errorf("start %s: %w", bin, err)
	}
	raw, err := rpc.Dispense(sdk.PluginName)
	if err != nil {
		return "", fmt.Errorf("start %s: %w", bin, err)
	}
	det, ok := raw.(*sdk.Client)
	if !ok {
		return "", fmt.Errorf("start %s: unexpected plugin type %T", bin, raw)
	}
	info, err := det.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("plugin info: %w", err)
	}
	mi, err := det.LoadModel(ctx, path)
	if err != nil {
		return "", fmt.Errorf("plugin %s refused the model: %w", info.Name, err)
	}
	var res sdk.Result
	if info.EventKind == sdk.EventFile {
		res, err = det.ScoreFiles(ctx, sdk.ProbeFiles())
	} else {
		res, err = det.ScorePackets(ctx, sdk.ProbePackets())
	}
	if err != nil {
		return "", fmt.Errorf("probe batch: %w", err)
	}
	for _, v := range []float32{res.Stats.P50, res.Stats.P99, res.Stats.Max} {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return "", fmt.Errorf("probe batch scores are not finite (p50 %v, max %v)", res.Stats.P50, res.Stats.Max)
		}
	}
	h, err := det.Health(ctx)
	if err != nil || !h.OK {
		return "", fmt.Errorf("plugin unhealthy after loading: %v %s", err, h.Message)
	}
	return fmt.Sprintf("%s plugin %s loaded %s@%d and scored %d probe events (max score %.3g)", info.Name, info.Version, mi.Name, mi.Version,
		res.Stats.Count, res.Stats.Max), nil
}
