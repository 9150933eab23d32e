package uplink

import (
	"log/slog"
	"sync"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Model status reports (the updater's ModelStatus: offered, fetched, active,
// rejected, shadow summaries, ...) must reach the server even when the link
// is down when they are made, or breaks right after they are written: the
// server repeats only pending offers at Hello, so a lost "active" or
// "rejected" leaves the rollout without the agent's outcome. The server
// keeps one status per (agent, digest, rollout) and each report replaces
// the previous one, so the client keeps the same: the latest report per
// (detector, digest, rollout), until it was sent and its session then
// lasted statusResendWindow (QUIC delivers what a live connection was
// given). Reports written less than that before their session ended are
// sent again on the next session; the server takes a repeated report as
// the same one (it is an upsert with the report's own time). With a
// Config.StatusFile the reports kept also outlive the process
// (statusfile.go).

// maxPendingStatus bounds the reports kept (distinct keys). An agent has a
// few detectors and one install or shadow model at a time per detector, so
// this is never reached in practice; beyond it the oldest report goes
// (a sent one first), counted.
const maxPendingStatus = 64

// statusResendWindow: a report written less than this before its session
// ended may have died with the connection (the idle timeout and the ack
// timeout are below it), so it is sent again.
const statusResendWindow = 2 * time.Minute

type statusKey struct{ detector, digest, rollout string }

type statusEntry struct {
	st     *wirev1.ModelStatus
	gen    uint64    // order of the last report (a replaced report gets a new one)
	sentAt time.Time // zero: to send
}

// statusQueue holds the latest model status per key. Safe for concurrent use.
type statusQueue struct {
	mu      sync.Mutex
	m       map[statusKey]*statusEntry
	gen     uint64
	wake    chan struct{} // a report is waiting (coalesced)
	dropped uint64        // unsent reports evicted because the queue was full
	resent  uint64        // reports sent again after their session ended

	// The file that keeps the reports across restarts (statusfile.go).
	file         string       // "": memory only
	log          *slog.Logger // set with file
	ver          uint64       // bumped by every change of the reports kept
	savedVer     uint64       // the ver the file holds
	restored     uint64       // reports restored from the file at the start
	corruptAside uint64       // damaged files moved aside (or left in place)
	saveMu       sync.Mutex   // orders writes of the file; taken before mu
	saveFailing  bool         // the last write failed (logged); under saveMu
	flushed      uint64       // reports up to this gen went through a file write (with file: next sends no other)
}

func newStatusQueue() *statusQueue {
	return &statusQueue{m: map[statusKey]*statusEntry{}, wake: make(chan struct{}, 1)}
}

func keyOf(st *wirev1.ModelStatus) statusKey {
	m := st.GetModel()
	return statusKey{detector: m.GetDetector(), digest: m.GetDigest(), rollout: st.GetRolloutId()}
}

// put keeps st as the latest report of its key, to send. It never blocks.
// It returns the unsent report it evicted, if any (the queue was full).
func (q *statusQueue) put(st *wirev1.ModelStatus) (evicted *wirev1.ModelStatus) {
	if st == nil {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.gen++
	q.ver++
	k := keyOf(st)
	if e := q.m[k]; e != nil {
		e.st, e.gen, e.sentAt = st, q.gen, time.Time{}
	} else {
		if len(q.m) >= maxPendingStatus {
			evicted = q.evictLocked()
		}
		q.m[k] = &statusEntry{st: st, gen: q.gen}
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return evicted
}

// evictLocked removes the oldest sent report or, if none was sent, the
// oldest report (returned: it is lost, and counted).
func (q *statusQueue) evictLocked() *wirev1.ModelStatus {
	var oldest, oldestSent statusKey
	var og, osg uint64
	for k, e := range q.m {
		if !e.sentAt.IsZero() && (osg == 0 || e.gen < osg) {
			oldestSent, osg = k, e.gen
		}
		if og == 0 || e.gen < og {
			oldest, og = k, e.gen
		}
	}
	q.ver++
	if osg != 0 {
		delete(q.m, oldestSent)
		return nil
	}
	st := q.m[oldest].st
	delete(q.m, oldest)
	q.dropped++
	return st
}

// next returns the oldest report to send (nil: none) and its generation,
// for sent.
func (q *statusQueue) next() (*wirev1.ModelStatus, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var best *statusEntry
	for _, e := range q.m {
		if q.file != "" && e.gen > q.flushed {
			continue // not in the file yet (save)
		}
		if e.sentAt.IsZero() && (best == nil || e.gen < best.gen) {
			best = e
		}
	}
	if best == nil {
		return nil, 0
	}
	return best.st, best.gen
}

// sent records that the report of generation gen was written at now (unless
// a newer report of its key replaced it meanwhile: that one is still to send).
func (q *statusQueue) sent(st *wirev1.ModelStatus, gen uint64, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e := q.m[keyOf(st)]; e != nil && e.gen == gen {
		e.sentAt = now
	}
}

// sessionEnded marks the reports written less than statusResendWindow
// before end to be sent again, and forgets the older ones (delivered). It
// returns how many will be sent again.
func (q *statusQueue) sessionEnded(end time.Time) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for k, e := range q.m {
		switch {
		case e.sentAt.IsZero():
		case end.Sub(e.sentAt) < statusResendWindow:
			e.sentAt = time.Time{}
			n++
		default:
			delete(q.m, k)
			q.ver++
		}
	}
	q.resent += uint64(n)
	return n
}

// prune forgets the reports sent at least statusResendWindow ago on a
// session that is still up (delivered).
func (q *statusQueue) prune(now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, e := range q.m {
		if !e.sentAt.IsZero() && now.Sub(e.sentAt) >= statusResendWindow {
			delete(q.m, k)
			q.ver++
		}
	}
}

// counts returns the dropped and resent counters.
func (q *statusQueue) counts() (dropped, resent uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped, q.resent
}
