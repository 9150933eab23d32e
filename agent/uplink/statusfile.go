package uplink

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/internal/fsutil"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// The waiting model status reports outlive the process in a small file in
// the agent's state directory (Config.StatusFile), so that a restart (a
// crash, an upgrade, systemd restarting the agent after a failed model)
// does not lose the outcome of a rollout. The file holds what the queue
// holds: the latest report per key, unsent or written less than
// statusResendWindow before its session ended or the agent stopped, in
// report order. It is rewritten (fsutil.WriteFile: a synced temporary file
// renamed over it, mode 0600) whenever that set changes: at every report,
// and when delivered reports are forgotten. A new process loads it before
// anything can report (New), so a restored report is older than every
// report made since and never replaces one; all restored reports are sent
// on the first session, since nothing tells whether the last one
// delivered them (the server takes a repeated report as the same one).
// The server keeps whatever report of a key comes last, so the file must
// never hold a report older than one sent: a report goes to the server
// only once the write that keeps it is done (a crash in that write left
// the key's older report in the file, sent again after the newer one),
// and a write that fails removes the file (the reports it still held may
// have been replaced since; the queue's are kept in memory only, as
// logged).
//
// A damaged file (reports that do not match their checksum, a torn or
// foreign file, a symbolic link or named pipe in its place) does not stop
// the agent: it is moved aside to
// StatusFile.corrupt-TIME, kept for a look by hand, logged, and reported as
// uplink_model_status_corrupt_files for as long as it is there; the reports
// it held are lost. A file that cannot be read for another reason
// (permissions) is logged and left alone.

// StatusFile is the file's name in the agent's state directory.
const StatusFile = "model-status.json"

// statusFileVersion is the format of the file.
const statusFileVersion = 1

// maxStoredStatus bounds one report in the file (encoded bytes). The
// updater's reasons are cut well below it (plugin errors to 4 KiB); a
// larger report is still sent, but not kept across a restart.
const maxStoredStatus = 64 << 10

// maxStatusFileSize bounds the file: maxPendingStatus reports of
// maxStoredStatus bytes, base64-encoded, fit.
const maxStatusFileSize = 8 << 20

// statusAsideMark joins a damaged file's name and the time it was moved
// aside: model-status.json.corrupt-20261129T140000Z.
const statusAsideMark = ".corrupt-"

// statusFile is what the file holds.
type statusFile struct {
	Version int `json:"version"`
	// Reports are wirev1.ModelStatus messages (binary protobuf: fields a
	// later agent adds survive a downgrade), oldest first.
	Reports [][]byte `json:"reports"`
	// SHA256 is the hex SHA-256 of the reports, each preceded by its
	// length (8 bytes, big endian).
	SHA256 string `json:"sha256"`
}

// writeStatusFile writes the file (a variable for the tests of a failing
// write).
var writeStatusFile = fsutil.WriteFile

// errStatusFileDamaged marks a file that is not one this code wrote.
var errStatusFileDamaged = errors.New("damaged")

