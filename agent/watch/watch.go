// Package watch is the agent's recursive file watcher: it watches directory
// trees with fsnotify (inotify on Linux) and produces batches of event.File
// records with bounded content statistics for the fileactivity detector.
//
// Behaviour:
//   - Recursive: every directory below a root is watched; a directory that
//     appears later is watched as soon as its Create arrives and is then
//     scanned, so files created in it before the watch existed are reported
//     (as creates) too. Directories moved within the tree are re-watched
//     under their new name.
//   - Symbolic links are never followed: walking uses the directory entries'
//     types (no descent into a linked directory, so link loops cannot loop),
//     and content is read with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)
//     from the root's descriptor, so a read never leaves the tree.
//   - Write bursts are debounced: notifications for one path within the
//     Debounce window coalesce into one event (Writes counts them); a create
//     followed by writes is one create, sampled when the window closes.
//   - Renames: fsnotify reports the old name (Rename) and then the new one
//     (Create), which it pairs by inotify's move cookie; the two become one
//     FileRename with OldPath and Path. A rename whose new name never shows
//     (moved out of the tree) is reported after RenameWindow with an empty
//     Path; a name moved in from outside is a create (a directory moved in
//     is scanned and its files reported as creates).
//   - Bounded memory: the debounce and rename tables are capped (beyond the
//     cap events are emitted at once and counted), content reads are capped
//     by the contentstats sampler (head and tail of large files), the output
//     is a bounded channel and full batches are dropped and counted rather
//     than blocking the watcher.
//   - inotify queue overflow (fsnotify.ErrEventOverflow) triggers a rescan of
//     the roots: missing watches are added and files changed since the
//     watcher was last caught up are reported with FileFlagRescan. Deletions
//     lost in an overflow cannot be recovered; the overflow is counted.
//   - The inotify watch limit (ENOSPC from inotify_add_watch) is reported as
//     ErrWatchLimit naming fs.inotify.max_user_watches: New fails with it;
//     at run time it is logged, counted and the directory stays unwatched.
//   - A file that vanishes before or while it is read is not an error: the
//     event carries FileFlagVanished and the Vanished counter grows.
//   - A root deleted, renamed or replaced (another directory, a link or a
//     mount at its path) cannot be watched again by this Watcher: inotify
//     watches and the root's descriptor follow the old directory. A rename
//     is seen by its event (IN_MOVE_SELF); the rest by a check of the roots'
//     paths every second and at every rescan (a deleted root sends no event
//     while the watcher holds it open). It is logged and counted, and Run
//     returns an error wrapping ErrRootGone; the caller (agent/filedetect)
//     starts a new Watcher on the roots that exist, and on the lost one
//     again once it is back.
//   - Event times are the wall clock at New plus the monotonic time elapsed
//     since, following the wall clock only when it steps forward: they never
//     go backwards, so a clock stepped back cannot freeze the detector's
//     rates (which decay with event time).
package watch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/agent/contentstats"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// Config configures a Watcher. Zero fields take the documented defaults.
type Config struct {
	Roots   []string // directories to watch recursively (absolute or relative; cleaned)
	Include []string // file globs to report (empty: all); see the package's glob rules
	Exclude []string // file and directory globs to skip (an excluded directory is not descended)

	Debounce     time.Duration // write-coalescing window per path; default 200 ms
	RenameWindow time.Duration // how long a rename's old half waits for its new half; default 100 ms
	MaxPending   int           // cap of the debounce table (paths); default 65536
	MaxRenames   int           // cap of unpaired renames waiting; default 4096

	Sample contentstats.Config // per-file read bounds (default 64 KiB head+tail, 2 MiB exec budget)

	QueueSize      int           // events between the watcher loop and the sampler; default 4096
	BatchSize      int           // events per output batch; default 256
	BatchDelay     time.Duration // longest an event waits for its batch to fill; default 100 ms
	FsnotifyBuffer uint          // fsnotify's event channel buffer; default 4096
	NoChmod        bool          // do not report attribute changes
}

func (c *Config) setDefaults() {
	if c.Debounce <= 0 {
		c.Debounce = 200 * time.Millisecond
	}
	if c.RenameWindow <= 0 {
		c.RenameWindow = 100 * time.Millisecond
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 65536
	}
	if c.MaxRenames <= 0 {
		c.MaxRenames = 4096
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 4096
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 256
	}
	if c.BatchDelay <= 0 {
		c.BatchDelay = 100 * time.Millisecond
	}
	if c.FsnotifyBuffer == 0 {
		c.FsnotifyBuffer = 4096
	}
}

// ErrWatchLimit is wrapped by errors caused by the kernel's inotify limits.
var ErrWatchLimit = errors.New("inotify limit reached")

// ErrRootGone is wrapped by the error Run returns when a watch root was
// deleted, renamed or replaced: its path is no longer watched.
var ErrRootGone = errors.New("watch root deleted, renamed or replaced")

