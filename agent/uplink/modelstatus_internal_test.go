package uplink

import (
	"fmt"
	"testing"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func modelStatus(detector, digest, rollout, state string) *wirev1.ModelStatus {
	return &wirev1.ModelStatus{RolloutId: rollout, State: state,
		Model: &wirev1.ModelRef{Name: detector, Detector: detector, Digest: digest}}
}

// drain takes every waiting report as the control writer does, marking
// each written at now.
func drain(q *statusQueue, now time.Time) []string {
	var out []string
	for {
		st, gen := q.next()
		if st == nil {
			return out
		}
		q.sent(st, gen, now)
		out = append(out, st.GetModel().GetDetector()+"/"+st.RolloutId+"/"+st.State)
	}
}

// TestStatusQueue: the latest report per (detector, digest, rollout) is
// kept until delivered, in report order; reports written shortly before
// their session ended are sent again; beyond the bound the oldest report
// goes, a delivered one first, and an unsent one lost is counted.
func TestStatusQueue(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name string
		run  func(t *testing.T, q *statusQueue) []string
		want []string
		drop uint64
	}{
		{"latest per key, report order", func(t *testing.T, q *statusQueue) []string {
			q.put(modelStatus("netflow", "sha256:a", "r1", "offered"))
			q.put(modelStatus("file", "sha256:b", "r2", "offered"))
			q.put(modelStatus("netflow", "sha256:a", "r1", "fetched"))
			q.put(modelStatus("netflow", "sha256:a", "r1", "active"))
			q.put(modelStatus("netflow", "sha256:a", "r3", "shadow")) // another rollout of the same bundle
			return drain(q, t0)
		}, []string{"file/r2/offered", "netflow/r1/active", "netflow/r3/shadow"}, 0},
		{"written just before the session ended: again", func(t *testing.T, q *statusQueue) []string {
			q.put(modelStatus("netflow", "sha256:a", "r1", "active"))
			drain(q, t0)
			if n := q.sessionEnded(t0.Add(time.Second)); n != 1 {
				t.Fatalf("sessionEnded: %d to send again, want 1", n)
			}
			return drain(q, t0.Add(2*time.Second))
		}, []string{"netflow/r1/active"}, 0},
		{"delivered long before the session ended: forgotten", func(t *testing.T, q *statusQueue) []string {
			q.put(modelStatus("netflow", "sha256:a", "r1", "active"))
			drain(q, t0)
			q.sessionEnded(t0.Add(statusResendWindow))
			return drain(q, t0.Add(statusResendWindow+time.Second))
		}, nil, 0},
		{"pruned while connected", func(t *testing.T, q *statusQueue) []string {
			q.put(modelStatus("netflow", "sha256:a", "r1", "active"))
			drain(q, t0)
			q.prune(t0.Add(statusResendWindow))
			if len(q.m) != 0 {
				t.Fatalf("%d reports kept after the window", len(q.m))
			}
			q.sessionEnded(t0.Add(statusResendWindow + time.Second))
			return drain(q, t0.Add(statusResendWindow+2*time.Second))
		}, nil, 0},
		{"replaced while being written: the newer one goes too", func(t *testing.T, q *statusQueue) []string {
			q.put(modelStatus("netflow", "sha256:a", "r1", "fetched"))
			st, gen := q.next()
			q.put(modelStatus("netflow", "sha256:a", "r1", "active"))
			q.sent(st, gen, t0)
			return drain(q, t0)
		}, []string{"netflow/r1/active"}, 0},
		{"full: a delivered report goes first", func(t *testing.T, q *statusQueue) []string {
			q.put(modelStatus("d", "sha256:old", "r", "active"))
			drain(q, t0)
			for i := range maxPendingStatus - 1 {
				q.put(modelStatus("d", fmt.Sprintf("sha256:%d", i), "r", "offered"))
			}
			if ev := q.put(modelStatus("d", "sha256:new", "r", "offered")); ev != nil {
				t.Fatalf("evicted unsent %v while a delivered one was kept", ev)
			}
			out := drain(q, t0)
			return out[len(out)-1:]
		}, []string{"d/r/offered"}, 0},
		{"full of unsent: the oldest is lost, counted", func(t *testing.T, q *statusQueue) []string {
			for i := range maxPendingStatus {
				q.put(modelStatus("d", fmt.Sprintf("sha256:%d", i), "r", "offered"))
			}
			ev := q.put(modelStatus("d", "sha256:new", "r", "active"))
			if ev.GetModel().GetDigest() != "sha256:0" {
				t.Fatalf("evicted %v, want the oldest", ev)
			}
			out := drain(q, t0)
			if len(out) != maxPendingStatus {
				t.Fatalf("%d reports sent, want %d", len(out), maxPendingStatus)
			}
			return out[len(out)-1:]
		}, []string{"d/r/active"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := newStatusQueue()
			got := tc.run(t, q)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("sent %v, want %v", got, tc.want)
			}
			if d, _ := q.counts(); d != tc.drop {
				t.Fatalf("dropped %d, want %d", d, tc.drop)
			}
		})
	}
}
