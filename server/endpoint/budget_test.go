package endpoint

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestBudget: acquire waits while the budget is spent, wakes on release,
// gives up with its context, and lets a request above the whole budget
// through when nothing else holds any.
func TestBudget(t *testing.T) {
	b := budget{max: 10, freed: make(chan struct{})}
	ctx := context.Background()
	if err := b.acquire(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if err := b.acquire(ctx, 4); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- b.acquire(ctx, 5) }()
	select {
	case err := <-got:
		t.Fatalf("acquired over budget: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.release(4) // 6 used: 5 more still does not fit
	select {
	case err := <-got:
		t.Fatalf("acquired over budget: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.release(6)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() { got <- b.acquire(cctx, 6) }()
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled acquire: %v", err)
	}
	b.release(5)
	if err := b.acquire(ctx, 50); err != nil { // alone: proceeds
		t.Fatal(err)
	}
	if b.used != 50 {
		t.Fatalf("used %d", b.used)
	}
}