const (
	// rootCheckEvery is how often the roots' paths are checked against the
	// watched directories, for what no event reports: a root deleted (its
	// IN_DELETE_SELF waits until the watcher closes its descriptors), a
	// parent renamed, a file system mounted over a root. Two system calls
	// per root.
	rootCheckEvery = time.Second
	// finalFlushTimeout bounds the final flush at shutdown (the agent waits
	// 10 s for its sources to stop); events still waiting then are dropped
	// and counted.
	finalFlushTimeout = 5 * time.Second
)

// Stats are the watcher's counters.
type Stats struct {
	Watches         int    // directories watched now
	Raw             uint64 // notifications received from fsnotify
	Emitted         uint64 // events put into batches
	Batches         uint64 // batches delivered
	Dropped         uint64 // events dropped: the output channel was full, or the final flush ran out of time
	Coalesced       uint64 // write notifications merged into an earlier event (debouncing)
	PendingFull     uint64 // events emitted early because the debounce table was full
	RenamesPaired   uint64
	RenamesUnpaired uint64 // renames reported without their new name (moved out of the tree)
	Overflows       uint64 // inotify queue overflows
	Rescans         uint64
	RescanEvents    uint64 // events reported by rescans
	Vanished        uint64 // files gone before or while being read
	Denied          uint64 // permission denied (reading a file or a directory)
	Symlinks        uint64 // symbolic links seen (never followed)
	NotRegular      uint64 // devices, FIFOs, sockets (not read)
	Excluded        uint64 // paths skipped by the globs
	TooLong         uint64 // paths longer than event.MaxPathLen (dropped)
	WatchLimit      uint64 // directories left unwatched because of the inotify limit
	WatchErrors     uint64 // other failures to add a watch
	Errors          uint64 // other errors reported by fsnotify
	SampleErrors    uint64 // read errors other than vanish/denied
	RootsLost       uint64 // roots deleted, renamed or replaced (Run then fails with ErrRootGone)
	Content         contentstats.Counters
}

// pending is a debounced event waiting for its window to close.
type pending struct {
	firstNs int64
	writes  uint32
	op      event.FileOp
	flags   uint16
	root    int32
	old     string
}

// renameHalf is the old-name half of a rename waiting for its new name.
type renameHalf struct {
	ns    int64
	root  int32
	isDir bool
	pend  *pending // what was waiting on the old name (its writes move with the file)
	// seq is Stats.Raw once the loop has read the events fsnotify had
	// queued when this half was handled, and the one after: fsnotify sends
	// the new half right after the old one, so it comes no later.
	seq uint64
}

// item is one event on its way to the sampler.
type item struct {
	ev     event.File
	root   int32
	sample bool
}

type root struct {
	path string
	b    *beneath
}

// Watcher watches directory trees. Create it with New, run it with Run once.
type Watcher struct {
	cfg     Config
	log     *slog.Logger
	include []glob
	exclude []glob
	roots   []root

	fsw      *fsnotify.Watcher
	addWatch func(string) error // fsw.Add; replaced in tests
	rmWatch  func(string) error
	// How often the roots are checked, and the final flush's bound
	// (rootCheckEvery and finalFlushTimeout; changed in tests).
	rootCheck, flushTimeout time.Duration

	// Loop state (owned by the Run goroutine).
	dirs      map[string]int32 // watched directory -> root index
	pend      map[string]*pending
	renames   map[string]renameHalf
	movedDirs map[string]int64 // directories just renamed: their own IN_MOVE_SELF echo is ignored
	caughtUp  time.Time        // last time (wall clock: compared with file times) the event channel was found empty
	rootErr   error            // set when a root is lost: Run stops with it
	work      chan item
	now       func() time.Time // the wall clock; replaced in tests
	start     time.Time        // time.Now at New (with its monotonic reading)
	anchorNs  int64            // event times are anchorNs + monotonic time since start

	sampler *contentstats.Sampler
	watches atomic.Int64
	c       counters
	limitMu sync.Mutex
	limitAt time.Time
	started atomic.Bool
}

type counters struct {
	raw, emitted, batches, dropped, coalesced, pendingFull, paired, unpaired, overflows, rescans,
	rescanEvents, vanished, denied, symlinks, notRegular, excluded, tooLong, watchLimit, watchErrors,
	errors, sampleErrors, rootsLost atomic.Uint64
}

// New validates cfg, creates the inotify instance and watches every directory
// below the roots. It fails with an error wrapping ErrWatchLimit when the
// kernel's watch limit does not allow the whole tree.
func New(cfg Config, log *slog.Logger) (*Watcher, error) {
	return newWatcher(cfg, log, nil)
}

