package api

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// fastStreams points fx at an API whose live streams poll every 20 ms.
func fastStreams(t *testing.T, fx *fixture) {
	t.Helper()
	fx.srv = httptest.NewServer(New(fx.db, Options{StreamPoll: 20 * time.Millisecond}))
	t.Cleanup(fx.srv.Close)
}

// insertN commits n findings of agent a-1 (acme) in one batch, seqs from first.
func insertN(t *testing.T, db *store.DB, first, n int) {
	t.Helper()
	fs := make([]*wirev1.Finding, 0, n)
	for i := range n {
		fs = append(fs, &wirev1.Finding{Seq: uint64(first + i), Detector: "netflow", TimeUnixNano: time.Now().UnixNano(),
			Severity: wirev1.Severity_SEVERITY_HIGH, Score: 2, Threshold: 1, Summary: "bulk"})
	}
	if _, err := db.InsertFindings(context.Background(), "a-1", "acme", fs); err != nil {
		t.Fatal(err)
	}
}

// storedIDs returns the id of every stored finding, ascending.
func storedIDs(t *testing.T, db *store.DB) []int64 {
	t.Helper()
	var ids []int64
	f := store.FindingFilter{Ascending: true, Limit: 1000}
	for {
		fs, err := db.ListFindings(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		for _, fi := range fs {
			ids = append(ids, fi.ID)
			f.AfterID = fi.ID
		}
		if len(fs) < f.Limit {
			return ids
		}
	}
}

// TestLiveStreamExactIDs checks the exact sequence a stream delivers: every
// finding once, oldest first, also when the cursor starts at 0 (an empty
// database, or ?after=0) and when more than one page (streamBatch) is due
// at once.
func TestLiveStreamExactIDs(t *testing.T) {
	const bulk = 2*streamBatch + 203
	tests := []struct {
		name  string
		query string
		// before the stream opens, and after it took its starting point
		before, after []int
	}{
		{name: "empty database", after: []int{3, bulk}},
		{name: "after=0 empty database", query: "?after=0", after: []int{3, bulk}},
		{name: "after=0 replay", query: "?after=0", before: []int{bulk}, after: []int{3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db, err := store.Open(ctx, filepath.Join(t.TempDir(), "stream.db"), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			tok, err := db.CreateUser(ctx, "admin", store.RoleAdmin, "", "test")
			if err != nil {
				t.Fatal(err)
			}
			if err := db.RegisterAgent(ctx, store.Agent{ID: "a-1", Entity: "acme", Hostname: "h", CertSerial: "01",
				CertNotAfter: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			fx := &fixture{db: db, tok: map[string]string{"admin": tok}}
			fastStreams(t, fx)
			seq := 1
			for _, n := range tt.before {
				insertN(t, db, seq, n)
				seq += n
			}
			ch, stop := openStream(t, fx, "admin", tt.query, nil)
			defer stop()
			time.Sleep(100 * time.Millisecond) // several polls: the stream has its starting point
			for _, n := range tt.after {
				insertN(t, db, seq, n)
				seq += n
				time.Sleep(100 * time.Millisecond) // polled before the next batch
			}
			want := storedIDs(t, db)
			if len(want) != seq-1 {
				t.Fatalf("stored %d findings, want %d", len(want), seq-1)
			}
			got := collect(t, ch, len(want), 10*time.Second)
			// Anything more is a duplicate.
			got = append(got, collect(t, ch, 1, 300*time.Millisecond)...)
			ids := make([]int64, len(got))
			for i, f := range got {
				ids[i] = f.ID
			}
			if !slices.Equal(ids, want) {
				t.Fatalf("stream delivered %d ids %s, want %d ids %s", len(ids), head(ids), len(want), head(want))
			}
		})
	}
}

// head formats the first ids of a list for a failure message.
func head(ids []int64) string {
	if len(ids) > 12 {
		return fmt.Sprint(ids[:12]) + "..."
	}
	return fmt.Sprint(ids)
}

// TestLiveStreamEndsWhenUserDisabled: the token is checked again while the
// stream runs; a user disabled after opening it gets nothing more and the
// stream ends (its reconnect then gets 401).
func TestLiveStreamEndsWhenUserDisabled(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t)
	fastStreams(t, fx)
	ch, stop := openStream(t, fx, "ea", "", nil)
	defer stop()
	time.Sleep(100 * time.Millisecond)
	insert(t, fx, "a-1", "acme", 200, "before disable")
	if got := collect(t, ch, 1, 5*time.Second); len(got) != 1 || got[0].Summary != "before disable" {
		t.Fatalf("before disable: got %+v", got)
	}
	users, err := fx.db.ListUsers(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(users, func(u store.User) bool { return u.Name == "ea" })
	if i < 0 {
		t.Fatal("user ea not found")
	}
	if err := fx.db.SetUserDisabled(ctx, users[i].ID, true, "admin"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // several polls
	insert(t, fx, "a-1", "acme", 201, "after disable")
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				if code, _ := fx.do(t, "ea", "GET", "/api/v1/findings/stream", ""); code != 401 {
					t.Errorf("reconnect of the disabled user: %d, want 401", code)
				}
				return // the stream ended
			}
			t.Fatalf("disabled user still receives findings: %s", ev.data)
		case <-deadline:
			t.Fatal("the stream of a disabled user is still open after 5 s")
		}
	}
}
