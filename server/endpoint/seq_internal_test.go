package endpoint

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestAgentCommitsWait: HelloAck's highest seq is read only after the
// agent's batches still committing are done (one of an earlier connection
// committing meanwhile would be missed), and the wait is bounded.
func TestAgentCommitsWait(t *testing.T) {
	var a agentCommits
	ctx := context.Background()
	if err := a.wait(ctx, "a1"); err != nil {
		t.Fatalf("wait with nothing committing: %v", err)
	}
	a.begin("a1")
	a.begin("a1")
	a.begin("a2")
	done := make(chan error, 1)
	go func() { done <- a.wait(ctx, "a1") }()
	a.end("a1")
	a.end("a2")
	select {
	case err := <-done:
		t.Fatalf("wait returned (%v) with a batch of a1 still committing", err)
	case <-time.After(50 * time.Millisecond):
	}
	a.end("a1")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return once a1's batches were committed")
	}
	a.begin("a1")
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := a.wait(tctx, "a1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past its deadline: %v", err)
	}
	a.end("a1")
	a.end("a1") // an extra end is harmless
	if len(a.m) != 0 {
		t.Fatalf("%d agents left in the map", len(a.m))
	}
}
