// Package pluginhost is the agent's side of the detector plugin contract: it
// launches a plugin binary (go-plugin, gRPC, SHA-256-pinned, AutoMTLS,
// unprivileged, confined with Landlock and a seccomp socket filter:
// sandbox.go, seccomp.go; killed with the agent), feeds it packet records
// through a shared-memory ring (plugins/sdk/ring), delivers the anomalies it
// returns to a callback, and restarts it with exponential backoff when it
// dies, counting exactly the records lost meanwhile.
//
// It imports plugins/sdk, never the other way round; it is pure Go (no cgo).
package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/plugins/sdk"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/plugins/sdk/ring"
)

// Errors.
var (
	// ErrNotRunning means no plugin instance is up (starting or restarting).
	ErrNotRunning = errors.New("pluginhost: plugin not running")
	// ErrClosed means the host was closed.
	ErrClosed = errors.New("pluginhost: closed")
	// ErrNoRing means the plugin does not consume packets through the ring.
	ErrNoRing = errors.New("pluginhost: plugin has no packet ring")
)

// Defaults.
const (
	DefaultDownWait     = 100 * time.Millisecond
	DefaultFullWait     = 250 * time.Millisecond
	DefaultMinBackoff   = 250 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	DefaultStableAfter  = time.Minute
	DefaultStartTimeout = 15 * time.Second
	DefaultStallTimeout = 30 * time.Second
	// NobodyID is the uid and gid plugins run as when the agent may switch
	// users (SwitchesUser) and Config.Credential is nil.
	NobodyID = 65534
)

// Config configures a Host.
type Config struct {
	// Path of the plugin binary and its arguments.
	Path string
	Args []string
	// LaunchArgs, if set, is called at every launch (the first and each
	// restart) for arguments appended to Args: state the agent learned from
	// an earlier instance (e.g. per-sensor calibration).
	LaunchArgs func() []string
	// Env is the plugin's whole environment (it does not inherit the
	// agent's: no secrets leak into it), e.g. ONNXRUNTIME_LIB=.... A
	// confined plugin also gets TMPDIR and PLUGIN_UNIX_SOCKET_DIR (its
	// private directory, see Sandbox).
	Env []string
	// Checksum is the expected SHA-256 of the binary, verified (go-plugin's
	// SecureConfig) before every launch. When nil, the host pins the binary
	// as its first launch finds it: that launch hashes the file right before
	// executing it (the same hash-then-exec check SecureConfig does, done
	// once instead of twice), and a binary swapped later is refused at
	// restart.
	Checksum []byte
	// Credential is the uid/gid the plugin runs as when the agent may
	// switch users: it runs as root or holds CAP_SETUID and CAP_SETGID
	// (SwitchesUser). Default nobody, 65534:65534. Ignored otherwise: the
	// plugin then runs with the agent's uid.
	Credential *syscall.Credential
	// KeepPrivileges runs the plugin with the agent's uid (and network)
	// even when the agent could switch users (tests, debugging). Plugins
	// never inherit the agent's ambient capabilities, with or without it.
	KeepPrivileges bool
	// Network keeps the plugin in the agent's network namespace. By default
	// a plugin started by root (or with CAP_SYS_ADMIN) gets a new, empty
	// network namespace (no network); go-plugin's Unix socket still works
	// across namespaces.
	Network bool
	// Sandbox confines the plugin with Landlock (on by default): what it
	// may read, no writes outside a private directory, no TCP. See
	// Sandbox.
	Sandbox Sandbox

	// RingSlots is the ring capacity (power of two; default 65536 = 4 MiB).
	RingSlots int
	// MaxBatch and MaxDelay bound the plugin's batches (defaults 4096, 5 ms).
	MaxBatch int
	MaxDelay time.Duration
	// DownWait bounds how long Push waits, after the plugin went down, for a
	// new instance; afterwards records are dropped and counted at once until
	// one is up. FullWait bounds one Push's wait for space in a full ring of
	// a live plugin before it drops the rest.
	DownWait, FullWait time.Duration
	// Restart backoff: MinBackoff doubling up to MaxBackoff; an instance that
	// ran for StableAfter resets it.
	MinBackoff, MaxBackoff, StableAfter time.Duration
	StartTimeout                        time.Duration
	// StallTimeout: a ring plugin that returns no result for this long
	// while records wait in its ring is hung (a detector stuck on some
	// input), not just slow: the host stops it, and restarts it as if it
	// had died (default 30 s; negative: never). It also bounds the unary
	// Score and Health calls (LoadModel: StartTimeout), and a plugin that
	// does not answer one in time is stopped and restarted the same way.
	StallTimeout time.Duration

	// OnResult receives every batch result from one goroutine, in ring
	// order. It should return quickly (it holds up the plugin's results).
	OnResult func(sdk.BatchResult)
	Logger   *slog.Logger
}