func statusFileSum(reports [][]byte) string {
	h := sha256.New()
	var n [8]byte
	for _, r := range reports {
		binary.BigEndian.PutUint64(n[:], uint64(len(r)))
		h.Write(n[:])
		h.Write(r)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// encodeStatusFile returns the file's contents for sts (oldest first).
// Reports above maxStoredStatus are left out.
func encodeStatusFile(sts []*wirev1.ModelStatus) ([]byte, error) {
	f := statusFile{Version: statusFileVersion, Reports: [][]byte{}}
	for _, st := range sts {
		b, err := proto.Marshal(st)
		if err != nil {
			return nil, fmt.Errorf("encode model status: %w", err)
		}
		if len(b) > maxStoredStatus {
			continue
		}
		f.Reports = append(f.Reports, b)
	}
	f.SHA256 = statusFileSum(f.Reports)
	return json.Marshal(f)
}

// decodeStatusFile parses the file's contents; every error wraps
// errStatusFileDamaged.
func decodeStatusFile(data []byte) ([]*wirev1.ModelStatus, error) {
	if len(data) > maxStatusFileSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errStatusFileDamaged, len(data), maxStatusFileSize)
	}
	var f statusFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %w", errStatusFileDamaged, err)
	}
	if f.Version != statusFileVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", errStatusFileDamaged, f.Version, statusFileVersion)
	}
	if f.SHA256 != statusFileSum(f.Reports) {
		return nil, fmt.Errorf("%w: reports do not match their checksum", errStatusFileDamaged)
	}
	sts := make([]*wirev1.ModelStatus, 0, len(f.Reports))
	for i, b := range f.Reports {
		if len(b) > maxStoredStatus {
			return nil, fmt.Errorf("%w: report %d: %d bytes, limit %d", errStatusFileDamaged, i, len(b), maxStoredStatus)
		}
		st := &wirev1.ModelStatus{}
		if err := proto.Unmarshal(b, st); err != nil {
			return nil, fmt.Errorf("%w: report %d: %w", errStatusFileDamaged, i, err)
		}
		sts = append(sts, st)
	}
	return sts, nil
}

// readStatusFile reads the reports kept at path, oldest first (a missing
// file: fs.ErrNotExist). The agent writes the file itself, by rename: a
// symbolic link or anything but a regular file there is taken as damaged,
// and never waited on (a named pipe without a writer would hold the
// agent's start for good: the open does not block, then fstat refuses it).
func readStatusFile(path string) ([]*wirev1.ModelStatus, error) {
	data, err := fsutil.ReadRegularNoFollow(path, maxStatusFileSize)
	if errors.Is(err, fsutil.ErrNotRegular) || errors.Is(err, fsutil.ErrTooLarge) {
		return nil, fmt.Errorf("read model status file: %w: %w", errStatusFileDamaged, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read model status file: %w", err)
	}
	sts, err := decodeStatusFile(data)
	if err != nil {
		return nil, fmt.Errorf("read model status file %s: %w", path, err)
	}
	return sts, nil
}

// open makes the queue keep its reports in the file at path and restores
// those the file holds. It runs before the queue is used.
func (q *statusQueue) open(path string, log *slog.Logger) {
	q.file, q.log = path, log
	removeStatusTemps(path, log)
	sts, err := readStatusFile(path)
	switch {
	case err == nil:
		if n := q.restore(sts); n > 0 {
			log.Info("model status reports of the last run restored: sending them on the first session", "reports", n, "file", path)
		}
	case errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, errStatusFileDamaged):
		aside := path + statusAsideMark + time.Now().UTC().Format("20060102T150405Z")
		if rerr := os.Rename(path, aside); rerr != nil {
			// The next write replaces it.
			log.Error("model status file damaged: the reports that waited in it are lost; moving it aside failed",
				"err", err, "move_err", rerr)
			q.corruptAside = 1
			break
		}
		log.Error("model status file damaged: moved aside; the reports that waited in it are lost",
			"err", err, "moved_to", aside)
	default:
		// Not damaged, unreadable (permissions?): left alone. The next
		// write would replace it, and probably fails the same way.
		log.Error("model status file unreadable: the reports that waited in it are not sent", "err", err)
	}
	names, _ := filepath.Glob(path + statusAsideMark + "*") // the pattern is well-formed
	q.corruptAside += uint64(len(names))
}

