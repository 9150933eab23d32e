package update

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/internal/buildinfo"
	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
	"github.com/vigil-edge/vigil/models/trust"
	"github.com/vigil-edge/vigil/plugins/sdk"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Model states reported in wire ModelStatus.State.
const (
	StateOffered    = "offered"
	StateFetched    = "fetched"
	StateVerified   = "verified"
	StateActive     = "active"
	StateRejected   = "rejected"
	StateRolledBack = "rolled_back"
	StateShadow     = "shadow"
	// StateWithdrawn: the server withdrew the rollout (halted it); a shadow model running it
	// was stopped, a pending offer of it dropped.
	StateWithdrawn = "withdrawn"
)

// ModelLoader is what the updater needs from a detector plugin (the running detector pipeline's
// plugin host, or a plugin started just for the update: see PluginLoaders).
type ModelLoader interface {
	// Info is the plugin's self-description (feature sets and dimension it accepts).
	Info() sdk.Info
	// LoadModel makes the bundle at path the plugin's active model for its feature set; on error
	// the plugin's previous model stays active.
	LoadModel(ctx context.Context, path string) (sdk.ModelInfo, error)
	// Health is the plugin's self-report.
	Health(ctx context.Context) (sdk.Health, error)
	// Probe scores a built-in probe batch with the active model.
	Probe(ctx context.Context) (sdk.Result, error)
}

// StartWaiter is optionally implemented by a ModelLoader whose plugin may not be up yet (a
// running pipeline's plugin host, while the agent starts or the host restarts a crashed plugin):
// the updater waits for it before reading Info, so that an offer that arrives first (the server
// repeats pending offers at every Hello) is checked against the plugin, not refused because the
// plugin has described no feature set yet.
type StartWaiter interface {
	WaitRunning(ctx context.Context) error
}

// ShadowLoader is optionally implemented by a ModelLoader that can run a second model beside the
// active one without raising findings from it (shadow mode; agent/detect implements it with a
// second instance of the detector plugin fed the same packets).
type ShadowLoader interface {
	// LoadShadow starts scoring the live events with the bundle at path too, replacing any
	// shadow model already running. Its anomalies never become findings; observe receives,
	// for every stretch of events both models scored, the active and the shadow model's
	// sdk.Stats (the updater passes ObserveShadow). On error no shadow model runs.
	LoadShadow(ctx context.Context, path string, observe func(active, shadow sdk.Stats)) (sdk.ModelInfo, error)
	// StopShadow stops the shadow model (no-op when none runs).
	StopShadow(ctx context.Context) error
}

// Loaders finds the loader of a detector. release is called when the updater is done with it
// (a plugin started only for the update is stopped then).
type Loaders interface {
	Loader(ctx context.Context, detector string) (l ModelLoader, release func(), err error)
}

// LoaderMap is a fixed set of loaders (a running agent's plugin hosts; tests).
type LoaderMap map[string]ModelLoader

// Loader implements Loaders.
func (m LoaderMap) Loader(_ context.Context, detector string) (ModelLoader, func(), error) {
	l, ok := m[detector]
	if !ok {
		return nil, nil, fmt.Errorf("no %q detector on this agent", detector)
	}
	return l, func() {}, nil
}

// Step names a point of the update where a test can inject a crash (Config.Failpoint).
type Step string

// Steps, in order.
const (
	StepFetched   Step = "fetched"   // the download is complete and renamed into place
	StepVerified  Step = "verified"  // signatures, digest, version and plugin checks passed
	StepStaged    Step = "staged"    // the bundle is in <state>/models/<detector>/ (a shadow bundle in its shadow/)
	StepLoaded    Step = "loaded"    // the plugin loaded it (not yet health-checked)
	StepHealthy   Step = "healthy"   // health check passed, pointers not yet written
	StepPrevious  Step = "previous"  // the previous pointer is written, active not yet
	StepActivated Step = "activated" // the active pointer names the new bundle
)

