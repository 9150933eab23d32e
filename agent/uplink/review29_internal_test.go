package uplink

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/internal/fsutil"
)

// failStatusWrites makes every write of the status file fail with err
// until the test ends.
func failStatusWrites(t *testing.T, err error) {
	t.Helper()
	prev := writeStatusFile
	writeStatusFile = func(string, []byte, os.FileMode) error { return err }
	t.Cleanup(func() { writeStatusFile = prev })
}

// TestStatusFileFailedWriteLeavesNoStaleReport: when the file cannot be
// rewritten (the state directory full: ENOSPC), the reports it still
// holds are older than the queue's. They must not come back after a
// restart: the server upserts every report it gets, so a restored
// "fetched" sent after the "active" that replaced it (delivered, then
// forgotten) set the rollout's record for the agent back to "fetched".
func TestStatusFileFailedWriteLeavesNoStaleReport(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	path := filepath.Join(t.TempDir(), StatusFile)
	q := openQueue(t, path)
	q.put(modelStatus("netflow", "sha256:a", "r1", "fetched"))
	q.save()
	if got, want := fmt.Sprint(fileStates(t, path)), "[netflow/r1/fetched]"; got != want {
		t.Fatalf("file holds %s, want %s", got, want)
	}

	failStatusWrites(t, fmt.Errorf("write %s: %w", path, syscall.ENOSPC))
	q.put(modelStatus("netflow", "sha256:a", "r1", "active"))
	q.save()
	if got, want := fmt.Sprint(drain(q, t0)), "[netflow/r1/active]"; got != want {
		t.Fatalf("sent %s, want %s", got, want)
	}
	q.prune(t0.Add(statusResendWindow)) // delivered
	q.save()

	// The agent restarts.
	q2 := openQueue(t, path)
	if sent := drain(q2, t0.Add(time.Hour)); slices.Contains(sent, "netflow/r1/fetched") {
		t.Fatalf("after a failed write, a restart sent the replaced report again: %v", sent)
	}
}

// TestStatusReportSentOnlyOnceKept: a report is handed to the control
// writer only once the file write that covers it is done. Sent before, a
// crash during that write (its fsync) left the file with the key's older
// report, which the next start sent after the newer one the server already
// had.
func TestStatusReportSentOnlyOnceKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), StatusFile)
	q := openQueue(t, path)
	q.put(modelStatus("netflow", "sha256:a", "r1", "fetched"))
	q.save()
	drain(q, time.Now())

	entered, release := make(chan struct{}), make(chan struct{})
	prev := writeStatusFile
	writeStatusFile = func(p string, b []byte, m os.FileMode) error {
		close(entered)
		<-release
		return fsutil.WriteFile(p, b, m)
	}
	t.Cleanup(func() { writeStatusFile = prev })

	q.put(modelStatus("netflow", "sha256:a", "r1", "active"))
	done := make(chan struct{})
	go func() { defer close(done); q.save() }()
	<-entered
	st, _ := q.next()
	close(release)
	<-done
	if st != nil {
		t.Fatalf("report %s handed to the sender while the file still held the older one", st.State)
	}
	if got, want := fmt.Sprint(drain(q, time.Now())), "[netflow/r1/active]"; got != want {
		t.Fatalf("after the write, sent %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(fileStates(t, path)), "[netflow/r1/active]"; got != want {
		t.Fatalf("file holds %s, want %s", got, want)
	}
}

// TestStatusFileWriteFailureStillSends: a report the file could not take
// is sent all the same (kept in memory only, as before the file).
func TestStatusFileWriteFailureStillSends(t *testing.T) {
	path := filepath.Join(t.TempDir(), StatusFile)
	q := openQueue(t, path)
	failStatusWrites(t, syscall.EROFS)
	q.put(modelStatus("netflow", "sha256:a", "r1", "rejected"))
	q.save()
	if got, want := fmt.Sprint(drain(q, time.Now())), "[netflow/r1/rejected]"; got != want {
		t.Fatalf("sent %s, want %s", got, want)
	}
}