func (c *Config) setDefaults() {
	setDef := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.RingSlots == 0 {
		c.RingSlots = ring.DefaultSize
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = sdk.DefaultMaxBatch
	}
	setDef(&c.MaxDelay, sdk.DefaultMaxDelay)
	setDef(&c.DownWait, DefaultDownWait)
	setDef(&c.FullWait, DefaultFullWait)
	setDef(&c.MinBackoff, DefaultMinBackoff)
	setDef(&c.MaxBackoff, DefaultMaxBackoff)
	setDef(&c.StableAfter, DefaultStableAfter)
	setDef(&c.StartTimeout, DefaultStartTimeout)
	setDef(&c.StallTimeout, DefaultStallTimeout)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the configuration (after defaults).
func (c *Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("plugin path is empty")
	case c.RingSlots < ring.MinSlots || c.RingSlots > ring.MaxSlots || c.RingSlots&(c.RingSlots-1) != 0:
		return fmt.Errorf("ring slots %d: want a power of two in [%d, %d]", c.RingSlots, ring.MinSlots, ring.MaxSlots)
	case c.MaxBatch < 1 || c.MaxBatch > sdk.MaxMaxBatch || c.MaxBatch > c.RingSlots:
		return fmt.Errorf("max batch %d: want 1..min(%d, ring slots)", c.MaxBatch, sdk.MaxMaxBatch)
	case c.MaxDelay < 0 || c.MaxDelay > sdk.MaxMaxDelay:
		return fmt.Errorf("max delay %s: want at most %s", c.MaxDelay, sdk.MaxMaxDelay)
	case c.Checksum != nil && len(c.Checksum) != sha256.Size:
		return fmt.Errorf("checksum of %d bytes: want SHA-256", len(c.Checksum))
	case c.MinBackoff < 0 || c.MaxBackoff < c.MinBackoff:
		return fmt.Errorf("backoff %s..%s invalid", c.MinBackoff, c.MaxBackoff)
	case c.DownWait < 0 || c.FullWait < 0:
		return errors.New("negative wait")
	}
	return nil
}

// Stats are the host's counters. Every record given to Push ends up in
// exactly one of: Scored (results received), LostInFlight, Unreported,
// DroppedDown, DroppedFull, or still in the ring (Published minus the rest).
type Stats struct {
	Published     uint64 // records written into a plugin's ring
	Scored        uint64 // records whose batch results arrived
	Anomalies     uint64
	BatchErrors   uint64 // batches the detector failed on (counted in Scored)
	LostInFlight  uint64 // published but not consumed when a plugin died (head - tail)
	Unreported    uint64 // consumed, but the plugin died before their results arrived
	DroppedDown   uint64 // never published: no plugin up within DownWait
	DroppedFull   uint64 // never published: ring full for FullWait
	Starts        uint64
	Restarts      uint64
	StartFailures uint64
	// Unconfined counts launches that started the plugin without the
	// Landlock sandbox because the kernel (or a seccomp filter) does not
	// allow it; Sandbox.Disable does not count.
	Unconfined uint64
	// Unfiltered counts launches that started the plugin without the
	// seccomp socket filter (no filter for the architecture, or the kernel
	// refused it); Sandbox.Disable does not count.
	Unfiltered uint64
	// LogLinesDropped counts lines of the plugins' standard error not
	// forwarded to the agent's log: over the rate limit.
	LogLinesDropped uint64
	// AnomaliesRefused counts anomalies of the plugin's answers dropped or
	// clamped (sdk.CheckResult): outside the batch, a record reported
	// twice, an aggregate standing for more records than the batch has.
	AnomaliesRefused uint64
}

