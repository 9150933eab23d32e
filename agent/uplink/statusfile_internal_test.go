package uplink

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// fileStates lists what the status file at path holds, oldest first.
func fileStates(t *testing.T, path string) []string {
	t.Helper()
	sts, err := readStatusFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, st := range sts {
		out = append(out, st.GetModel().GetDetector()+"/"+st.RolloutId+"/"+st.State)
	}
	return out
}

func openQueue(t *testing.T, path string) *statusQueue {
	t.Helper()
	q := newStatusQueue()
	q.open(path, slog.New(slog.DiscardHandler))
	return q
}

// TestStatusFileFollowsQueue: the file holds the reports the queue keeps,
// in report order: a report delivered (its session lasted the resend
// window after the write, or it ended that long after) leaves the file,
// one written shortly before its session ended stays.
func TestStatusFileFollowsQueue(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	path := filepath.Join(t.TempDir(), StatusFile)
	q := openQueue(t, path)
	q.put(modelStatus("netflow", "sha256:a", "r1", "offered"))
	q.put(modelStatus("file", "sha256:b", "r2", "offered"))
	q.put(modelStatus("netflow", "sha256:a", "r1", "active"))
	q.save()
	if got, want := fmt.Sprint(fileStates(t, path)), "[file/r2/offered netflow/r1/active]"; got != want {
		t.Fatalf("file holds %s, want %s", got, want)
	}

	drain(q, t0)
	q.put(modelStatus("netflow", "sha256:c", "r3", "shadow"))
	drain(q, t0.Add(time.Minute))
	q.prune(t0.Add(statusResendWindow)) // the first two delivered on a live session
	q.save()
	if got, want := fmt.Sprint(fileStates(t, path)), "[netflow/r3/shadow]"; got != want {
		t.Fatalf("after prune the file holds %s, want %s", got, want)
	}

	q.sessionEnded(t0.Add(time.Minute + time.Second)) // written 1 s before the end: kept
	q.save()
	if got, want := fmt.Sprint(fileStates(t, path)), "[netflow/r3/shadow]"; got != want {
		t.Fatalf("after a session end the file holds %s, want %s", got, want)
	}
	drain(q, t0.Add(2*time.Minute))
	q.sessionEnded(t0.Add(2*time.Minute + statusResendWindow))
	q.save()
	if got := fileStates(t, path); len(got) != 0 {
		t.Fatalf("delivered reports still in the file: %v", got)
	}
}

// TestStatusFileRestore: restored reports come first, in their order, and
// never replace a report made since the start; beyond maxPendingStatus the
// oldest go, counted as dropped.
func TestStatusFileRestore(t *testing.T) {
	t.Run("newer kept", func(t *testing.T) {
		q := newStatusQueue()
		q.put(modelStatus("netflow", "sha256:a", "r1", "active"))
		n := q.restore([]*wirev1.ModelStatus{
			modelStatus("netflow", "sha256:a", "r1", "fetched"),
			modelStatus("file", "sha256:b", "r2", "rejected"),
		})
		if n != 1 {
			t.Fatalf("restored %d, want 1", n)
		}
		if got, want := fmt.Sprint(drain(q, time.Now())), "[netflow/r1/active file/r2/rejected]"; got != want {
			t.Fatalf("sent %s, want %s", got, want)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), StatusFile)
		var sts []*wirev1.ModelStatus
		for i := range maxPendingStatus + 6 {
			sts = append(sts, modelStatus("d", fmt.Sprintf("sha256:%d", i), "r", "offered"))
		}
		b, err := encodeStatusFile(sts)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		q := openQueue(t, path)
		if restored, _ := q.fileCounts(); restored != maxPendingStatus {
			t.Fatalf("restored %d, want %d", restored, maxPendingStatus)
		}
		if d, _ := q.counts(); d != 6 {
			t.Fatalf("dropped %d, want 6", d)
		}
		out := drain(q, time.Now())
		if len(out) != maxPendingStatus {
			t.Fatalf("%d to send, want %d", len(out), maxPendingStatus)
		}
		if q.m[statusKey{"d", "sha256:5", "r"}] != nil || q.m[statusKey{"d", "sha256:6", "r"}] == nil {
			t.Fatal("the oldest kept report is not sha256:6")
		}
		q.save()
		if got := fileStates(t, path); len(got) != maxPendingStatus {
			t.Fatalf("file holds %d reports, want %d", len(got), maxPendingStatus)
		}
	})
}

// TestStatusFileOversizedReport: a report too large for the file is sent
// all the same, but not kept across restarts (the others are).
func TestStatusFileOversizedReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), StatusFile)
	q := openQueue(t, path)
	big := modelStatus("netflow", "sha256:a", "r1", "rejected")
	big.Reason = strings.Repeat("x", maxStoredStatus)
	q.put(big)
	q.put(modelStatus("file", "sha256:b", "r2", "active"))
	q.save()
	if got, want := fmt.Sprint(fileStates(t, path)), "[file/r2/active]"; got != want {
		t.Fatalf("file holds %s, want %s", got, want)
	}
	if got := drain(q, time.Now()); len(got) != 2 {
		t.Fatalf("sent %v, want both", got)
	}
}

// TestStatusFileTempsRemoved: temporary files of writes a crash cut short
// (fsutil.WriteFile's) are removed when the queue opens its file; they
// piled up in the state directory. Other files, and a non-regular one of
// that name, are left alone.
func TestStatusFileTempsRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StatusFile)
	left := filepath.Join(dir, ".tmp-"+StatusFile+"-123456")
	other := filepath.Join(dir, ".tmp-identity.json-1")
	for _, p := range []string{left, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sub := filepath.Join(dir, ".tmp-"+StatusFile+"-dir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	openQueue(t, path)
	if _, err := os.Lstat(left); !os.IsNotExist(err) {
		t.Errorf("temporary file of the status file left: %v", err)
	}
	for _, p := range []string{other, sub} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}
