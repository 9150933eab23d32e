package app

import (
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-edge/vigil/server/endpoint"
	"github.com/vigil-edge/vigil/server/registry"
	"github.com/vigil-edge/vigil/server/store"
)

// newRegistry builds the model registry of a running server (issue 5): bundles in
// <data>/bundles (what FETCH serves), the release-key trust policy in <data>/trust.json, and
// detector plugins for the publish smoke test next to the server binary, in
// /usr/lib/vigil[/plugins], or in $VIGIL_PLUGIN_DIR.
func newRegistry(db *store.DB, cfg Config, log *slog.Logger, metrics prometheus.Registerer) *registry.Registry {
	dirs := registry.DefaultPluginDirs()
	if d := os.Getenv("VIGIL_PLUGIN_DIR"); d != "" {
		dirs = append([]string{d}, dirs...)
	}
	var env []string
	if v := os.Getenv("ONNXRUNTIME_LIB"); v != "" {
		env = append(env, "ONNXRUNTIME_LIB="+v)
	}
	return registry.New(registry.Config{
		DB: db, DataDir: cfg.DataDir, BundleDir: filepath.Join(cfg.DataDir, BundlesDir),
		PluginDirs: dirs, PluginEnv: env, Logger: log, Registerer: metrics,
	})
}

// wireRegistry makes the endpoint call the registry after every Hello (pending offers) and
// every recorded ModelStatus (the shadow halt rule).
func wireRegistry(reg *registry.Registry, ecfg *endpoint.Config) {
	ecfg.OnHello = reg.Hook()
	ecfg.OnModelStatus = reg.OnModelStatus
}

// registryHandler connects the registry to the endpoint (pushes) and puts its routes in front
// of the API handler.
func registryHandler(reg *registry.Registry, ep *endpoint.Endpoint, api http.Handler) http.Handler {
	reg.SetPusher(ep)
	return reg.Handler(api)
}