func newWatcher(cfg Config, log *slog.Logger, add func(string) error) (*Watcher, error) {
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Roots) == 0 {
		return nil, errors.New("watch: no roots configured")
	}
	start := time.Now()
	w := &Watcher{
		cfg:          cfg,
		log:          log,
		dirs:         make(map[string]int32),
		pend:         make(map[string]*pending),
		renames:      make(map[string]renameHalf),
		movedDirs:    make(map[string]int64),
		work:         make(chan item, cfg.QueueSize),
		now:          time.Now,
		start:        start,
		anchorNs:     start.UnixNano(),
		rootCheck:    rootCheckEvery,
		flushTimeout: finalFlushTimeout,
		sampler:      contentstats.New(cfg.Sample),
	}
	var err error
	if w.include, err = compileGlobs(cfg.Include); err != nil {
		return nil, fmt.Errorf("watch: include: %w", err)
	}
	if w.exclude, err = compileGlobs(cfg.Exclude); err != nil {
		return nil, fmt.Errorf("watch: exclude: %w", err)
	}
	for _, r := range cfg.Roots {
		abs, err := filepath.Abs(r)
		if err != nil {
			return nil, fmt.Errorf("watch: root %s: %w", r, err)
		}
		fi, err := os.Lstat(abs)
		if err != nil {
			return nil, fmt.Errorf("watch: root: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("watch: root %s is not a directory (links are not followed)", abs)
		}
		for _, o := range w.roots {
			if within(abs, o.path) || within(o.path, abs) {
				return nil, fmt.Errorf("watch: roots %s and %s overlap", o.path, abs)
			}
		}
		b, err := openBeneath(abs)
		if err != nil {
			w.closeRoots()
			return nil, fmt.Errorf("watch: %w", err)
		}
		w.roots = append(w.roots, root{path: abs, b: b})
	}
	w.fsw, err = fsnotify.NewBufferedWatcher(cfg.FsnotifyBuffer)
	if err != nil {
		w.closeRoots()
		return nil, fmt.Errorf("watch: %w", mapInotifyError(err))
	}
	w.addWatch, w.rmWatch = w.fsw.Add, w.fsw.Remove
	if add != nil {
		w.addWatch = add
	}
	for i := range w.roots {
		if err := w.scanTree(w.roots[i].path, int32(i), scanInitial, 0); err != nil {
			w.fsw.Close()
			w.closeRoots()
			return nil, err
		}
	}
	w.caughtUp = w.now()
	return w, nil
}

func (w *Watcher) closeRoots() {
	for _, r := range w.roots {
		r.b.close()
	}
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir) && (dir == "/" || p[len(dir)] == '/')
}

// mapInotifyError turns the kernel's limit errors into errors that name the
// sysctl to raise.
func mapInotifyError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%w: the inotify watch limit is exhausted; raise fs.inotify.max_user_watches "+
			"(now %s; e.g. sysctl -w fs.inotify.max_user_watches=1048576): %w", ErrWatchLimit, sysctlValue("max_user_watches"), err)
	case errors.Is(err, syscall.EMFILE):
		return fmt.Errorf("%w: too many inotify instances; raise fs.inotify.max_user_instances (now %s): %w",
			ErrWatchLimit, sysctlValue("max_user_instances"), err)
	}
	return err
}

func sysctlValue(name string) string {
	b, err := os.ReadFile("/proc/sys/fs/inotify/" + name)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// rootOf returns the index of the root that holds p, or -1.
func (w *Watcher) rootOf(p string) int32 {
	for i := range w.roots {
		if within(p, w.roots[i].path) {
			return int32(i)
		}
	}
	return -1
}

// stamp returns the time of an event now: the wall clock at New plus the
// monotonic time elapsed since, so event times never go backwards when the
// wall clock is stepped back (the detector's rates would stop decaying and
// everything would look like a burst). A wall clock ahead of it (stepped
// forward, e.g. set by NTP after a boot without a real-time clock) is
// followed from then on. Loop state: called from the Run goroutine (or New).
func (w *Watcher) stamp() int64 {
	ns := w.anchorNs + int64(time.Since(w.start))
	if wall := w.now().UnixNano(); wall > ns {
		w.anchorNs += wall - ns
		ns = wall
	}
	return ns
}

// rel returns p relative to its root, slash separated ("" for the root).
func (w *Watcher) rel(ri int32, p string) string {
	r := w.roots[ri].path
	if p == r {
		return ""
	}
	if r == "/" {
		return p[1:]
	}
	return p[len(r)+1:]
}

type scanMode int

const (
	scanInitial  scanMode = iota // add watches only
	scanNewDir                   // add watches, report files found as creates
	scanMovedDir                 // add watches only (the contents are not new)
	scanRescan                   // add missing watches, report files changed since a time
)

// scanTree watches dir and every directory below it. It never follows links.
// Files found are reported according to mode. Only the watch limit at
// scanInitial is an error; everything else is counted.
func (w *Watcher) scanTree(dir string, ri int32, mode scanMode, sinceNs int64) error {
	var limitErr error
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				w.c.denied.Add(1)
			} else if !errors.Is(err, fs.ErrNotExist) {
				w.c.watchErrors.Add(1)
				w.log.Debug("walk", "path", p, "err", err)
			}
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if len(p) > event.MaxPathLen {
			w.c.tooLong.Add(1)
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		rel := w.rel(ri, p)
		if rel != "" && anyMatch(w.exclude, rel) {
			w.c.excluded.Add(1)
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			w.c.symlinks.Add(1)
			if mode == scanNewDir {
				w.queueCreate(p, ri, event.FileFlagSymlink)
			}
			return nil
		}
		if d.IsDir() {
			// Also at a rescan for a directory already in w.dirs: it may be
			// a new one under the same name (deleted and recreated while
			// events were lost). Adding a watch is idempotent per inode.
			if err := w.watchDir(p, ri); err != nil {
				if errors.Is(err, ErrWatchLimit) {
					if mode == scanInitial {
						limitErr = err
						return fs.SkipAll
					}
					return fs.SkipDir
				}
				return fs.SkipDir
			}
			if mode == scanNewDir && p != dir {
				w.queueCreate(p, ri, event.FileFlagDir)
			}
			return nil
		}
		if len(w.include) > 0 && !anyMatch(w.include, rel) {
			w.c.excluded.Add(1)
			return nil
		}
		switch mode {
		case scanNewDir:
			w.queueCreate(p, ri, 0)
		case scanRescan:
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			if fi.ModTime().UnixNano() >= sinceNs || ctimeNs(fi) >= sinceNs {
				w.c.rescanEvents.Add(1)
				w.debounce(p, ri, event.FileWrite, event.FileFlagRescan, "")
			}
		}
		return nil
	})
	if limitErr != nil {
		return fmt.Errorf("watch %s: %w", dir, limitErr)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		w.log.Debug("walk", "dir", dir, "err", err)
	}
	return nil
}

