package spool

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestSyncSeqs: a spool compares its seqs with the server's highest stored
// seq (HelloAck.highest_seq) and renumbers its waiting findings above it
// when it is new (never compared) or went backwards; the renumbering keeps
// the order, the contents and the severity index, and survives a reopen.
func TestSyncSeqs(t *testing.T) {
	tests := []struct {
		name    string
		legacy  bool   // file of an older agent (no seq_synced)
		synced  bool   // compared first with a server that held nothing
		appends int    // findings appended (seqs 1..appends)
		acks    uint64 // acknowledged through
		highest uint64
		want    bool   // renumbered
		first   uint64 // first new seq (want)
	}{
		{name: "new spool, server has nothing", appends: 5, highest: 0},
		{name: "new spool, server holds 300", appends: 5, highest: 300, want: true, first: 301},
		{name: "new spool, nothing waiting", highest: 300, want: true, first: 301},
		{name: "new spool numbered past highest offline", appends: 50, highest: 20, want: true, first: 51},
		{name: "new spool, all acked, past highest", appends: 30, acks: 30, highest: 20, want: true, first: 31},
		{name: "compared spool ahead of the server", synced: true, appends: 10, acks: 4, highest: 7},
		{name: "compared spool went backwards", synced: true, appends: 10, acks: 4, highest: 500, want: true, first: 501},
		{name: "older agent's file ahead", legacy: true, appends: 10, highest: 10},
		{name: "older agent's file backwards", legacy: true, appends: 3, highest: 10, want: true, first: 11},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "s.db")
			s := open(t, path, 0)
			if tc.legacy {
				if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keySeqSynced) }); err != nil {
					t.Fatal(err)
				}
				s.Close()
				s = open(t, path, 0)
			}
			if tc.synced {
				if _, ok, err := s.SyncSeqs(0); ok || err != nil {
					t.Fatalf("SyncSeqs(0): %v, %v", ok, err)
				}
			}
			in := slices.Concat(batch(tc.appends/2, wirev1.Severity_SEVERITY_LOW, "l"),
				batch(tc.appends-tc.appends/2, wirev1.Severity_SEVERITY_HIGH, "h"))
			if err := s.Append(ctx, in); err != nil {
				t.Fatal(err)
			}
			if tc.acks > 0 {
				if err := s.Ack(tc.acks); err != nil {
					t.Fatal(err)
				}
			}
			before := s.Stats()
			waiting, err := s.Peek(1000, 0)
			if err != nil {
				t.Fatal(err)
			}
			r, ok, err := s.SyncSeqs(tc.highest)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.want {
				t.Fatalf("renumbered %v, want %v (%+v)", ok, tc.want, r)
			}
			check := func(s *Spool) {
				t.Helper()
				st := s.Stats()
				if !tc.want {
					if st.NextSeq != before.NextSeq || st.AckedSeq != before.AckedSeq || st.Depth != before.Depth {
						t.Fatalf("stats changed without renumbering: %v -> %v", before, st)
					}
					return
				}
				wantNext := tc.first + uint64(len(waiting))
				if st.NextSeq != wantNext || st.AckedSeq != tc.first-1 || st.Depth != before.Depth || st.Bytes != before.Bytes {
					t.Fatalf("after renumbering: %v, want next %d, acked %d, depth and bytes as %v", st, wantNext, tc.first-1, before)
				}
				got, err := s.Peek(1000, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(waiting) {
					t.Fatalf("%d findings waiting after renumbering, want %d", len(got), len(waiting))
				}
				for i, f := range got {
					if f.Seq != tc.first+uint64(i) || f.Summary != waiting[i].Summary {
						t.Fatalf("finding %d: seq %d %q, want %d %q", i, f.Seq, f.Summary, tc.first+uint64(i), waiting[i].Summary)
					}
				}
				if s.Renumbers() != 1 {
					t.Fatalf("renumbers %d, want 1", s.Renumbers())
				}
			}
			check(s)
			// Compared now: the same answer again changes nothing.
			if _, ok, err := s.SyncSeqs(tc.highest); ok || err != nil {
				t.Fatalf("second SyncSeqs: %v, %v", ok, err)
			}
			s.Close()
			s = open(t, path, 0)
			defer s.Close()
			check(s)
			// The index follows: new findings go on after, acks and
			// low-severity drops work on the new seqs.
			if err := s.Append(ctx, batch(2, wirev1.Severity_SEVERITY_MEDIUM, "m")); err != nil {
				t.Fatal(err)
			}
			st := s.Stats()
			if err := s.Ack(st.NextSeq - 1); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); st.Depth != 0 || st.Bytes != 0 {
				t.Fatalf("after acking everything: %v", st)
			}
			if d := s.DepthBySeverity(); d != [numSev]int{} {
				t.Fatalf("severity index after acking everything: %v", d)
			}
		})
	}
}

// TestSyncSeqsOutOfRange: a highest seq that leaves no room is refused.
func TestSyncSeqsOutOfRange(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "s.db"), 0)
	defer s.Close()
	if _, _, err := s.SyncSeqs(1 << 63); err == nil {
		t.Fatal("SyncSeqs(2^63) accepted")
	}
}