// restore adds reports kept by the last run (oldest first) behind those
// already queued: a key that holds a report made since the start keeps it.
// Beyond maxPendingStatus the oldest go, counted as dropped. It returns
// how many were restored.
func (q *statusQueue) restore(sts []*wirev1.ModelStatus) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if extra := len(sts) - maxPendingStatus; extra > 0 { // a file this code did not write
		q.dropped += uint64(extra)
		q.ver++ // rewrite it bounded
		sts = sts[extra:]
	}
	g0, n := q.gen, 0
	for _, st := range sts {
		k := keyOf(st)
		if e := q.m[k]; e != nil {
			if e.gen > g0 { // restored just before: the file's later report is newer
				q.gen++
				e.st, e.gen = st, q.gen
				q.ver++
			}
			continue
		}
		if len(q.m) >= maxPendingStatus {
			q.evictLocked()
		}
		q.gen++
		q.m[k] = &statusEntry{st: st, gen: q.gen}
		n++
	}
	q.restored += uint64(n)
	if q.flushed == g0 {
		q.flushed = q.gen // restored from the file: nothing newer is held back by them
	}
	if n > 0 {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return n
}

// save writes the reports kept to the file, if they changed since the last
// write (and the queue has a file). A failure is logged once until a write
// succeeds again; the reports stay queued in memory.
func (q *statusQueue) save() {
	if q.file == "" {
		return
	}
	q.saveMu.Lock()
	defer q.saveMu.Unlock()
	q.mu.Lock()
	ver, gen := q.ver, q.gen
	if ver == q.savedVer {
		q.flushedLocked(gen)
		q.mu.Unlock()
		return
	}
	type kept struct {
		gen uint64
		st  *wirev1.ModelStatus // never changed once queued
	}
	ks := make([]kept, 0, len(q.m))
	for _, e := range q.m {
		ks = append(ks, kept{e.gen, e.st})
	}
	q.mu.Unlock()
	slices.SortFunc(ks, func(a, b kept) int { return cmp.Compare(a.gen, b.gen) })
	sts := make([]*wirev1.ModelStatus, len(ks))
	for i, k := range ks {
		sts[i] = k.st
	}
	data, err := encodeStatusFile(sts)
	if err == nil {
		err = writeStatusFile(q.file, data, 0o600)
	}
	if err != nil {
		// What the file still holds is older than the queue: a report it
		// keeps for a key may have been replaced, sent and forgotten, and
		// sent again after a restart it would set the server's record back.
		// Removing a file needs no space.
		rerr := os.Remove(q.file)
		if !q.saveFailing {
			q.log.Error("model status reports not kept on disk: a restart before they are delivered loses them", "err", err)
			if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				q.log.Error("model status file not removed: a restart sends its older reports again", "err", rerr)
			}
		}
		q.saveFailing = true
		q.mu.Lock()
		q.flushedLocked(gen) // sent all the same, kept in memory only
		q.mu.Unlock()
		return
	}
	if q.saveFailing {
		q.log.Info("model status reports kept on disk again", "file", q.file)
	}
	q.saveFailing = false
	q.mu.Lock()
	q.savedVer = ver
	q.flushedLocked(gen)
	q.mu.Unlock()
}

// flushedLocked records that the file write of the reports up to
// generation gen is done (or failed): next hands them to the sender from
// now on. A report sent before the file held it could, after a crash in
// the write, be followed by the older report of its key that the file
// still held. q.mu is held.
func (q *statusQueue) flushedLocked(gen uint64) {
	if gen <= q.flushed {
		return
	}
	q.flushed = gen
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// fileCounts returns the reports restored at the start and the damaged
// files moved aside.
func (q *statusQueue) fileCounts() (restored, corruptAside uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.restored, q.corruptAside
}

// oversized reports whether st is too large to be kept in the file.
func oversized(st *wirev1.ModelStatus) bool {
	return proto.Size(st) > maxStoredStatus
}

// removeStatusTemps removes the temporary files of the status file's
// writes that a crash left behind (fsutil.TempPrefix): open runs before this
// process writes any, and they would otherwise pile up in the state
// directory. Only regular files are removed.
func removeStatusTemps(path string, log *slog.Logger) {
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), fsutil.TempPrefix+filepath.Base(path)+"-*"))
	for _, p := range left {
		if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := os.Remove(p); err != nil {
			log.Warn("model status file: cannot remove a temporary file left by a crash", "file", p, "err", err)
		}
	}
}