func ctimeNs(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ctim.Nano()
	}
	return 0
}

func (w *Watcher) queueCreate(p string, ri int32, flags uint16) {
	w.debounce(p, ri, event.FileCreate, flags, "")
}

// watchDir adds one inotify watch.
func (w *Watcher) watchDir(p string, ri int32) error {
	if err := w.addWatch(p); err != nil {
		err = mapInotifyError(err)
		if errors.Is(err, ErrWatchLimit) {
			w.c.watchLimit.Add(1)
			w.limitMu.Lock()
			if now := w.now(); now.Sub(w.limitAt) > time.Minute {
				w.limitAt = now
				w.log.Error("directory not watched", "dir", p, "err", err)
			}
			w.limitMu.Unlock()
			return err
		}
		if errors.Is(err, fs.ErrPermission) {
			w.c.denied.Add(1)
		} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			w.c.watchErrors.Add(1)
			w.log.Debug("add watch", "dir", p, "err", err)
		}
		return fmt.Errorf("add watch %s: %w", p, err)
	}
	if _, ok := w.dirs[p]; !ok {
		w.dirs[p] = ri
		w.watches.Add(1)
	}
	return nil
}

// forgetDir drops the watches of dir and every watched directory below it.
func (w *Watcher) forgetDir(dir string, all bool) {
	if _, ok := w.dirs[dir]; ok {
		delete(w.dirs, dir)
		w.watches.Add(-1)
		_ = w.rmWatch(dir) // may already be gone (deleted, or moved and removed by fsnotify)
	}
	if !all {
		return
	}
	for d := range w.dirs {
		if within(d, dir) {
			delete(w.dirs, d)
			w.watches.Add(-1)
			_ = w.rmWatch(d)
		}
	}
}

// Roots returns the roots w watches (cleaned paths, in the order given).
func (w *Watcher) Roots() []string {
	out := make([]string, len(w.roots))
	for i, r := range w.roots {
		out[i] = r.path
	}
	return out
}

// Carry adds the counters of prev, the Stats of a Watcher this one replaces
// (after a root was lost, or came back), to w's: a caller that starts a new
// Watcher keeps the counts of events dropped, overflows, roots lost and the
// rest, which would otherwise go back to zero and hide the loss. Watches (a
// gauge) and Content (the sampler's own) are not carried. Call it before Run.
func (w *Watcher) Carry(prev Stats) {
	c := &w.c
	for _, a := range []struct {
		to *atomic.Uint64
		n  uint64
	}{
		{&c.raw, prev.Raw}, {&c.emitted, prev.Emitted}, {&c.batches, prev.Batches}, {&c.dropped, prev.Dropped},
		{&c.coalesced, prev.Coalesced}, {&c.pendingFull, prev.PendingFull}, {&c.paired, prev.RenamesPaired},
		{&c.unpaired, prev.RenamesUnpaired}, {&c.overflows, prev.Overflows}, {&c.rescans, prev.Rescans},
		{&c.rescanEvents, prev.RescanEvents}, {&c.vanished, prev.Vanished}, {&c.denied, prev.Denied},
		{&c.symlinks, prev.Symlinks}, {&c.notRegular, prev.NotRegular}, {&c.excluded, prev.Excluded},
		{&c.tooLong, prev.TooLong}, {&c.watchLimit, prev.WatchLimit}, {&c.watchErrors, prev.WatchErrors},
		{&c.errors, prev.Errors}, {&c.sampleErrors, prev.SampleErrors}, {&c.rootsLost, prev.RootsLost},
	} {
		a.to.Add(a.n)
	}
}

