package app

import (
	"context"
	"testing"
)

// TestRegistryMetricsExported: the registry's trust-check counters (offers
// withheld, rollouts halted because their bundle no longer verifies) were
// created but never registered with the server's Prometheus registry.
func TestRegistryMetricsExported(t *testing.T) {
	dir, _ := newDeployment(t)
	ctx := context.Background()
	s, err := Start(ctx, Config{DataDir: dir, QUICAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(ctx)
	mfs, err := s.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "vigil_server_rollouts_halted_untrusted_total" {
			return
		}
	}
	t.Error("no vigil_server_rollouts_halted_untrusted_total in the server's metrics")
}
