package store

import (
	"context"
	"errors"
	"testing"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestHighestSeq: the highest seq stored per agent (HelloAck.highest_seq),
// 0 for an agent with none.
func TestHighestSeq(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	ins := func(agent string, seqs ...uint64) {
		t.Helper()
		var fs []*wirev1.Finding
		for _, s := range seqs {
			fs = append(fs, &wirev1.Finding{Seq: s, Detector: "netflow", Severity: wirev1.Severity_SEVERITY_LOW})
		}
		if _, err := db.InsertFindings(ctx, agent, "e1", fs); err != nil {
			t.Fatal(err)
		}
	}
	ins("a1", 1, 2, 3, 90)
	ins("a1", 5) // below the highest: still 90
	ins("a2", 7)
	for _, tc := range []struct {
		agent string
		want  uint64
	}{{"a1", 90}, {"a2", 7}, {"a3", 0}} {
		got, err := db.HighestSeq(ctx, tc.agent)
		if err != nil || got != tc.want {
			t.Errorf("HighestSeq(%s) = %d, %v; want %d", tc.agent, got, err, tc.want)
		}
	}
	if _, err := db.HighestSeq(ctx, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("HighestSeq without agent: %v", err)
	}
}