// Config configures an Updater.
type Config struct {
	// StateDir is the agent's state directory (trust.json, models/, update/).
	StateDir string
	// TrustSeed is the shipped trust policy that <StateDir>/trust.json is
	// installed from when absent (SeedPolicy; "": none).
	TrustSeed string
	// Loaders gives the plugin of a bundle's detector. Required.
	Loaders Loaders
	// Fetcher downloads offered bundles (nil: offers are rejected, air-gapped sensors).
	Fetcher Fetcher
	// Report receives every status (nil: logged only). It must not block for long, nor call the
	// Updater (ShadowReport calls it under the shadow lock).
	Report func(*wirev1.ModelStatus)
	// Baseline returns the installed bundle a slot runs when it has no active model (the bundle
	// the detector pipeline was started with): a model failing its health check with no previous
	// model is rolled back to it, and an update must have a greater version than it. nil or ""
	// means none.
	Baseline func(detector, featureSet string) string
	Logger   *slog.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// AgentVersion is this agent's version, compared with a bundle's min_agent_version
	// ("" means buildinfo.Version).
	AgentVersion string
	// Failpoint, when set, is called at every Step; an error stops the update right there as a
	// crash would (no rollback, no report). Tests only.
	Failpoint func(Step) error
	// MaxBundle bounds a download (default bundle.DefaultLimits().MaxTotal).
	MaxBundle int64
	// RetryMin, RetryMax bound the backoff between fetch attempts (defaults 200 ms, 30 s).
	RetryMin, RetryMax time.Duration
}

// Updater applies model updates. Create with New, call Recover once at start, then Run (for
// offers) or Install (air-gapped).
type Updater struct {
	cfg Config
	log *slog.Logger

	mu          sync.Mutex // one update at a time
	offers      chan *wirev1.ModelOffer
	withdrawals chan *wirev1.ModelWithdrawal
	queuedMu    sync.Mutex
	queued      map[string]bool // rollout+digest in the queue or in progress
	withdrawn   map[string]bool // rollout ids the server withdrew (guarded by queuedMu)

	shadow shadowState
}