// Lost is every record that did not get scored results.
func (s Stats) Lost() uint64 {
	return s.LostInFlight + s.Unreported + s.DroppedDown + s.DroppedFull
}

// Host runs one detector plugin.
type Host struct {
	cfg    Config
	log    *slog.Logger
	pinMu  sync.Mutex
	sum    []byte // pinned SHA-256 (under pinMu; nil until pinned)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	pushMu sync.Mutex // one producer at a time

	mu        sync.Mutex
	cur       *instance
	up        chan struct{} // closed when cur becomes non-nil
	downSince time.Time
	models    []loadedModel // LoadModel's, in order: reloaded into a restarted plugin
	info      sdk.PluginInfo
	started   bool
	closed    bool
	nextBase  uint64

	published, scored, anomalies, batchErrors          atomic.Uint64
	lostInFlight, unreported, droppedDown, droppedFull atomic.Uint64
	starts, restarts, startFailures, unconfined        atomic.Uint64
	unfiltered, logDropped, anomaliesRefused           atomic.Uint64
}

// New checks the configuration and that the plugin binary is a regular
// file. The binary's SHA-256 is Config.Checksum, or is pinned at the first
// launch (or the first Checksum call, whichever comes first).
//
// Why not hash in New as well: go-plugin's SecureConfig hashes the file
// again right before executing it, so a pin taken in New cost a second full
// read and SHA-256 of the ~15 MB binary on every scan (about a third of the
// scan's fixed start-up CPU in `perf record`), to guard only the
// microseconds between New and Start.
func New(cfg Config) (*Host, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("plugin host config: %w", err)
	}
	if cfg.Checksum == nil {
		fi, err := os.Stat(cfg.Path)
		if err != nil {
			return nil, fmt.Errorf("pin plugin binary: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("pin plugin binary %s: not a regular file", cfg.Path)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Host{
		cfg: cfg, log: cfg.Logger.With("plugin", cfg.Path), sum: cfg.Checksum,
		ctx: ctx, cancel: cancel, up: make(chan struct{}), downSince: time.Now(),
	}, nil
}

// pin returns the pinned SHA-256, hashing the binary if nothing is pinned
// yet; fresh reports that this call computed it (so the file was read just
// now and a second hash of it would prove nothing more).
func (h *Host) pin() (sum []byte, fresh bool, err error) {
	h.pinMu.Lock()
	defer h.pinMu.Unlock()
	if h.sum != nil {
		return h.sum, false, nil
	}
	if sum, err = fileSHA256(h.cfg.Path); err != nil {
		return nil, false, fmt.Errorf("pin plugin binary: %w", err)
	}
	h.sum = sum
	h.log.Debug("plugin binary pinned", "sha256", fmt.Sprintf("%x", sum))
	return sum, true, nil
}

// fileSHA256 hashes the regular file at path (a symbolic link to one is
// followed). It is opened with O_NONBLOCK and refused unless its fstat says
// regular: New checks the type by path, but a named pipe put there after it
// held the open (the pin at the first launch) for good, waiting for a writer.
func fileSHA256(path string) ([]byte, error) {
	f, _, err := fsutil.OpenRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	return h.Sum(nil), nil
}

// Checksum returns the pinned SHA-256 of the plugin binary, pinning it now
// if no launch has yet (nil if the binary cannot be read).
func (h *Host) Checksum() []byte {
	sum, _, err := h.pin()
	if err != nil {
		return nil
	}
	return append([]byte(nil), sum...)
}

// Start launches the plugin and starts supervising it. The first launch must
// succeed (a wrong checksum, a failed handshake or a bad Info is an error);
// later deaths are restarted with backoff.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	if h.started || h.closed {
		h.mu.Unlock()
		return errors.New("plugin host already started or closed")
	}
	h.started = true
	h.mu.Unlock()
	inst, err := h.launch(ctx, 0)
	if err != nil {
		h.startFailures.Add(1)
		return fmt.Errorf("start plugin %s: %w", h.cfg.Path, err)
	}
	h.install(inst)
	h.wg.Add(1)
	go h.supervise(inst)
	return nil
}

