package store

import (
	"context"
	"testing"
	"time"
)

// BenchmarkPruneFindings measures one retention transaction of 5,000
// findings (with their detail blobs and every index of the findings
// table), which is how long the single writer is held by the job: ns/op is
// per transaction.
func BenchmarkPruneFindings(b *testing.B) {
	const batch = 5000
	ctx := context.Background()
	db := openTest(b)
	clockAt(db, retT0)
	for i := range uint64(b.N) {
		for j := uint64(0); j < batch; j += 500 {
			if _, err := db.InsertFindings(ctx, "a1", "e1", mkFindings(1+i*batch+j, 500, "netflow")); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for range b.N {
		n, err := db.PruneFindings(ctx, retT0.Add(time.Hour), batch)
		if err != nil || n != batch {
			b.Fatalf("pruned %d, %v", n, err)
		}
	}
}
