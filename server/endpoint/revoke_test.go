package endpoint

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
)

// holdStore answers RevokedAgents with a snapshot taken when the call
// starts and, once hold is set, keeps the call open until released: a
// refresh whose read is in flight.
type holdStore struct {
	*fakeStore
	mu      sync.Mutex
	revoked map[string]bool
	entered chan struct{} // nil: answer at once
	release chan struct{}
}

func (h *holdStore) RevokedAgents(context.Context) (map[string]bool, error) {
	h.mu.Lock()
	snap := maps.Clone(h.revoked)
	entered, release := h.entered, h.release
	h.mu.Unlock()
	if entered != nil {
		close(entered)
		<-release
	}
	return snap, nil
}

// TestRevokeDuringRefresh: a Revoke that lands while RefreshRevoked reads
// the store (so the snapshot lacks it) must not be undone when the refresh
// installs its result, and the refresh's sweep must disconnect that agent.
func TestRevokeDuringRefresh(t *testing.T) {
	st := &holdStore{fakeStore: newFakeStore(t), revoked: map[string]bool{"old-1": true}}
	e, err := New(context.Background(), Config{CA: testDeployment(t).CA, Store: st, BundleDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	st.mu.Lock()
	st.entered, st.release = entered, release
	st.mu.Unlock()

	done := make(chan error, 1)
	go func() { done <- e.RefreshRevoked(context.Background()) }()
	<-entered // the refresh holds a snapshot without a-1

	// The API revokes a-1: the store says so from now on, then Revoke.
	st.mu.Lock()
	st.revoked["a-1"] = true
	st.mu.Unlock()
	e.Revoke("a-1")
	// A connection of a-1 registered after Revoke's own disconnect (it
	// passed its handshake just before): the refresh's sweep must get it.
	var logs bytes.Buffer
	c := &conn{peer: &peer{log: slog.New(slog.NewTextHandler(&logs, nil)).With("agent", "a-1")}}
	c.once.Do(func() {}) // no QUIC connection behind it: close is a no-op
	e.connMu.Lock()
	e.byAgent["a-1"] = map[*conn]struct{}{c: {}}
	e.connMu.Unlock()

	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a-1", "old-1"} {
		if !e.isRevoked(id) {
			t.Errorf("%s not revoked after the refresh", id)
		}
	}
	if e.isRevoked("a-2") {
		t.Error("a-2 revoked")
	}
	if !strings.Contains(logs.String(), "disconnecting revoked agent") {
		t.Error("the refresh did not disconnect a-1, revoked while it read the store")
	}
}