// Info returns the running plugin's self-description (from its last start).
func (h *Host) Info() sdk.PluginInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.info
}

// Stats returns a snapshot of the counters.
func (h *Host) Stats() Stats {
	return Stats{
		Published: h.published.Load(), Scored: h.scored.Load(), Anomalies: h.anomalies.Load(),
		BatchErrors: h.batchErrors.Load(), LostInFlight: h.lostInFlight.Load(), Unreported: h.unreported.Load(),
		DroppedDown: h.droppedDown.Load(), DroppedFull: h.droppedFull.Load(),
		Starts: h.starts.Load(), Restarts: h.restarts.Load(), StartFailures: h.startFailures.Load(),
		Unconfined: h.unconfined.Load(), Unfiltered: h.unfiltered.Load(), LogLinesDropped: h.logDropped.Load(),
		AnomaliesRefused: h.anomaliesRefused.Load(),
	}
}

// PID returns the process id of the running plugin, or 0.
func (h *Host) PID() int {
	if inst := h.current(); inst != nil {
		return inst.pid
	}
	return 0
}

func (h *Host) current() *instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur
}

// WaitRunning waits until a plugin instance is up: at once when one is, else
// until Start or a restart brings one up. It fails with ErrClosed once the
// host is closed, or with ctx's error.
func (h *Host) WaitRunning(ctx context.Context) error {
	for {
		h.mu.Lock()
		inst, up, closed := h.cur, h.up, h.closed
		h.mu.Unlock()
		switch {
		case inst != nil:
			return nil
		case closed:
			return ErrClosed
		}
		select {
		case <-up:
		case <-h.ctx.Done(): // closing: the loop sees closed
		case <-ctx.Done():
			return fmt.Errorf("wait for the plugin: %w (%w)", ErrNotRunning, ctx.Err())
		}
	}
}

// WaitStarted is WaitRunning bounded by the host's StartTimeout: what a
// caller that needs the plugin (its Info, a model load) waits at most while
// the host starts it or restarts it.
func (h *Host) WaitStarted(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, h.cfg.StartTimeout)
	defer cancel()
	return h.WaitRunning(wctx)
}

// loadedModel is a bundle loaded through LoadModel, the last of its
// feature-set family (sdk.FeatureFamily).
type loadedModel struct{ family, path string }

// LoadModel asks the plugin to load a bundle. On success the host remembers
// the path and reloads it into every restarted instance, after the start
// bundles (one per feature-set family: the last loaded); on error the
// plugin's previous model stays active. While no instance is up (the host
// starting, or restarting a plugin that died) it waits for one, at most
// StartTimeout: a model update that arrives as the agent starts is loaded,
// not refused.
func (h *Host) LoadModel(ctx context.Context, bundlePath string) (sdk.ModelInfo, error) {
	inst := h.current()
	if inst == nil {
		if err := h.WaitStarted(ctx); err != nil {
			return sdk.ModelInfo{}, fmt.Errorf("load model %s: %w", bundlePath, err)
		}
		if inst = h.current(); inst == nil {
			return sdk.ModelInfo{}, fmt.Errorf("load model %s: %w", bundlePath, ErrNotRunning)
		}
	}
	var m sdk.ModelInfo
	err := h.bounded(ctx, inst, h.cfg.StartTimeout, "LoadModel", func(ctx context.Context) (err error) {
		m, err = inst.det.LoadModel(ctx, bundlePath)
		return err
	})
	if err != nil {
		return sdk.ModelInfo{}, fmt.Errorf("load model %s: %w", bundlePath, err)
	}
	h.mu.Lock()
	// One model per feature-set family: the one loaded last replaces the
	// family's earlier ones (in the plugin, and in what a restart reloads).
	fam := sdk.FeatureFamily(m.FeatureSet)
	h.models = slices.DeleteFunc(h.models, func(l loadedModel) bool { return l.family == fam })
	h.models = append(h.models, loadedModel{family: fam, path: bundlePath})
	h.mu.Unlock()
	return m, nil
}