// Stats returns a snapshot of the counters. It is safe to call at any time.
func (w *Watcher) Stats() Stats {
	c := &w.c
	return Stats{
		Watches: int(w.watches.Load()), Raw: c.raw.Load(), Emitted: c.emitted.Load(), Batches: c.batches.Load(),
		Dropped: c.dropped.Load(), Coalesced: c.coalesced.Load(), PendingFull: c.pendingFull.Load(),
		RenamesPaired: c.paired.Load(), RenamesUnpaired: c.unpaired.Load(), Overflows: c.overflows.Load(),
		Rescans: c.rescans.Load(), RescanEvents: c.rescanEvents.Load(), Vanished: c.vanished.Load(),
		Denied: c.denied.Load(), Symlinks: c.symlinks.Load(), NotRegular: c.notRegular.Load(),
		Excluded: c.excluded.Load(), TooLong: c.tooLong.Load(), WatchLimit: c.watchLimit.Load(),
		WatchErrors: c.watchErrors.Load(), Errors: c.errors.Load(), SampleErrors: c.sampleErrors.Load(),
		RootsLost: c.rootsLost.Load(), Content: w.sampler.Counters(),
	}
}

// Run watches until ctx is done, delivering batches of events on out. A
// batch's slice belongs to the receiver. When out is full the batch is
// dropped and counted (the watcher never blocks on its consumer). Run closes
// out when it returns, after delivering the events still waiting; it returns
// nil when ctx ends, and can be called once. When a root is deleted, renamed
// or replaced, Run stops and returns an error wrapping ErrRootGone (its path
// is no longer watched: the caller should fail, and a new Watcher watches
// the path again).
func (w *Watcher) Run(ctx context.Context, out chan<- []event.File) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("watch: Run called twice")
	}
	defer close(out)
	defer w.closeRoots()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.sampleLoop(ctx, out)
	}()
	err := w.loop(ctx)
	w.fsw.Close()
	close(w.work)
	wg.Wait()
	return err
}

// loop handles fsnotify's events until ctx ends (nil) or a root is lost
// (rootErr). Either way the events still waiting are flushed.
func (w *Watcher) loop(ctx context.Context) error {
	tick := time.NewTicker(min(w.cfg.Debounce, w.cfg.RenameWindow) / 2)
	defer tick.Stop()
	check := time.NewTicker(w.rootCheck)
	defer check.Stop()
	for w.rootErr == nil {
		select {
		case <-ctx.Done():
			w.flush(true)
			return nil
		case ev, ok := <-w.fsw.Events:
			if !ok {
				w.flush(true)
				return errors.New("watch: fsnotify closed its event channel")
			}
			w.handle(ev)
			if len(w.fsw.Events) == 0 {
				w.caughtUp = w.now()
			}
		case err, ok := <-w.fsw.Errors:
			if !ok {
				w.flush(true)
				return errors.New("watch: fsnotify closed its error channel")
			}
			w.handleError(err)
		case <-tick.C:
			w.flush(false)
		case <-check.C:
			w.checkRoots()
		}
	}
	w.flush(true)
	return w.rootErr
}

// checkRoots loses every root whose path no longer names the directory
// being watched: deleted, a parent renamed, a file system mounted over it,
// or renamed while events were lost (no event reports these).
func (w *Watcher) checkRoots() {
	for i := range w.roots {
		r := &w.roots[i]
		how, err := r.b.lost(r.path)
		if err != nil {
			w.log.Debug("check root", "root", r.path, "err", err)
			continue
		}
		if how != "" {
			w.loseRoot(int32(i), how)
		}
	}
}

// loseRoot records that root ri was deleted, renamed or replaced. Its path
// cannot be watched again by this Watcher (inotify watches and the root's
// descriptor follow the old directory), so Run stops with rootErr: the
// agent exits and its restart watches the path anew.
func (w *Watcher) loseRoot(ri int32, how string) {
	w.c.rootsLost.Add(1)
	path := w.roots[ri].path
	w.log.Error("watch root lost: stopping the watcher (restart to watch the path again)", "root", path, "how", how)
	if w.rootErr == nil {
		w.rootErr = fmt.Errorf("watch: root %s %s: %w", path, how, ErrRootGone)
	}
}

// handleError deals with an error from fsnotify; an overflow rescans.
func (w *Watcher) handleError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		w.c.overflows.Add(1)
		w.log.Warn("inotify event queue overflowed; rescanning the watched trees",
			"hint", "raise fs.inotify.max_queued_events or the watcher's FsnotifyBuffer")
		w.rescan()
		return
	}
	w.c.errors.Add(1)
	w.log.Warn("fsnotify", "err", mapInotifyError(err))
}

// rescan walks every root again after events were lost: it forgets the
// directories that are gone, adds missing watches (also on directories
// recreated under a known name) and reports files modified since the
// watcher was last caught up (with a second of slack). A root that was lost
// meanwhile fails the watcher.
func (w *Watcher) rescan() {
	w.c.rescans.Add(1)
	since := w.caughtUp.Add(-time.Second).UnixNano()
	// Deleted or moved away while the events were lost: drop the entry, and
	// the watch fsnotify may still hold under the stale name (re-adding the
	// moved directory under that name would give its events the old path).
	for d := range w.dirs {
		fi, err := os.Lstat(d)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || err == nil && !fi.IsDir() {
			w.forgetDir(d, false)
		}
	}
	w.checkRoots()
	for i := range w.roots {
		if w.rootErr != nil {
			break
		}
		_ = w.scanTree(w.roots[i].path, int32(i), scanRescan, since)
	}
	w.caughtUp = w.now()
}

