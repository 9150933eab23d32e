// Package pluginhosttest connects the SDK's conformance harness
// (plugins/sdk/sdktest, which may not import the agent) to the agent's real
// plugin host: pass NewHost as sdktest.Options.NewHost. For tests only.
package pluginhosttest

import (
	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/plugins/sdk/sdktest"
)

// NewHost returns an agent plugin host (agent/pluginhost.Host) for cfg.
func NewHost(cfg sdktest.HostConfig) (sdktest.Host, error) {
	h, err := pluginhost.New(pluginhost.Config{
		Path: cfg.Path, Args: cfg.Args, Env: cfg.Env, MaxDelay: cfg.MaxDelay,
		OnResult: cfg.OnResult, Logger: cfg.Logger, Sandbox: pluginhost.Sandbox{ReadOnly: cfg.ReadOnly},
	})
	if err != nil {
		return nil, err
	}
	return host{h}, nil
}

type host struct{ *pluginhost.Host }

var _ sdktest.Host = host{}

func (h host) Stats() sdktest.HostStats {
	st := h.Host.Stats()
	return sdktest.HostStats{Published: st.Published, Scored: st.Scored, Lost: st.Lost(), Restarts: st.Restarts}
}