// Health asks the running plugin for its health.
func (h *Host) Health(ctx context.Context) (sdk.Health, error) {
	inst := h.current()
	if inst == nil {
		return sdk.Health{}, fmt.Errorf("plugin health: %w", ErrNotRunning)
	}
	var hl sdk.Health
	err := h.bounded(ctx, inst, h.cfg.StallTimeout, "Health", func(ctx context.Context) (err error) {
		hl, err = inst.det.Health(ctx)
		return err
	})
	return hl, err
}

// bounded runs call, one unary call to inst, with ctx bounded by d (no
// bound when d <= 0). A call that the bound, not ctx, ended means the
// plugin is hung (a detector stuck on some input, a model that makes it
// loop): like a ring plugin that stalls, it is stopped, and the supervisor
// restarts it. Without the bound a hung plugin held the file pipeline or
// the updater, whose contexts end only with the agent, for good.
func (h *Host) bounded(ctx context.Context, inst *instance, d time.Duration, what string, call func(context.Context) error) error {
	if d <= 0 {
		return call(ctx)
	}
	bound := time.Now().Add(d)
	if cd, ok := ctx.Deadline(); ok && !cd.After(bound) {
		return call(ctx) // the caller's bound comes first: its end says nothing of the plugin
	}
	cctx, cancel := context.WithDeadline(ctx, bound)
	defer cancel()
	err := call(cctx)
	// gRPC may report the deadline before cctx's own timer has fired:
	// the clock decides.
	if err != nil && ctx.Err() == nil && !time.Now().Before(bound) {
		h.log.Error("plugin hung: no answer to a call; stopping it", "call", what, "after", d, "pid", inst.pid)
		inst.setErr(fmt.Errorf("plugin hung: no answer to %s in %s", what, d))
		inst.cancel() // ends the instance (watchExit, or the results stream): the supervisor restarts it
		return fmt.Errorf("plugin %s: no answer in %s (the plugin is restarted): %w", what, d, err)
	}
	return err
}

// Score scores a batch with one unary gRPC call, bypassing the ring (small
// batches, tests). Anomaly.Index is the position in pkts.
func (h *Host) Score(ctx context.Context, pkts []event.Packet) (sdk.Result, error) {
	inst := h.current()
	if inst == nil {
		return sdk.Result{}, fmt.Errorf("plugin score: %w", ErrNotRunning)
	}
	var res sdk.Result
	err := h.bounded(ctx, inst, h.cfg.StallTimeout, "Score", func(ctx context.Context) (err error) {
		res, err = inst.det.ScorePackets(ctx, pkts)
		return err
	})
	return h.checked(res, len(pkts)), err
}

// ScoreFiles scores file events with one unary gRPC call.
func (h *Host) ScoreFiles(ctx context.Context, files []event.File) (sdk.Result, error) {
	inst := h.current()
	if inst == nil {
		return sdk.Result{}, fmt.Errorf("plugin score files: %w", ErrNotRunning)
	}
	var res sdk.Result
	err := h.bounded(ctx, inst, h.cfg.StallTimeout, "Score", func(ctx context.Context) (err error) {
		res, err = inst.det.ScoreFiles(ctx, files)
		return err
	})
	return h.checked(res, len(files)), err
}

// ScoreRaw scores packed records with one unary call.
func (h *Host) ScoreRaw(ctx context.Context, kind sdk.EventKind, b sdk.RawBatch) (sdk.Result, error) {
	inst := h.current()
	if inst == nil {
		return sdk.Result{}, fmt.Errorf("plugin score: %w", ErrNotRunning)
	}
	var res sdk.Result
	err := h.bounded(ctx, inst, h.cfg.StallTimeout, "Score", func(ctx context.Context) (err error) {
		res, err = inst.det.ScoreRaw(ctx, kind, b)
		return err
	})
	n := b.Len()
	if b.RecordSize == 0 && len(b.Data) >= 8 {
		n = int(binary.LittleEndian.Uint32(b.Data[4:])) // event.MarshalFiles: the count follows the magic
	}
	return h.checked(res, n), err
}

// checked is res, the answer for a batch of n records, made consistent
// (sdk.CheckResult; what it refused is counted).
func (h *Host) checked(res sdk.Result, n int) sdk.Result {
	var refused uint64
	res.Anomalies, refused = sdk.CheckResult(&res.Stats, res.Anomalies, 0, uint64(max(n, 0)))
	h.refused(refused)
	return res
}