// renamedFrom returns the old name fsnotify paired with a Create, if any.
// fsnotify v1.10 keeps it unexported and prints it in Event.String as
// `CREATE "new" ← "old"`; the last quoted string is taken.
func renamedFrom(ev fsnotify.Event) string {
	if ev == (fsnotify.Event{Name: ev.Name, Op: ev.Op}) {
		return "" // no hidden old name: skip formatting the event
	}
	s := ev.String()
	const sep = ` ← "`
	for end := len(s); ; {
		i := strings.LastIndex(s[:end], sep)
		if i < 0 {
			return ""
		}
		q := s[i+len(sep)-1:]
		if old, err := strconv.Unquote(q); err == nil {
			return old
		}
		end = i
	}
}

func (w *Watcher) handle(ev fsnotify.Event) {
	w.c.raw.Add(1)
	p := ev.Name
	ri := w.rootOf(p)
	if ri < 0 {
		return
	}
	if p == w.roots[ri].path && ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 {
		// The root itself was renamed (IN_MOVE_SELF) or deleted
		// (IN_DELETE_SELF: in practice not before the root's descriptors
		// are closed; checkRoots finds it): report it, then stop (a renamed
		// root's new name is unknown).
		e := event.File{TimeNs: w.stamp(), Op: event.FileRemove, Flags: event.FileFlagDir, Path: p, Size: -1}
		how := "deleted"
		if !ev.Has(fsnotify.Remove) {
			w.c.unpaired.Add(1)
			e = event.File{TimeNs: e.TimeNs, Op: event.FileRename, Flags: event.FileFlagDir, OldPath: p}
			how = "renamed"
		}
		w.emitNow(e, ri, nil)
		w.loseRoot(ri, how)
		return
	}
	if len(p) > event.MaxPathLen {
		w.c.tooLong.Add(1)
		return
	}
	rel := w.rel(ri, p)
	if rel != "" && anyMatch(w.exclude, rel) {
		w.c.excluded.Add(1)
		return
	}
	switch {
	case ev.Has(fsnotify.Create):
		// Only fsnotify's pairing (inotify's move cookie) makes a rename: a
		// name moved in from outside the tree is new, even right after a
		// move out (a directory taken for a moved one would hide its files).
		old := renamedFrom(ev)
		if len(old) > event.MaxPathLen {
			// Moved from a name too long to report (its own events were
			// dropped): a create, as from outside the tree. An event
			// carrying it would fail the encoding of its whole batch.
			w.c.tooLong.Add(1)
			old = ""
		}
		fi, err := os.Lstat(p)
		if err != nil {
			// Created and gone again: report the create, sampling will count the vanish.
			w.pairOrCreate(p, ri, old, 0, false)
			return
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			w.c.symlinks.Add(1)
			w.pairOrCreate(p, ri, old, event.FileFlagSymlink, false)
			return
		}
		if fi.IsDir() {
			moved := w.pairOrCreate(p, ri, old, event.FileFlagDir, true)
			if moved {
				_ = w.scanTree(p, ri, scanMovedDir, 0)
			} else {
				_ = w.scanTree(p, ri, scanNewDir, 0)
			}
			return
		}
		if len(w.include) > 0 && !anyMatch(w.include, rel) && old == "" {
			w.c.excluded.Add(1)
			return
		}
		w.pairOrCreate(p, ri, old, 0, false)
	case ev.Has(fsnotify.Rename):
		if _, dup := w.renames[p]; dup {
			return // the moved directory's own IN_MOVE_SELF after the parent's IN_MOVED_FROM
		}
		_, isDir := w.dirs[p]
		if !isDir {
			if _, echo := w.movedDirs[p]; echo {
				return
			}
		}
		if isDir {
			w.forgetDir(p, true)
		}
		// A file created or written and renamed before its window closed: its
		// pending event moves with it and is reported with the new name, so the
		// content is sampled where it now is.
		pe := w.pend[p]
		delete(w.pend, p)
		if len(w.renames) >= w.cfg.MaxRenames {
			w.c.unpaired.Add(1)
			ev := event.File{TimeNs: w.stamp(), Op: event.FileRename, OldPath: p}
			if pe != nil {
				ev.Writes = pe.writes
			}
			w.emitNow(ev, ri, nil)
			return
		}
		seq := w.c.raw.Load() + uint64(len(w.fsw.Events)) + 1
		w.renames[p] = renameHalf{ns: w.stamp(), root: ri, isDir: isDir, pend: pe, seq: seq}
	case ev.Has(fsnotify.Remove):
		_, isDir := w.dirs[p]
		if isDir {
			w.forgetDir(p, false)
		}
		if pe, ok := w.pend[p]; ok {
			delete(w.pend, p)
			w.emit(p, pe, nil)
		}
		var flags uint16
		if isDir {
			flags = event.FileFlagDir
		}
		w.emitNow(event.File{TimeNs: w.stamp(), Op: event.FileRemove, Flags: flags, Path: p, Size: -1}, ri, nil)
	case ev.Has(fsnotify.Write):
		if len(w.include) > 0 && !anyMatch(w.include, rel) {
			w.c.excluded.Add(1)
			return
		}
		w.debounce(p, ri, event.FileWrite, 0, "")
	case ev.Has(fsnotify.Chmod):
		if w.cfg.NoChmod {
			return
		}
		if _, isDir := w.dirs[p]; isDir {
			return
		}
		if len(w.include) > 0 && !anyMatch(w.include, rel) {
			w.c.excluded.Add(1)
			return
		}
		if _, ok := w.pend[p]; ok {
			w.c.coalesced.Add(1) // the event in flight will be sampled with the new mode
			return
		}
		w.emitNow(event.File{TimeNs: w.stamp(), Op: event.FileChmod, Path: p}, ri, nil)
	}
}

