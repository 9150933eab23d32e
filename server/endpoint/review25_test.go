package endpoint

import (
	"context"
	"testing"

	"github.com/vigil-edge/vigil/pki"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestRenewLimitedPerAgent: the renewal rate limit belongs to the agent, not
// to one connection. An agent that reconnects for every RenewRequest got a
// new signature and a new certificates row per reconnect.
func TestRenewLimitedPerAgent(t *testing.T) {
	e, st := newTestEndpoint(t)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "x")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Two connections (peers) of one agent, one renewal on each.
	if resp := e.renew(ctx, authedPeer(e, "a-0000000000aa", "ent1"), &wirev1.RenewRequest{CsrDer: csr}); resp.Error != nil {
		t.Fatalf("first renewal refused: %v", resp.Error)
	}
	resp := e.renew(ctx, authedPeer(e, "a-0000000000aa", "ent1"), &wirev1.RenewRequest{CsrDer: csr})
	if resp.Error == nil || wirev1.ErrorCode(resp.Error.Code) != wirev1.CodeOverloaded {
		t.Fatalf("second renewal of the agent within %s on a new connection: error %v, want CodeOverloaded", minRenewInterval, resp.GetError())
	}
	// Another agent is not held back.
	if resp := e.renew(ctx, authedPeer(e, "a-0000000000bb", "ent1"), &wirev1.RenewRequest{CsrDer: csr}); resp.Error != nil {
		t.Fatalf("other agent's renewal refused: %v", resp.Error)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.certs != 2 {
		t.Fatalf("%d certificates recorded, want 2", st.certs)
	}
}
