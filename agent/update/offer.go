package update

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/rollback"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Fetcher downloads a bundle by digest from offset on, writing the bytes to w in order. It
// returns the bundle's total size as the server announced it. A Fetcher must stop (with an error)
// rather than write more than max-offset bytes.
type Fetcher interface {
	Fetch(ctx context.Context, digest string, offset, max uint64, w io.Writer) (total uint64, err error)
}

// ErrNotFound is returned by a Fetcher when the server has no bundle of that digest.
var ErrNotFound = errors.New("bundle not found on the server")

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// CheckOffer validates an offer from the server (outside input).
func CheckOffer(o *wirev1.ModelOffer, maxBundle int64) error {
	switch {
	case o == nil || o.Model == nil:
		return errors.New("offer without a model")
	case !digestRE.MatchString(o.Model.Digest):
		return fmt.Errorf("offer digest %.80q is not sha256:<64 hex>", o.Model.Digest)
	case o.Size == 0 || o.Size > uint64(maxBundle):
		return fmt.Errorf("offer size %d out of range (1..%d)", o.Size, maxBundle)
	case len(o.RolloutId) > 128 || len(o.Model.Name) > 64 || len(o.Model.Detector) > 64:
		return errors.New("offer fields too long")
	case o.Rollback && len(o.RollbackInstruction) == 0:
		return errors.New("rollback offer without a signed rollback instruction (a downgrade needs one)")
	case len(o.RollbackInstruction) > rollback.MaxSize:
		return fmt.Errorf("rollback instruction of %d bytes, at most %d", len(o.RollbackInstruction), rollback.MaxSize)
	}
	return nil
}

// HandleOffer queues an offer from the server; it never blocks (uplink.Config.OnModelOffer).
// A repeated offer (same rollout and digest) that is queued or in progress is ignored.
func (u *Updater) HandleOffer(o *wirev1.ModelOffer) {
	if err := CheckOffer(o, u.cfg.MaxBundle); err != nil {
		u.log.Warn("model offer refused", "err", err)
		st := &wirev1.ModelStatus{RolloutId: trunc(o.GetRolloutId(), 128), State: StateRejected, Reason: err.Error(),
			TimeUnixNano: u.cfg.Now().UnixNano(), Model: &wirev1.ModelRef{Digest: trunc(o.GetModel().GetDigest(), 80)}}
		u.reportStatus(st)
		return
	}
	key := o.RolloutId + "|" + o.Model.Digest
	u.queuedMu.Lock()
	if u.queued[key] {
		u.queuedMu.Unlock()
		return
	}
	u.queued[key] = true
	u.queuedMu.Unlock()
	select {
	case u.offers <- o:
	default:
		u.queuedMu.Lock()
		delete(u.queued, key)
		u.queuedMu.Unlock()
		u.log.Warn("model offer queue full; the server repeats pending offers at the next connection", "rollout", o.RolloutId)
	}
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Run processes offers and withdrawals until ctx ends.
func (u *Updater) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case w := <-u.withdrawals:
			u.processWithdrawal(ctx, w)
		case o := <-u.offers:
			u.processOffer(ctx, o)
			u.queuedMu.Lock()
			delete(u.queued, o.RolloutId+"|"+o.Model.Digest)
			u.queuedMu.Unlock()
		}
	}
}

// processOffer fetches (retrying with backoff, resuming), then installs and reports.
func (u *Updater) processOffer(ctx context.Context, o *wirev1.ModelOffer) {
	ref := o.Model
	base := func(state, reason string) {
		u.reportStatus(&wirev1.ModelStatus{RolloutId: o.RolloutId, State: state, Reason: reason,
			TimeUnixNano: u.cfg.Now().UnixNano(), Model: &wirev1.ModelRef{Name: ref.Name, Version: ref.Version, Digest: ref.Digest, Detector: ref.Detector}})
	}
	if u.isWithdrawn(o.RolloutId) {
		base(StateWithdrawn, "rollout withdrawn by the server before it was installed")
		return
	}
	// Already running in shadow mode (the server offers a shadow rollout again to an agent whose
	// Hello does not list it, e.g. one that reconnected while installing it)? Report it; a
	// restart would only lose the comparison so far.
	if o.Shadow {
		if rid, sref, on := u.ShadowRunning(); on && rid == o.RolloutId && sref.GetDigest() == ref.Digest {
			u.ShadowReport()
			return
		}
	}
	// Already active? Report it without downloading.
	if ref.Detector != "" {
		if as, err := ActiveModels(u.cfg.StateDir); err == nil {
			for _, a := range as {
				if a.Digest == ref.Digest && !o.Shadow {
					base(StateActive, "")
					return
				}
			}
		}
	}
	base(StateOffered, "")
	if u.cfg.Fetcher == nil {
		base(StateRejected, "this agent has no fetcher (air-gapped): install with `vigil-agent update --bundle FILE`")
		return
	}
	path, err := u.download(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		base(StateRejected, "download failed: "+err.Error())
		return
	}
	if err := u.failpoint(StepFetched); err != nil {
		u.log.Error("update stopped", "err", err)
		return
	}
	base(StateFetched, "")
	if u.isWithdrawn(o.RolloutId) {
		base(StateWithdrawn, "rollout withdrawn by the server before it was installed")
		return
	}
	req := Request{Path: path, Digest: ref.Digest, RolloutID: o.RolloutId, Shadow: o.Shadow}
	if o.Rollback {
		// The same check as `vigil-agent update --bundle FILE --rollback INSTRUCTION`: Install
		// verifies the instruction against this agent's trust policy and that it names the bundle.
		req.Rollback = o.RollbackInstruction
	}
	res, err := u.Install(ctx, req)
	var rej *Rejection
	if err != nil && ctx.Err() != nil {
		// Stopped while installing (the agent shuts down, and its pipelines with it): a
		// rejection now would be final, and the server would never offer the rollout again.
		// The last report ("fetched" or "verified") is not final: the server offers it again
		// at the next Hello.
		u.log.Warn("update interrupted by shutdown; the server offers it again at the next connection",
			"rollout", o.RolloutId, "err", err)
		return
	}
	switch {
	case errors.As(err, &rej):
		u.report(o.RolloutId, &res.Manifest, ref.Digest, rej.State, rej.Reason)
		_ = os.Remove(path)
	case err != nil:
		u.log.Error("update failed", "err", err)
		if strings.HasPrefix(err.Error(), "failpoint") {
			return
		}
		base(StateRejected, "update failed: "+err.Error())
	default:
		u.report(o.RolloutId, &res.Manifest, ref.Digest, res.State, "")
		_ = os.Remove(path)
	}
}