// refused counts n anomalies of a plugin's answer that sdk.CheckResult
// dropped or clamped, and logs the first.
func (h *Host) refused(n uint64) {
	if n == 0 {
		return
	}
	if h.anomaliesRefused.Add(n) == n {
		h.log.Warn("plugin sent inconsistent anomalies (outside the batch, a record twice, more records than the batch): dropped or clamped, counted",
			"refused", n)
	}
}

// TryPush publishes as many records as fit in the ring now, without waiting,
// and returns how many. Records it does not take are the caller's (not
// counted as dropped).
func (h *Host) TryPush(recs []event.Packet) int {
	h.pushMu.Lock()
	defer h.pushMu.Unlock()
	inst := h.current()
	if inst == nil {
		return 0
	}
	n, _ := inst.tryPush(func(p *ring.Producer) int { return p.TryPush(recs) })
	h.published.Add(uint64(n))
	return n
}

// Push publishes all records, waiting (bounded by DownWait and FullWait, see
// Config) while the ring is full or the plugin is restarting; what it cannot
// deliver in time is dropped and counted. It returns the number published.
// Only ctx's error or ErrClosed are returned as errors (drops are not).
func (h *Host) Push(ctx context.Context, recs []event.Packet) (int, error) {
	return h.push(ctx, len(recs), func(p *ring.Producer, done int) int { return p.TryPush(recs[done:]) })
}

// PushEncoded is Push for records already encoded as 64-byte event.Packet
// records (a trailing partial record is ignored).
func (h *Host) PushEncoded(ctx context.Context, raw []byte) (int, error) {
	return h.push(ctx, len(raw)/ring.SlotSize, func(p *ring.Producer, done int) int {
		return p.TryPushRaw(raw[done*ring.SlotSize:])
	})
}

func (h *Host) push(ctx context.Context, total int, try func(p *ring.Producer, done int) int) (int, error) {
	h.pushMu.Lock()
	defer h.pushMu.Unlock()
	done := 0
	var fullSince, goneSince time.Time
	sleep := 20 * time.Microsecond
	for done < total {
		h.mu.Lock()
		inst, up, closed, downSince := h.cur, h.up, h.closed, h.downSince
		h.mu.Unlock()
		if inst == nil {
			if closed {
				h.droppedDown.Add(uint64(total - done))
				return done, ErrClosed
			}
			left := h.cfg.DownWait - time.Since(downSince)
			if left <= 0 {
				h.droppedDown.Add(uint64(total - done))
				return done, nil
			}
			t := time.NewTimer(left)
			select {
			case <-up:
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return done, fmt.Errorf("push records: %w", ctx.Err())
			}
			t.Stop()
			continue
		}
		if inst.ring == nil {
			return done, fmt.Errorf("push records: %w", ErrNoRing)
		}
		n, ok := inst.tryPush(func(p *ring.Producer) int { return try(p, done) })
		done += n
		h.published.Add(uint64(n))
		if done == total {
			break
		}
		if n > 0 {
			fullSince, sleep = time.Time{}, 20*time.Microsecond
			continue
		}
		if ok && inst.client.Exited() {
			ok = false
		}
		if !ok {
			// The instance is dying; the supervisor will retire it (making
			// cur nil or a new instance) in a moment.
			if goneSince.IsZero() {
				goneSince = time.Now()
			} else if time.Since(goneSince) > h.cfg.DownWait {
				h.droppedDown.Add(uint64(total - done))
				return done, nil
			}
			time.Sleep(time.Millisecond)
			continue
		}
		// Ring full, plugin alive: wait for space, bounded by FullWait.
		if fullSince.IsZero() {
			fullSince = time.Now()
		} else if time.Since(fullSince) > h.cfg.FullWait {
			h.droppedFull.Add(uint64(total - done))
			return done, nil
		}
		if err := ctx.Err(); err != nil {
			return done, fmt.Errorf("push records: %w", err)
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, time.Millisecond)
	}
	return done, nil
}

// install makes inst the current instance.
func (h *Host) install(inst *instance) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur = inst
	h.info = inst.info
	close(h.up)
	h.starts.Add(1)
}

