package store

import (
	"context"
	"fmt"
	"testing"
)

// TestInitForwarderCursor: the cursor is set only when the forwarder has
// none; a stored 0 is kept (it is a position, not "no cursor").
func TestInitForwarderCursor(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if c, err := db.InitForwarderCursor(ctx, "siem", 0); c != 0 || err != nil {
		t.Fatalf("first init: %d %v", c, err)
	}
	if c, err := db.InitForwarderCursor(ctx, "siem", 42); c != 0 || err != nil {
		t.Fatalf("init over a stored 0: %d %v, want 0 kept", c, err)
	}
	if err := db.SetForwarderCursor(ctx, "siem", 7); err != nil {
		t.Fatal(err)
	}
	if c, err := db.InitForwarderCursor(ctx, "siem", 42); c != 7 || err != nil {
		t.Fatalf("init over 7: %d %v", c, err)
	}
	if c, err := db.InitForwarderCursor(ctx, "other", 42); c != 42 || err != nil {
		t.Fatalf("init of a new forwarder: %d %v", c, err)
	}
}

// TestFindingNotesKeepsNewest: a finding's history shows at most 1000
// notes; when it has more, the newest (the current triage state and why)
// must be among them, not cut off.
func TestFindingNotesKeepsNewest(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	if _, err := db.InsertFindings(ctx, "a-1", "acme", mkFindings(1, 1, "netflow")); err != nil {
		t.Fatal(err)
	}
	fs, err := db.ListFindings(ctx, FindingFilter{})
	if err != nil || len(fs) != 1 {
		t.Fatalf("%d %v", len(fs), err)
	}
	id := fs[0].ID
	const n = 1001
	for i := range n {
		if _, err := db.TriageFinding(ctx, id, Triage{Comment: fmt.Sprintf("note %d", i)}, "ann"); err != nil {
			t.Fatal(err)
		}
	}
	notes, err := db.FindingNotes(ctx, id)
	if err != nil || len(notes) != 1000 {
		t.Fatalf("%d notes, %v", len(notes), err)
	}
	if first, last := notes[0].Comment, notes[len(notes)-1].Comment; first != "note 1" || last != fmt.Sprintf("note %d", n-1) {
		t.Errorf("notes run from %q to %q, want the newest 1000, oldest first", first, last)
	}
}