// pairOrCreate handles the Create of p: with old set (or a waiting rename of
// that name) it completes a rename, otherwise it is a create. It reports
// whether p was the new name of a rename.
func (w *Watcher) pairOrCreate(p string, ri int32, old string, flags uint16, isDir bool) bool {
	if old != "" {
		half, ok := w.renames[old]
		delete(w.renames, old)
		w.c.paired.Add(1)
		if isDir {
			now := w.stamp()
			w.movedDirs[old] = now
			w.emitNow(event.File{TimeNs: now, Op: event.FileRename, Flags: flags, Path: p, OldPath: old}, ri, nil)
			return true
		}
		if ok && half.pend != nil && half.pend.op == event.FileRename && half.pend.old != "" {
			old = half.pend.old // moved again within the window: one move from the first name
		}
		w.debounce(p, ri, event.FileRename, flags, old)
		if ok && half.pend != nil {
			if pe := w.pend[p]; pe != nil {
				pe.writes += half.pend.writes
				pe.firstNs = min(pe.firstNs, half.pend.firstNs)
			}
		}
		return true
	}
	w.debounce(p, ri, event.FileCreate, flags, "")
	return false
}

// debounce records a create, write or rename of p in the debounce table. A
// write to a path already waiting is coalesced, and so is a move onto a path
// whose write is waiting; a move onto a path whose create or move is waiting
// first reports that one.
func (w *Watcher) debounce(p string, ri int32, op event.FileOp, flags uint16, old string) {
	if pe, ok := w.pend[p]; ok && op == event.FileRename && pe.op != event.FileWrite {
		// A move onto a name whose create or move is still waiting: that
		// happened too (the file it made is replaced), report it now.
		delete(w.pend, p)
		w.emit(p, pe, nil)
	} else if ok {
		if op == event.FileWrite {
			pe.writes++
		}
		pe.flags |= flags
		w.c.coalesced.Add(1)
		if op != event.FileWrite && pe.op == event.FileWrite {
			pe.op, pe.old = op, old // a write then a move onto the name: report the move
		}
		return
	}
	pe := &pending{firstNs: w.stamp(), op: op, flags: flags, root: ri, old: old}
	if op == event.FileWrite {
		pe.writes = 1
	}
	if len(w.pend) >= w.cfg.MaxPending {
		w.c.pendingFull.Add(1)
		w.emit(p, pe, nil)
		return
	}
	w.pend[p] = pe
}

// flush emits the debounced events whose window has closed (all of them when
// final) and the renames whose new half never came. The final flush waits
// for room in the sampler's queue (the sampler drains it until Run closes
// it) for at most flushTimeout; what is left then is dropped and counted.
func (w *Watcher) flush(final bool) {
	now := w.stamp()
	var stop <-chan struct{} // nil: wait for room (back-pressure)
	if final {
		ctx, cancel := context.WithTimeout(context.Background(), w.flushTimeout)
		defer cancel()
		stop = ctx.Done()
	}
	type due struct {
		p  string
		pe *pending
	}
	var ready []due
	for p, pe := range w.pend {
		if final || now-pe.firstNs >= int64(w.cfg.Debounce) {
			ready = append(ready, due{p, pe})
		}
	}
	slices.SortFunc(ready, func(a, b due) int { return cmp.Compare(a.pe.firstNs, b.pe.firstNs) })
	for _, d := range ready {
		delete(w.pend, d.p)
		w.emit(d.p, d.pe, stop)
	}
	// A half is old only once the loop has caught up with the events that
	// were queued behind it: a loop held up (waiting for the sampler, a
	// rescan) must not report a rename as a move out of the tree while its
	// new half waits in fsnotify's channel, then pair it again.
	raw, queued := w.c.raw.Load(), len(w.fsw.Events)
	for old, r := range w.renames {
		if final || now-r.ns >= int64(w.cfg.RenameWindow) && (queued == 0 || raw >= r.seq) {
			delete(w.renames, old)
			w.c.unpaired.Add(1)
			var flags uint16
			if r.isDir {
				flags = event.FileFlagDir
			}
			ev := event.File{TimeNs: r.ns, Op: event.FileRename, Flags: flags, OldPath: old}
			if r.pend != nil {
				ev.Writes = r.pend.writes
			}
			w.emitNow(ev, r.root, stop)
		}
	}
	for d, ns := range w.movedDirs {
		if final || now-ns >= int64(w.cfg.RenameWindow) {
			delete(w.movedDirs, d)
		}
	}
}

