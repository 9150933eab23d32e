package app

import (
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-edge/vigil/server/api"
	"github.com/vigil-edge/vigil/server/console"
	"github.com/vigil-edge/vigil/server/endpoint"
	"github.com/vigil-edge/vigil/server/store"
)

// newAPIHandler builds the HTTPS API handler. Revocations through the API
// reach the endpoint at once (Endpoint.Revoke), and so do changes of an
// entity's suppressions (Endpoint.SuppressionsChanged).
// The console is mounted under /; stop, closed when the HTTP server shuts
// down, ends the live streams so that Shutdown does not wait for them.
// health is the server's own health (healthz).
func newAPIHandler(db *store.DB, ep *endpoint.Endpoint, reg *prometheus.Registry, cfg Config, log *slog.Logger, pin string,
	stop <-chan struct{}, health func() []string) (http.Handler, error) {
	return api.New(db, api.Options{
		Log:          log,
		CAPin:        pin,
		EnrollServer: enrollServer(cfg.PublicQUICAddr, ep.Addr()),
		Registry:     reg,
		Registerer:   reg,
		OnRevoke:     ep.Revoke,
		// Triage and lifts reach the entity's connected agents at once.
		OnSuppressionsChanged: ep.SuppressionsChanged,
		Console:               console.Handler(),
		Shutdown:              stop,
		Health:                health,
	}), nil
}

// enrollServer is the HOST:PORT put into enroll commands: the configured
// public address, else the bound QUIC address when it names a host; empty
// (the API uses the request's host name) when it listens on all addresses.
func enrollServer(public string, bound net.Addr) string {
	if public != "" {
		return public
	}
	ua, ok := bound.(*net.UDPAddr)
	if !ok || ua.IP == nil || ua.IP.IsUnspecified() {
		return ""
	}
	return ua.String()
}