// supervise waits for the instance to end and restarts it with backoff.
func (h *Host) supervise(inst *instance) {
	defer h.wg.Done()
	failures := 0
	for {
		select {
		case <-inst.done:
		case <-h.ctx.Done():
			return
		}
		if h.ctx.Err() != nil {
			return // Close retires the instance
		}
		ran := time.Since(inst.started)
		h.log.Warn("plugin died", "pid", inst.pid, "ran", ran, "err", inst.endErr())
		h.retire(inst)
		if ran >= h.cfg.StableAfter {
			failures = 0
		}
		for {
			delay := backoff(h.cfg.MinBackoff, h.cfg.MaxBackoff, failures)
			failures++
			h.log.Info("restarting plugin", "in", delay, "attempt", failures)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-h.ctx.Done():
				t.Stop()
				return
			}
			h.mu.Lock()
			base := h.nextBase
			models := slices.Clone(h.models)
			h.mu.Unlock()
			next, err := h.launch(h.ctx, base)
			if err != nil {
				h.startFailures.Add(1)
				h.log.Error("plugin restart failed", "err", err)
				continue
			}
			for _, l := range models {
				ctx, cancel := context.WithTimeout(h.ctx, h.cfg.StartTimeout)
				if m, err := next.det.LoadModel(ctx, l.path); err != nil {
					h.log.Error("reloading model into restarted plugin failed", "path", l.path, "err", err)
				} else {
					h.log.Info("model reloaded into restarted plugin", "name", m.Name, "version", m.Version)
				}
				cancel()
			}
			h.mu.Lock()
			if h.closed {
				h.mu.Unlock()
				h.retire(next)
				return
			}
			h.mu.Unlock()
			h.install(next)
			h.restarts.Add(1)
			inst = next
			break
		}
	}
}

// backoff returns min(minB * 2^failures, maxB).
func backoff(minB, maxB time.Duration, failures int) time.Duration {
	d := minB
	for i := 0; i < failures && d < maxB; i++ {
		d *= 2
	}
	return min(d, maxB)
}

// retire stops an instance for good and accounts for its ring exactly:
// records below tail were consumed, tail..head are lost, and consumed
// records whose results never arrived are unreported.
func (h *Host) retire(inst *instance) {
	h.mu.Lock()
	if h.cur == inst {
		h.cur = nil
		h.up = make(chan struct{})
		h.downSince = time.Now()
	}
	h.mu.Unlock()
	inst.stop(h.log)
	if inst.ring == nil {
		return
	}
	inst.mu.Lock()
	inst.dead = true
	head, tail := inst.ring.Head(), inst.ring.Tail()
	inst.mu.Unlock()
	last := inst.lastEnd.Load()
	if tail > head || tail < last {
		// The plugin corrupted tail (the SDK releases records before it
		// sends their results, so tail >= last >= base): trust only what
		// its results prove.
		h.log.Error("plugin left an inconsistent ring tail", "head", head, "tail", tail)
		tail = max(last, inst.ring.Base())
	}
	lost := head - tail
	var unrep uint64
	if tail > last {
		unrep = tail - last
	}
	h.lostInFlight.Add(lost)
	h.unreported.Add(unrep)
	h.mu.Lock()
	h.nextBase = max(h.nextBase, head)
	h.mu.Unlock()
	if lost > 0 || unrep > 0 {
		h.log.Warn("records lost with the plugin", "lost_in_flight", lost, "unreported", unrep, "head", head, "tail", tail)
	}
	_ = inst.prod.CloseWake()
	if err := inst.ring.Close(); err != nil {
		h.log.Warn("closing ring", "err", err)
	}
}

// Close stops the plugin. It first closes the ring and waits (bounded by
// ctx) for the plugin to drain it, so that records already pushed get
// scored; whatever remains is counted as lost.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	inst := h.current()
	if inst == nil {
		return nil
	}
	if inst.ring != nil {
		inst.mu.Lock()
		if !inst.dead {
			inst.prod.Close()
		}
		inst.mu.Unlock()
		select {
		case <-inst.done:
		case <-ctx.Done():
		}
	}
	h.retire(inst)
	return nil
}