// download fetches the offered bundle into <state>/update/<hex>.part, resuming from what is
// already there, retrying with jittered backoff, and returns the completed file (renamed to
// <hex>.vgb once its SHA-256 equals the offered digest).
func (u *Updater) download(ctx context.Context, o *wirev1.ModelOffer) (string, error) {
	dir := filepath.Join(u.cfg.StateDir, DownloadDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("download: %w", err)
	}
	hexd := strings.TrimPrefix(o.Model.Digest, "sha256:")
	done := filepath.Join(dir, hexd+".vgb")
	if d, err := FileDigest(done); err == nil && d == o.Model.Digest {
		return done, nil
	}
	part := filepath.Join(dir, hexd+".part")
	delay := u.cfg.RetryMin
	for attempt := 0; ; attempt++ {
		err := u.fetchOnce(ctx, o, part)
		if err == nil {
			d, err := FileDigest(part)
			if err != nil {
				return "", err
			}
			if d != o.Model.Digest {
				_ = os.Remove(part)
				return "", fmt.Errorf("downloaded bytes have digest %s, offered %s", d, o.Model.Digest)
			}
			if err := os.Rename(part, done); err != nil {
				return "", fmt.Errorf("download: %w", err)
			}
			_ = fsutil.SyncDir(dir)
			return done, nil
		}
		if errors.Is(err, ErrNotFound) || errors.Is(err, errTooLarge) || errors.Is(err, errTooSmall) ||
			errors.Is(err, fsutil.ErrNotRegular) || ctx.Err() != nil {
			return "", err
		}
		if attempt >= 20 {
			return "", fmt.Errorf("giving up after %d attempts: %w", attempt+1, err)
		}
		u.log.Warn("fetch interrupted; resuming", "digest", o.Model.Digest, "err", err, "retry_in", delay)
		t := time.NewTimer(time.Duration(rand.Int64N(int64(delay)) + 1))
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, u.cfg.RetryMax)
	}
}

var (
	errTooLarge = errors.New("bundle larger than offered")
	errTooSmall = errors.New("bundle smaller than offered")
)

func (u *Updater) fetchOnce(ctx context.Context, o *wirev1.ModelOffer, part string) error {
	// The updater creates the file itself: a symbolic link is not followed (the file is appended
	// to and truncated), and anything but a regular file is refused (a named pipe would hold the
	// open, waiting for a reader).
	const flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND | syscall.O_NOFOLLOW
	f, st, err := fsutil.OpenRegular(part, flags, 0o640)
	if errors.Is(err, fsutil.ErrNotRegular) {
		// Not the updater's: remove it (the link or pipe itself, never what a link names) and
		// start the download afresh, rather than refusing this offer for good.
		u.log.Warn("partial download is not a regular file: removed", "file", part, "err", err)
		if rerr := os.Remove(part); rerr != nil {
			return fmt.Errorf("download: %w (and removing it: %v)", err, rerr)
		}
		f, st, err = fsutil.OpenRegular(part, flags, 0o640)
	}
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	defer f.Close()
	off := uint64(st.Size())
	if off > o.Size {
		if err := f.Truncate(0); err != nil {
			return fmt.Errorf("download: %w", err)
		}
		off = 0
	}
	if off == o.Size {
		return nil
	}
	w := &boundedWriter{w: f, left: o.Size - off}
	total, err := u.cfg.Fetcher.Fetch(ctx, o.Model.Digest, off, o.Size, w)
	if serr := f.Sync(); serr != nil && err == nil {
		err = fmt.Errorf("download: %w", serr)
	}
	if err != nil {
		return err
	}
	if total > o.Size {
		return fmt.Errorf("%w: server has %d bytes, offer said %d", errTooLarge, total, o.Size)
	}
	if total < o.Size {
		return fmt.Errorf("%w: server has %d bytes, offer said %d (its copy is truncated?)", errTooSmall, total, o.Size)
	}
	if w.left != 0 {
		return fmt.Errorf("download ended %d bytes short", w.left)
	}
	return nil
}

// boundedWriter refuses to write more than left bytes.
type boundedWriter struct {
	w    io.Writer
	left uint64
}

func (b *boundedWriter) Write(p []byte) (int, error) {
	if uint64(len(p)) > b.left {
		return 0, errTooLarge
	}
	n, err := b.w.Write(p)
	b.left -= uint64(n)
	return n, err
}