// New checks cfg and returns an updater.
func New(cfg Config) (*Updater, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("updater: no state directory")
	}
	if cfg.Loaders == nil {
		return nil, errors.New("updater: no loaders")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AgentVersion == "" {
		cfg.AgentVersion = buildinfo.Version
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBundle <= 0 {
		cfg.MaxBundle = bundle.DefaultLimits().MaxTotal
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 200 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 30 * time.Second
	}
	return &Updater{cfg: cfg, log: cfg.Logger, offers: make(chan *wirev1.ModelOffer, 64),
		withdrawals: make(chan *wirev1.ModelWithdrawal, 16), queued: map[string]bool{}, withdrawn: map[string]bool{}}, nil
}

// Rejection is an update refused before anything was activated; Reason is what the server sees.
// State is StateRolledBack only when a model failed its health check and an earlier model was
// loaded back; when none could be, State is StateRejected and Err wraps ErrNotRestored.
type Rejection struct {
	State  string // StateRejected or StateRolledBack
	Reason string
	Err    error
}

// ErrNotRestored is wrapped by the Rejection of a model that failed its health check after the
// plugin loaded it when no earlier model (previous or installed baseline) could be loaded back:
// the plugin may still run the failed model. Nothing was activated; the agent's next start loads
// its active model (or baseline) again.
var ErrNotRestored = errors.New("no earlier model could be restored")

func (r *Rejection) Error() string { return r.State + ": " + r.Reason }
func (r *Rejection) Unwrap() error { return r.Err }

func reject(err error, format string, args ...any) *Rejection {
	return &Rejection{State: StateRejected, Reason: fmt.Sprintf(format, args...), Err: err}
}

// Request is one bundle to install.
type Request struct {
	Path      string // the bundle file (downloaded or given)
	Digest    string // expected "sha256:<hex>" of the file ("" = not checked: air-gapped)
	RolloutID string
	// Rollback is a signed rollback instruction (models/rollback) allowing a version that is not
	// greater than the active one, the slot's version floor or the installed baseline.
	Rollback []byte
	// Shadow runs the model beside the active one (no findings) instead of activating it.
	Shadow bool
}

// Result describes an installed bundle.
type Result struct {
	State    string // StateActive, StateShadow (or StateActive when it already was)
	Manifest bundle.Manifest
	Digest   string
	Path     string
	Previous string // the bundle that was active before ("" when none)
	Already  bool   // this bundle was already active
}

func (u *Updater) failpoint(s Step) error {
	if u.cfg.Failpoint == nil {
		return nil
	}
	if err := u.cfg.Failpoint(s); err != nil {
		return fmt.Errorf("failpoint %s: %w", s, err)
	}
	return nil
}

// Policy loads <state>/trust.json, installed first from Config.TrustSeed
// when absent.
func (u *Updater) Policy() (trust.Policy, error) {
	if ok, err := SeedPolicy(u.cfg.StateDir, u.cfg.TrustSeed); err != nil {
		return trust.Policy{}, fmt.Errorf("no usable trust policy: %w", err)
	} else if ok {
		u.cfg.Logger.Info("trust policy installed from the shipped one", "from", u.cfg.TrustSeed,
			"to", filepath.Join(u.cfg.StateDir, TrustFile))
	}
	p, err := trust.Load(filepath.Join(u.cfg.StateDir, TrustFile))
	if err != nil {
		seed := u.cfg.TrustSeed
		if seed == "" {
			seed = DefaultTrustSeed
		}
		return trust.Policy{}, fmt.Errorf("no usable trust policy (install %s from %s): %w",
			filepath.Join(u.cfg.StateDir, TrustFile), seed, err)
	}
	return p, nil
}

// Active returns the active bundle of a detector's feature-set slot.
func (u *Updater) Active(detector, featureSet string) (Active, bool) {
	return loadActive(u.detectorDir(detector), activePrefix+SlotName(featureSet))
}

// FileDigest is the "sha256:<hex>" of a file. Only a regular file is read (a symbolic link to
// one is followed): a named pipe where a download is expected would otherwise hold the updater.
func FileDigest(path string) (string, error) {
	f, _, err := fsutil.OpenRegular(path, os.O_RDONLY, 0)
	if err != nil {
		return "", fmt.Errorf("digest %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("digest %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// Install verifies, stages, loads, health-checks and activates (or shadows) one bundle. A
// *Rejection error says why nothing changed (State rejected) or why the model was rolled back.
// Other errors are I/O errors or injected crashes. It holds the state directory's inter-process
// lock (lockState) throughout, waiting for it until ctx ends.
//
// The bundle file is read once: the bytes hashed, verified and staged are the same, so a file
// replaced meanwhile cannot get unverified bytes activated.
func (u *Updater) Install(ctx context.Context, req Request) (Result, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	unlock, err := u.lockState(ctx)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	return u.install(ctx, req)
}

// readBundleFile reads a whole bundle file, refusing one larger than the bundle size limit
// (bundle.DefaultLimits().MaxTotal) or that is not a regular file (fsutil.ReadRegular: a named
// pipe is refused at once instead of holding the updater).
func readBundleFile(path string) ([]byte, error) {
	limit := bundle.DefaultLimits().MaxTotal
	data, err := fsutil.ReadRegular(path, limit)
	switch {
	case errors.Is(err, fsutil.ErrNotRegular):
		return nil, reject(nil, "bundle %s is not a regular file", filepath.Base(path))
	case errors.Is(err, fsutil.ErrTooLarge):
		return nil, reject(nil, "bundle file is larger than the limit of %d bytes", limit)
	case err != nil:
		return nil, fmt.Errorf("read bundle %s: %w", path, err)
	}
	return data, nil
}

func (u *Updater) install(ctx context.Context, req Request) (Result, error) {
	now := u.cfg.Now()
	pol, err := u.Policy()
	if err != nil {
		return Result{}, reject(err, "%v", err)
	}
	data, err := readBundleFile(req.Path)
	if err != nil {
		return Result{}, err
	}
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if req.Digest != "" && digest != req.Digest {
		return Result{}, reject(nil, "digest mismatch: downloaded %s, offered %s", digest, req.Digest)
	}
	b, keys, err := trust.VerifyBundleReader(bytes.NewReader(data), bundle.DefaultLimits(), pol, now)
	if err != nil {
		return Result{}, reject(err, "%s", reasonOf(err))
	}
	m := b.Manifest
	res := Result{Manifest: m, Digest: digest}
	switch tooOld, known := m.AgentTooOld(u.cfg.AgentVersion); {
	case tooOld:
		return res, reject(nil, "the model needs agent version %s or later; this agent is %s", m.MinAgentVersion, u.cfg.AgentVersion)
	case !known:
		u.log.Warn("min_agent_version not checked: this agent's version is not a release version",
			"min_agent_version", m.MinAgentVersion, "agent_version", u.cfg.AgentVersion)
	}

	loader, release, err := u.cfg.Loaders.Loader(ctx, m.Detector)
	if err != nil {
		return res, reject(err, "detector %s: %v", m.Detector, err)
	}
	defer release()
	if w, ok := loader.(StartWaiter); ok {
		if err := w.WaitRunning(ctx); err != nil {
			return res, reject(err, "the %s plugin is not running: %v", m.Detector, err)
		}
	}
	info := loader.Info()
	if !slices.Contains(info.FeatureSets, m.FeatureSet) {
		return res, reject(nil, "feature set %s not supported by the %s plugin (it accepts %s)", m.FeatureSet, m.Detector,
			strings.Join(info.FeatureSets, ", "))
	}
	if len(info.FeatureSets) > 0 && info.FeatureSets[0] == m.FeatureSet && info.Dim > 0 && info.Dim != m.Dim {
		return res, reject(nil, "dimension %d does not match the plugin's %d for %s", m.Dim, info.Dim, m.FeatureSet)
	}
	dir := u.detectorDir(m.Detector)
	slot := SlotName(m.FeatureSet)
	cur, haveCur := loadActive(dir, activePrefix+slot)
	if haveCur && cur.Digest == digest && !req.Shadow {
		res.State, res.Path, res.Already = StateActive, cur.Path, true
		return res, nil
	}
	// Anti-rollback: the version must be greater than the active one, than the highest one ever
	// activated in the slot (kept when the active bundle is lost), than the floors and installed
	// baselines of the feature set's other versions (the plugin runs one model for all of them:
	// familyFloor) and than the installed baseline's. The bundle that set the floor may come back
	// (after a rollback, or when its staged file was lost).
	floor, err := readFloor(dir, slot)
	if err != nil {
		return res, reject(err, "%v", err)
	}
	famVersion, famSet, err := familyFloor(dir, m.FeatureSet)
	if err != nil {
		return res, reject(err, "%v", err)
	}
	// The installed baselines of the feature set's other versions count too; famBase is the
	// newest of them.
	var famBase Active
	for _, fs := range info.FeatureSets {
		if fs == m.FeatureSet || sdk.FeatureFamily(fs) != sdk.FeatureFamily(m.FeatureSet) {
			continue
		}
		if b, ok := u.baseline(m.Detector, fs); ok && b.Manifest.Version > famBase.Manifest.Version {
			famBase = b
		}
	}
	if famBase.Manifest.Version > famVersion {
		famVersion, famSet = famBase.Manifest.Version, famBase.FeatureSet
	}
	base, haveBase := u.baseline(m.Detector, m.FeatureSet)
	replay, err := readReplay(dir, m.FeatureSet)
	if err != nil {
		return res, reject(err, "%v", err)
	}
	var below string // what the version is not greater than
	switch {
	case haveCur && m.Version <= cur.Manifest.Version:
		below = fmt.Sprintf("the active version %d", cur.Manifest.Version)
	case m.Version < floor.Version || (m.Version == floor.Version && digest != floor.Digest):
		below = fmt.Sprintf("version %d, the highest activated for %s on this agent", floor.Version, m.FeatureSet)
	case m.Version <= famVersion:
		// The plugin runs one model for all versions of a feature set's name.
		below = fmt.Sprintf("version %d of the %s model on this agent (one model runs for every version of a feature set)", famVersion, famSet)
	case haveBase && m.Version <= base.Manifest.Version:
		below = fmt.Sprintf("the installed baseline version %d", base.Manifest.Version)
	}
	var instr *rollback.Instruction // the instruction allowing a downgrade (nil: none needed)
	if below != "" {
		if req.Rollback == nil {
			return res, reject(nil, "version %d is not greater than %s (a downgrade needs a signed rollback instruction)", m.Version, below)
		}
		in, err := rollback.Verify(req.Rollback, pol, now)
		if err != nil {
			return res, reject(err, "rollback instruction: %s", reasonOf(err))
		}
		if !in.Allows(&m) {
			return res, reject(nil, "rollback instruction names %s %s@%d, not this bundle", in.Detector, in.Name, in.Version)
		}
		// A validly signed instruction within its validity window may still be a replay: it must
		// be newer than the running model's activation and than the last instruction applied.
		if err := checkRollbackReplay(&in, replay, sdk.FeatureFamily(m.FeatureSet)); err != nil {
			return res, reject(err, "%v", err)
		}
		instr = &in
		u.log.Warn("downgrade allowed by a signed rollback instruction", "name", m.Name, "version", m.Version,
			"not_greater_than", below, "reason", in.Reason)
	}
	u.log.Info("bundle verified", "name", m.Name, "version", m.Version, "detector", m.Detector, "keys", len(keys))
	u.report(req.RolloutID, &m, digest, StateVerified, "")
	if err := u.failpoint(StepVerified); err != nil {
		return res, err
	}

	// Stage the verified bytes. A shadow model gets its own copy in <detector>/shadow/, which no
	// pointer can name: stopping it never removes a bundle a pointer names.
	sl, shadowOK := loader.(ShadowLoader)
	stageDir := dir
	if req.Shadow {
		if !shadowOK {
			return res, reject(nil, "shadow mode is not supported by the %s detector on this agent (no running %s pipeline)", m.Detector, m.Detector)
		}
		// One shadow model at a time: a new shadow rollout replaces the running one, which is
		// stopped (and its bundle removed) before the new bundle is staged.
		u.stopShadow(ctx, "replaced by the shadow model of rollout "+req.RolloutID)
		stageDir = filepath.Join(dir, shadowDir)
		// Only the running agent stages shadow bundles and one runs at a time: what is left here
		// is the bundle of a shadow model that ran before a restart.
		if err := os.RemoveAll(stageDir); err != nil {
			return res, fmt.Errorf("stage: %w", err)
		}
	}
	if err := os.MkdirAll(stageDir, 0o750); err != nil {
		return res, fmt.Errorf("stage: %w", err)
	}
	staged := filepath.Join(stageDir, fmt.Sprintf("%s-%d-%s%s", m.Name, m.Version, strings.TrimPrefix(digest, "sha256:")[:12], bundle.Extension))
	if err := writeFileAtomic(staged, data, 0o644); err != nil {
		return res, fmt.Errorf("stage: %w", err)
	}
	res.Path = staged
	if err := u.failpoint(StepStaged); err != nil {
		return res, err
	}

	if req.Shadow {
		if _, err := sl.LoadShadow(ctx, staged, u.ObserveShadow); err != nil {
			_ = os.Remove(staged) // in shadow/: no pointer names it
			return res, reject(err, "plugin refused the shadow model: %v", err)
		}
		u.startShadow(req.RolloutID, &m, digest, staged)
		res.State, res.Path = StateShadow, staged
		u.log.Info("shadow model running", "name", m.Name, "version", m.Version, "detector", m.Detector, "rollout", req.RolloutID)
		return res, nil
	}

	// Load and check health.
	if _, err := loader.LoadModel(ctx, staged); err != nil {
		return res, reject(err, "plugin refused the model (previous model still active): %v", err)
	}
	if err := u.failpoint(StepLoaded); err != nil {
		return res, err
	}
	if herr := CheckLoaded(ctx, loader, &m); herr != nil {
		reason := "health check failed: " + herr.Error()
		prev := ""
		if haveCur {
			prev = cur.Path
		} else if fam, ok := familyActive(dir, m.FeatureSet); ok {
			prev = fam.Path // the plugin ran it for another version of the feature set
		} else if haveBase {
			prev = base.Path
		} else if famBase.Path != "" {
			prev = famBase.Path
		}
		var rej *Rejection
		if prev == "" {
			u.log.Error("model failed its health check and no earlier model can be restored", "name", m.Name, "version", m.Version)
			rej = &Rejection{State: StateRejected, Err: fmt.Errorf("%w: %w", ErrNotRestored, herr),
				Reason: reason + "; no previous or baseline model to roll back to (nothing was loaded back in its place)"}
		} else if _, err := loader.LoadModel(ctx, prev); err != nil {
			u.log.Error("rollback failed", "previous", prev, "err", err)
			rej = &Rejection{State: StateRejected, Err: fmt.Errorf("%w: reload %s: %w", ErrNotRestored, filepath.Base(prev), err),
				Reason: reason + fmt.Sprintf("; reloading the previous model %s failed too (nothing was loaded back in its place): %v",
					filepath.Base(prev), err)}
		} else {
			rej = &Rejection{State: StateRolledBack, Reason: reason + "; rolled back to " + filepath.Base(prev), Err: herr}
		}
		u.gc(dir) // the staged bundle goes, unless a pointer names it
		return res, rej
	}
	if err := u.failpoint(StepHealthy); err != nil {
		return res, err
	}

	// Activate: previous pointer first, then active. A crash between the two leaves both
	// naming the old bundle. A downgrade (signed rollback instruction) leaves no previous
	// pointer: the model it replaces is the one being rolled back from, and Recover must not
	// bring it back when the active bundle is lost.
	prevPointer := filepath.Join(dir, previousPrefix+slot)
	switch {
	case haveCur && m.Version <= cur.Manifest.Version:
		res.Previous = cur.Path
		if err := os.Remove(prevPointer); err != nil && !errors.Is(err, os.ErrNotExist) {
			return res, fmt.Errorf("remove previous pointer: %w", err)
		}
		if err := fsutil.SyncDir(dir); err != nil {
			return res, err
		}
	case haveCur:
		res.Previous = cur.Path
		if err := writeFileAtomic(prevPointer, []byte(filepath.Base(cur.Path)+"\n"), 0o644); err != nil {
			return res, err
		}
	}
	if err := u.failpoint(StepPrevious); err != nil {
		return res, err
	}
	// The floor before the active pointer: after a crash between the two, the same bundle may
	// still be installed again (it is the one that set the floor).
	if err := raiseFloor(dir, slot, m.Version, digest); err != nil {
		return res, err
	}
	// The replay state (checkRollbackReplay) before the active pointer too: a crash in between
	// leaves it recording an activation that did not happen, which can make a rollback instruction
	// be refused (the operator then issues a new one), never a replayed one accepted.
	if err := writeReplay(dir, m.FeatureSet, replay.activated(u.cfg.Now(), instr)); err != nil {
		return res, err
	}
	if err := writeFileAtomic(filepath.Join(dir, activePrefix+slot), []byte(filepath.Base(staged)+"\n"), 0o644); err != nil {
		return res, err
	}
	// The plugin runs one model for all versions of a feature set's name: the other versions'
	// models are no longer active (a restart would load them too, and run the one loaded last).
	if err := retireFamily(dir, m.FeatureSet); err != nil {
		return res, err
	}
	if err := u.failpoint(StepActivated); err != nil {
		return res, err
	}
	u.gc(dir)
	res.State = StateActive
	u.log.Info("model active", "name", m.Name, "version", m.Version, "detector", m.Detector, "feature_set", m.FeatureSet, "path", staged)
	return res, nil
}

// CheckLoaded is the check of a model the plugin behind l has just loaded: it
// must report itself healthy, running m when it names a model of m's feature
// set, and score the probe batch with finite scores. The updater runs it
// after every load; the pipelines run it on their shadow instances.
func CheckLoaded(ctx context.Context, l ModelLoader, m *bundle.Manifest) error {
	h, err := l.Health(ctx)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if !h.OK {
		return fmt.Errorf("plugin reports unhealthy: %s", h.Message)
	}
	if h.Model.FeatureSet == m.FeatureSet && h.Model.Name != "" && (h.Model.Name != m.Name || h.Model.Version != m.Version) {
		return fmt.Errorf("plugin reports model %s@%d active, not %s@%d", h.Model.Name, h.Model.Version, m.Name, m.Version)
	}
	r, err := l.Probe(ctx)
	if err != nil {
		return fmt.Errorf("probe batch: %w", err)
	}
	for _, v := range []float32{r.Stats.P50, r.Stats.P90, r.Stats.P99, r.Stats.Max} {
		if !finite(v) {
			return fmt.Errorf("probe batch: score statistics are not finite (p50 %v, p99 %v, max %v)", r.Stats.P50, r.Stats.P99, r.Stats.Max)
		}
	}
	for _, s := range r.Scores {
		if !finite(s) {
			return fmt.Errorf("probe batch: a score is not finite (%v)", s)
		}
	}
	for _, a := range r.Anomalies {
		if !finite(a.Score) {
			return fmt.Errorf("probe batch: an anomaly score is not finite (%v)", a.Score)
		}
	}
	return nil
}

func finite(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }

// tmpMaxAge is the age from which gc removes a temporary file (one of a crashed write).
const tmpMaxAge = time.Minute

// gc removes staged bundles of dir that no pointer names, and temporary files older than
// tmpMaxAge. The caller holds the state lock (lockState); shadow/ is not its business.
func (u *Updater) gc(dir string) {
	keep := map[string]bool{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, activePrefix) || strings.HasPrefix(n, previousPrefix) {
			if p, err := readPointer(dir, n); err == nil && p != "" {
				keep[filepath.Base(p)] = true
			}
		}
	}
	for _, e := range ents {
		n := e.Name()
		switch {
		case e.IsDir(): // shadow/
		case strings.HasPrefix(n, ".tmp-"):
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > tmpMaxAge {
				_ = os.Remove(filepath.Join(dir, n))
			}
		case strings.HasSuffix(n, bundle.Extension) && !keep[n]:
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
}

// Recover repairs the state after a crash: an active pointer whose bundle is missing or damaged
// falls back to the previous one; stale temporary files and unreferenced staged bundles are
// removed; a slot's version floor is raised to its active version (state written before floors
// existed). It holds the state lock (lockState), waiting for it. It returns the active models.
func (u *Updater) Recover() ([]Active, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	unlock, err := u.lockState(context.Background())
	if err != nil {
		return nil, fmt.Errorf("recover: %w", err)
	}
	defer unlock()
	root := filepath.Join(u.cfg.StateDir, ModelsDir)
	dets, err := os.ReadDir(root)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("recover: %w", err)
	}
	for _, d := range dets {
		if !d.IsDir() {
			continue
		}
		dir := filepath.Join(root, d.Name())
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			slot, ok := strings.CutPrefix(e.Name(), activePrefix)
			if !ok || strings.HasPrefix(e.Name(), ".tmp-") {
				continue
			}
			if a, ok := loadActive(dir, activePrefix+slot); ok {
				if err := raiseFloor(dir, slot, a.Manifest.Version, a.Digest); err != nil {
					u.log.Error("version floor not updated", "detector", d.Name(), "slot", slot, "err", err)
				}
				continue
			}
			if prev, ok := loadActive(dir, previousPrefix+slot); ok {
				u.log.Warn("active model unusable; falling back to the previous one", "detector", d.Name(), "slot", slot, "previous", prev.Path)
				if err := writeFileAtomic(filepath.Join(dir, activePrefix+slot), []byte(filepath.Base(prev.Path)+"\n"), 0o644); err != nil {
					return nil, fmt.Errorf("recover: %w", err)
				}
			} else {
				u.log.Error("active model unusable and no previous one: the baseline will be used", "detector", d.Name(), "slot", slot)
				_ = os.Remove(filepath.Join(dir, activePrefix+slot))
			}
		}
		u.gc(dir)
	}
	return ActiveModels(u.cfg.StateDir)
}

// report sends a status (and logs it).
func (u *Updater) report(rolloutID string, m *bundle.Manifest, digest, state, reason string) {
	st := &wirev1.ModelStatus{RolloutId: rolloutID, State: state, Reason: reason, TimeUnixNano: u.cfg.Now().UnixNano(),
		Model: &wirev1.ModelRef{Digest: digest}}
	if m != nil {
		st.Model.Name, st.Model.Version, st.Model.Detector = m.Name, m.Version, m.Detector
	}
	u.reportStatus(st)
}

func (u *Updater) reportStatus(st *wirev1.ModelStatus) {
	lvl := slog.LevelInfo
	if st.State == StateRejected || st.State == StateRolledBack {
		lvl = slog.LevelWarn
	}
	u.log.Log(context.Background(), lvl, "model status", "rollout", st.RolloutId, "model", st.GetModel().GetName(),
		"version", st.GetModel().GetVersion(), "digest", st.GetModel().GetDigest(), "state", st.State, "reason", st.Reason)
	if u.cfg.Report != nil {
		u.cfg.Report(st)
	}
}

// reasonOf turns a verification error into a short reason for the server.
func reasonOf(err error) string {
	var te *trust.ThresholdError
	switch {
	case errors.As(err, &te):
		return "signature check failed: " + te.Error()
	case errors.Is(err, trust.ErrExpired):
		return "expired: " + lastPart(err)
	case errors.Is(err, bundle.ErrInvalid):
		return "malformed or tampered bundle: " + lastPart(err)
	}
	return err.Error()
}

// lastPart strips the "verify bundle PATH: " prefixes of a wrapped error.
func lastPart(err error) string {
	s := err.Error()
	for _, p := range []string{"invalid bundle: ", "bundle expired: "} {
		if i := strings.Index(s, p); i >= 0 {
			return s[i:]
		}
	}
	return s
}

// baseline resolves Config.Baseline for a slot: the installed bundle's path and manifest, if it
// parses and is of that detector and feature set.
func (u *Updater) baseline(detector, featureSet string) (Active, bool) {
	if u.cfg.Baseline == nil {
		return Active{}, false
	}
	p := u.cfg.Baseline(detector, featureSet)
	if p == "" {
		return Active{}, false
	}
	b, err := bundle.Read(p, bundle.DefaultLimits())
	if err != nil {
		u.log.Warn("installed baseline unreadable", "path", p, "err", err)
		return Active{}, false
	}
	if b.Manifest.Detector != detector || b.Manifest.FeatureSet != featureSet {
		u.log.Warn("installed baseline of another slot ignored", "path", p, "detector", b.Manifest.Detector, "feature_set", b.Manifest.FeatureSet)
		return Active{}, false
	}
	return Active{Detector: detector, FeatureSet: featureSet, Path: p, Manifest: b.Manifest}, true
}