func (w *Watcher) emit(p string, pe *pending, stop <-chan struct{}) {
	ev := event.File{TimeNs: pe.firstNs, Op: pe.op, Flags: pe.flags, Writes: pe.writes, Path: p, OldPath: pe.old}
	w.emitNow(ev, pe.root, stop)
}

// emitNow hands an event to the sampler. It blocks while the queue is full
// (back-pressure into the kernel queue, whose overflow is handled); once stop
// is closed (the final flush ran out of time) an event that does not fit is
// dropped and counted. A nil stop never closes.
func (w *Watcher) emitNow(ev event.File, ri int32, stop <-chan struct{}) {
	ev.Root = w.roots[ri].path
	it := item{ev: ev, root: ri}
	it.sample = ev.Path != "" && ev.Op != event.FileRemove && ev.Flags&(event.FileFlagDir|event.FileFlagSymlink) == 0
	select {
	case w.work <- it:
	case <-stop:
		w.c.dropped.Add(1)
	}
}

// sampleLoop reads content statistics for the events and delivers batches.
func (w *Watcher) sampleLoop(ctx context.Context, out chan<- []event.File) {
	batch := make([]event.File, 0, w.cfg.BatchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	send := func() {
		if len(batch) == 0 {
			return
		}
		select {
		case out <- batch:
			w.c.batches.Add(1)
			w.c.emitted.Add(uint64(len(batch)))
			batch = make([]event.File, 0, w.cfg.BatchSize)
		default:
			w.c.dropped.Add(uint64(len(batch)))
			batch = batch[:0]
		}
		if armed {
			timer.Stop()
			armed = false
		}
	}
	for {
		select {
		case it, ok := <-w.work:
			if !ok {
				send()
				return
			}
			w.fill(&it)
			batch = append(batch, it.ev)
			if len(batch) >= w.cfg.BatchSize {
				send()
			} else if !armed {
				timer.Reset(w.cfg.BatchDelay)
				armed = true
			}
		case <-timer.C:
			armed = false
			send()
		case <-ctx.Done():
			// Drain what the loop still hands over, then stop.
			for it := range w.work {
				w.fill(&it)
				batch = append(batch, it.ev)
				if len(batch) >= w.cfg.BatchSize {
					send()
				}
			}
			send()
			return
		}
	}
}

// fill samples the file of an event (when it has content to sample).
func (w *Watcher) fill(it *item) {
	ev := &it.ev
	ev.Size = -1
	if ev.Path == "" || ev.Op == event.FileRemove {
		return
	}
	r := w.roots[it.root]
	rel := w.rel(it.root, ev.Path)
	if !it.sample {
		if fi, err := os.Lstat(ev.Path); err == nil {
			ev.Size, ev.Mode = fi.Size(), uint32(fi.Mode())
		}
		return
	}
	if ev.Op == event.FileChmod {
		fi, err := os.Lstat(ev.Path)
		if err != nil {
			w.c.vanished.Add(1)
			ev.Flags |= event.FileFlagVanished
			return
		}
		ev.Size, ev.Mode = fi.Size(), uint32(fi.Mode())
		if fi.Mode()&0o111 != 0 {
			ev.Flags |= event.FileFlagExecutable
		}
		return
	}
	if rel == "" {
		return
	}
	fd, st, err := r.b.open(rel)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
			w.c.vanished.Add(1)
			ev.Flags |= event.FileFlagVanished
		case errors.Is(err, fs.ErrPermission):
			w.c.denied.Add(1)
			ev.Flags |= event.FileFlagDenied
		case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.EXDEV):
			// A link (or a link in the path) that openat2 refused to follow.
			w.c.symlinks.Add(1)
			ev.Flags |= event.FileFlagSymlink
		default:
			w.c.sampleErrors.Add(1)
			w.log.Debug("open for sampling", "path", ev.Path, "err", err)
		}
		return
	}
	if fd >= 0 {
		defer unix.Close(fd)
	}
	mode := fileMode(st.Mode)
	ev.Size, ev.Mode = st.Size, uint32(mode)
	if mode&0o111 != 0 {
		ev.Flags |= event.FileFlagExecutable
	}
	if mode.IsDir() {
		ev.Flags |= event.FileFlagDir
		return
	}
	if !mode.IsRegular() {
		w.c.notRegular.Add(1)
		ev.Flags |= event.FileFlagNotRegular
		return
	}
	if err := w.sampler.Analyze(fdReader(fd), st.Size, ev.Path, ev); err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESTALE) {
			w.c.vanished.Add(1)
			ev.Flags |= event.FileFlagVanished
			return
		}
		w.c.sampleErrors.Add(1)
		w.log.Debug("sample", "path", ev.Path, "err", err)
	}
}
