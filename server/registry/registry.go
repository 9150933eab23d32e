// Package registry is the server's model registry and rollout logic: publishing a signed bundle
// (signatures verified against the server's copy of the trust policy, <data>/trust.json, and the
// model smoke-loaded by the matching detector plugin), creating rollouts that target an entity, a
// list of agents or a stable percentage of agents, pushing ModelOffers to connected agents at
// once and to the others when they say Hello (each offer checked again against the trust policy
// of the moment: trustcheck.go), and reporting per-agent rollout status.
//
// It is a server package: it never imports agent/...; the plugin smoke test starts the detector
// binary through plugins/sdk's go-plugin glue.
package registry

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
	"github.com/vigil-edge/vigil/models/trust"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TrustFile is the server's copy of the release-key trust policy, in the data directory.
const TrustFile = "trust.json"

// Pusher delivers control messages to connected agents (*endpoint.Endpoint).
type Pusher interface {
	Push(agentID string, msg *wirev1.ServerControl) error
	Connected() []string
}

// Config configures a Registry.
type Config struct {
	DB        *store.DB
	DataDir   string // trust.json lives here
	BundleDir string // bundles are stored as <sha256hex>.vgb (what FETCH serves)
	// PluginDirs are searched for vigil-detector-<detector> for the smoke test.
	PluginDirs []string
	// PluginEnv is the smoke-test plugin's environment (e.g. ONNXRUNTIME_LIB=...).
	PluginEnv []string
	Logger    *slog.Logger
	Now       func() time.Time
	// HaltMinEvents and HaltRateFloor tune the shadow halt rule (0 = DefaultHaltMinEvents,
	// DefaultHaltRateFloor; see halt.go).
	HaltMinEvents uint64
	HaltRateFloor float64
	// PushWorkers bounds the pushes to agents in flight at once (0 = DefaultPushWorkers);
	// PushWait bounds how long a fan-out waits for its pushes (0 = DefaultPushWait). See push.go.
	PushWorkers int
	PushWait    time.Duration
	// Registerer receives the registry's Prometheus metrics (trustcheck.go); nil means none.
	Registerer prometheus.Registerer
}

// Registry is the model registry.
type Registry struct {
	cfg Config
	log *slog.Logger

	pq *pushQueue
	// decideMu orders the decisions of what to push: OnHello and PushPending hold it shared
	// from reading the rollouts to queueing their messages, a halt holds it exclusively from
	// changing the rollout's state to queueing its withdrawals. So an offer decided from a
	// rollout's old state is always queued before its withdrawal, never after. No push (and
	// no wait for one) runs under it: queueing does not block.
	decideMu sync.RWMutex
	// beforeQueue, when set (by tests), runs in OnHello between reading the rollouts and
	// queueing the agent's messages.
	beforeQueue func()

	mu     sync.RWMutex
	pusher Pusher

	// trust caches trust.json and the checks of offers against it (trustcheck.go).
	trust   trustChecker
	metrics *registryMetrics
	// bg tracks the work the trust check starts in the background (halts, pushes), which
	// tests wait for.
	bg sync.WaitGroup
}

// New returns a registry; SetPusher connects it to the endpoint once that exists.
func New(cfg Config) *Registry {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PushWait <= 0 {
		cfg.PushWait = DefaultPushWait
	}
	r := &Registry{cfg: cfg, log: cfg.Logger, pq: newPushQueue(cfg.PushWorkers), metrics: newRegistryMetrics()}
	r.trust.results = map[checkKey]checkResult{}
	r.trust.inflight = map[checkKey]*inflightCheck{}
	r.trust.logged = map[string]string{}
	r.pq.guard = r.guardOffer
	if cfg.Registerer != nil {
		if err := r.metrics.register(cfg.Registerer); err != nil {
			r.log.Error("registry metrics", "err", err)
		}
	}
	return r
}

// SetPusher sets the endpoint that reaches agents.
func (r *Registry) SetPusher(p Pusher) {
	r.mu.Lock()
	r.pusher = p
	r.mu.Unlock()
}

func (r *Registry) getPusher() Pusher {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pusher
}

// Policy loads <data>/trust.json.
func (r *Registry) Policy() (trust.Policy, error) {
	p, err := trust.Load(filepath.Join(r.cfg.DataDir, TrustFile))
	if err != nil {
		return trust.Policy{}, fmt.Errorf("server trust policy (create it with `vigil-server trust set --data DIR --pub KEY.pub`): %w", err)
	}
	return p, nil
}

// ErrRejected wraps every refusal of a published bundle (a client error, not a server fault).
var ErrRejected = errors.New("bundle rejected")

// PublishOptions tune Publish.
type PublishOptions struct {
	NoSmoke bool // skip the plugin smoke test (when no plugin is installed on the server)
}

// PublishResult is what Publish did.
type PublishResult struct {
	Model   store.Model `json:"model"`
	Signers []string    `json:"signers"`
	Smoke   string      `json:"smoke"` // "ok: ..." or "skipped: ..."
}

// Publish verifies the bundle read from rd (at most the bundle size limit), smoke-loads it, stores
// it under its digest and records it in the registry (audited with actor).
func (r *Registry) Publish(ctx context.Context, rd io.Reader, actor string, opts PublishOptions) (PublishResult, error) {
	pol, err := r.Policy()
	if err != nil {
		return PublishResult{}, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	if err := os.MkdirAll(r.cfg.BundleDir, 0o750); err != nil {
		return PublishResult{}, fmt.Errorf("publish: %w", err)
	}
	tmp, err := os.CreateTemp(r.cfg.BundleDir, ".upload-*")
	if err != nil {
		return PublishResult{}, fmt.Errorf("publish: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	lim := bundle.DefaultLimits().MaxTotal
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(rd, lim+1))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return PublishResult{}, fmt.Errorf("publish: upload: %w", err)
	}
	if n > lim {
		return PublishResult{}, fmt.Errorf("%w: larger than %d bytes", ErrRejected, lim)
	}
	b, keys, err := trust.VerifyBundle(tmp.Name(), pol, r.cfg.Now())
	if err != nil {
		return PublishResult{}, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	hexd := hex.EncodeToString(h.Sum(nil))
	digest := "sha256:" + hexd
	res := PublishResult{Signers: keys}
	if opts.NoSmoke {
		res.Smoke = "skipped (--no-smoke)"
	} else {
		msg, err := r.smoke(ctx, tmp.Name(), &b.Manifest)
		if err != nil {
			return PublishResult{}, fmt.Errorf("%w: smoke test: %v", ErrRejected, err)
		}
		res.Smoke = "ok: " + msg
	}
	man, _ := json.Marshal(b.Manifest)
	signers, _ := json.Marshal(keys)
	final := filepath.Join(r.cfg.BundleDir, hexd+bundle.Extension)
	if err := os.Chmod(tmp.Name(), 0o640); err != nil {
		return PublishResult{}, fmt.Errorf("publish: %w", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return PublishResult{}, fmt.Errorf("publish: %w", err)
	}
	// The model's row is committed next: the file's name must be on disk first, or a power
	// loss could leave a published model whose bundle FETCH cannot find (and its NAME@VERSION
	// taken, so it could not be published again).
	if err := fsutil.SyncDir(r.cfg.BundleDir); err != nil {
		r.removeOrphan(ctx, final, digest)
		return PublishResult{}, fmt.Errorf("publish: %w", err)
	}
	m, err := r.cfg.DB.InsertModel(ctx, store.Model{Name: b.Manifest.Name, Version: b.Manifest.Version, Detector: b.Manifest.Detector,
		Digest: digest, Size: n, Manifest: man, Signers: signers}, actor)
	if err != nil {
		r.removeOrphan(ctx, final, digest)
		if errors.Is(err, store.ErrConflict) {
			return PublishResult{}, fmt.Errorf("%w: %s version %d is already published (versions are immutable; publish a greater version)",
				ErrRejected, b.Manifest.Name, b.Manifest.Version)
		}
		return PublishResult{}, err
	}
	res.Model = m
	r.log.Info("model published", "name", m.Name, "version", m.Version, "digest", digest, "by", actor, "smoke", res.Smoke)
	return res, nil
}

// removeOrphan removes the bundle file of a publish that was refused after the file was moved
// into the bundle directory (FETCH serves every file there by digest), unless a published model
// has that digest: the same bytes published before share the file, which must stay.
func (r *Registry) removeOrphan(ctx context.Context, path, digest string) {
	_, err := r.cfg.DB.ModelByDigest(ctx, digest)
	switch {
	case err == nil:
		return
	case !errors.Is(err, store.ErrNotFound):
		r.log.Error("publish refused: keeping its bundle file (cannot tell whether a model uses it)", "path", path, "err", err)
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.log.Error("publish refused: remove its bundle file", "path", path, "err", err)
	}
}

// RolloutRequest is a rollout to create.
type RolloutRequest struct {
	Model      string   `json:"model"` // NAME@VERSION
	Entity     string   `json:"entity,omitempty"`
	Agents     []string `json:"agents,omitempty"`
	Percent    int      `json:"percent,omitempty"`
	Shadow     bool     `json:"shadow,omitempty"`
	HaltFactor float64  `json:"halt_factor,omitempty"`
	// RollbackInstruction is a signed rollback instruction (models/rollback; base64 in JSON)
	// naming the model: the rollout then offers it as a rollback, which agents accept although
	// its version is not greater than their active one. The server verifies it against its trust
	// policy first; the agents verify it again against theirs.
	RollbackInstruction []byte `json:"rollback_instruction,omitempty"`
}

var agentRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ParseModelRef splits NAME@VERSION.
func ParseModelRef(s string) (string, uint64, error) {
	name, v, ok := strings.Cut(s, "@")
	ver, err := strconv.ParseUint(v, 10, 64)
	if !ok || name == "" || err != nil || ver == 0 {
		return "", 0, fmt.Errorf("model %q: want NAME@VERSION", s)
	}
	return name, ver, nil
}

// CreateRollout records a rollout and pushes its offer to the targeted connected agents at once.
// It returns the rollout id and the agents it reached now.
func (r *Registry) CreateRollout(ctx context.Context, req RolloutRequest, actor string) (string, []string, error) {
	name, ver, err := ParseModelRef(req.Model)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", store.ErrInvalid, err)
	}
	if req.Percent < 0 || req.Percent > 100 || len(req.Agents) > 10000 || req.HaltFactor < 0 {
		return "", nil, fmt.Errorf("rollout: percent 0..100, at most 10000 agents: %w", store.ErrInvalid)
	}
	if req.Entity != "" && !agentRE.MatchString(req.Entity) {
		return "", nil, fmt.Errorf("rollout: entity %q: %w", req.Entity, store.ErrInvalid)
	}
	for _, a := range req.Agents {
		if !agentRE.MatchString(a) {
			return "", nil, fmt.Errorf("rollout: agent id %q: %w", a, store.ErrInvalid)
		}
	}
	if req.Entity == "" && len(req.Agents) == 0 && req.Percent == 0 {
		return "", nil, fmt.Errorf("rollout: give an entity, agents or a percentage: %w", store.ErrInvalid)
	}
	if req.HaltFactor > 0 && !req.Shadow {
		return "", nil, fmt.Errorf("rollout: --halt-factor needs --shadow (only a shadow model is judged): %w", store.ErrInvalid)
	}
	m, err := r.cfg.DB.ModelByVersion(ctx, name, ver)
	if err != nil {
		return "", nil, err
	}
	if err := r.checkStored(&m); err != nil {
		return "", nil, err
	}
	if err := r.checkTargets(ctx, req); err != nil {
		return "", nil, err
	}
	if len(req.RollbackInstruction) > 0 {
		if req.Shadow {
			return "", nil, fmt.Errorf("rollout: a rollback instruction makes no sense for a shadow rollout: %w", store.ErrInvalid)
		}
		if err := r.checkRollback(req.RollbackInstruction, &m); err != nil {
			return "", nil, err
		}
	}
	var rb [6]byte
	_, _ = rand.Read(rb[:])
	id := "r-" + hex.EncodeToString(rb[:])
	if err := r.cfg.DB.CreateRollout(ctx, store.RolloutSpec{ID: id, ModelID: m.ID, Entity: req.Entity, Agents: req.Agents,
		Percent: req.Percent, Shadow: req.Shadow, HaltFactor: req.HaltFactor, RollbackInstruction: req.RollbackInstruction}, actor); err != nil {
		return "", nil, err
	}
	r.log.Info("rollout created", "id", id, "model", req.Model, "entity", req.Entity, "agents", len(req.Agents),
		"percent", req.Percent, "shadow", req.Shadow, "rollback", len(req.RollbackInstruction) > 0, "by", actor)
	reached := r.PushPending(ctx)
	return id, reached, nil
}

// checkStored verifies model m's stored bundle again before a rollout offers it, as at publish
// and as the agents will: the file FETCH serves has m's digest, its signatures meet the server's
// trust policy of now (a key removed from it since the publish no longer counts) and it has not
// expired. Refusals wrap ErrRejected.
func (r *Registry) checkStored(m *store.Model) error {
	pol, err := r.Policy()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRejected, err)
	}
	path := filepath.Join(r.cfg.BundleDir, strings.TrimPrefix(m.Digest, "sha256:")+bundle.Extension)
	if _, _, err := trust.VerifyBundle(path, pol, r.cfg.Now()); err != nil {
		// The reason goes to the API client: without the server's file system path.
		why := strings.ReplaceAll(err.Error(), path, "the stored bundle")
		return fmt.Errorf("%w: %s@%d no longer verifies: %s", ErrRejected, m.Name, m.Version, why)
	}
	d, err := bundle.Digest(path)
	if err != nil {
		return fmt.Errorf("%w: %s@%d: %v", ErrRejected, m.Name, m.Version, err)
	}
	if d != m.Digest {
		return fmt.Errorf("%w: %s@%d: the stored bundle's digest is %s, not the published %s", ErrRejected, m.Name, m.Version, d, m.Digest)
	}
	return nil
}

// checkRollback verifies a rollback instruction against the server's trust policy (threshold of
// signatures, validity window) and that it names the model m; refusals wrap ErrRejected.
func (r *Registry) checkRollback(instr []byte, m *store.Model) error {
	pol, err := r.Policy()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRejected, err)
	}
	in, err := rollback.Verify(instr, pol, r.cfg.Now())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRejected, err) // "rollback instruction: ..." or "invalid rollback instruction: ..."
	}
	var man bundle.Manifest
	if err := json.Unmarshal(m.Manifest, &man); err != nil {
		return fmt.Errorf("rollback: manifest of %s@%d: %w", m.Name, m.Version, err)
	}
	if !in.Allows(&man) {
		return fmt.Errorf("%w: the rollback instruction names %s %s@%d (model %.12s), not %s %s@%d", ErrRejected,
			in.Detector, in.Name, in.Version, in.ModelSHA256, man.Detector, man.Name, man.Version)
	}
	return nil
}

// InCanary is the stable percentage choice: the agent is in the first percent% of a hash of
// (agent id, model name), so the same agents stay in a 5% canary across versions of a model, and
// growing the percentage only adds agents (store.InCanary, which the store's check of agents'
// reports shares).
func InCanary(agentID, modelName string, percent int) bool {
	return store.InCanary(agentID, modelName, percent)
}

// Targets reports whether rollout ro targets agent a.
func Targets(ro *store.RolloutRecord, agentID, entity string) bool {
	return store.RolloutTargets(ro.Entity, ro.Agents, ro.Percent, ro.Model.Name, agentID, entity)
}

// offersFor returns the offers an agent should get now, in the order their rollouts were
// created: for each model name (and shadow or not), the newest active rollout targeting it,
// unless the agent already reported a final state for that bundle in that rollout. A new
// rollout of a bundle the agent refused or ran before is offered again (e.g. the same old
// version again, now with a signed rollback instruction).
//
// running, when not nil, holds the shadow rollouts the agent said it runs in its Hello: a shadow
// rollout whose last report is "shadow" but that the agent no longer runs (it restarted, and
// shadow models live in memory only) is offered again. With running nil (no Hello: a push to
// connected agents) "shadow" is final, as the agent's report is current.
func (r *Registry) offersFor(rollouts []store.RolloutRecord, agentID, entity string, statuses statusIndex, running map[string]bool) []*wirev1.ModelOffer {
	targeted := map[string][]*store.RolloutRecord{} // oldest first
	for i := range rollouts {
		ro := &rollouts[i]
		if !Targets(ro, agentID, entity) {
			continue
		}
		key := ro.Model.Name + "|" + strconv.FormatBool(ro.Shadow)
		targeted[key] = append(targeted[key], ro)
	}
	// resumable: a shadow rollout the agent ran (last report "shadow") and, at this Hello, no
	// longer runs; not when the bundle became the agent's active model (a promoted shadow model).
	resumable := func(ro *store.RolloutRecord, st store.AgentModelStatus) bool {
		return ro.Shadow && st.State == "shadow" && running != nil && !running[ro.ID] && !statuses.active(ro.Model.Digest)
	}
	var out []*wirev1.ModelOffer
	for _, list := range targeted {
		ro := list[len(list)-1] // the newest one
		if st, ok := statuses.of(ro); ok && store.IsTerminalModelState(st.State) {
			if !resumable(ro, st) {
				if !ro.Shadow || (st.State != "rejected" && st.State != "rolled_back") {
					continue
				}
				// The agent refused the newest shadow rollout and kept running the
				// shadow model it had: resume that one (the newest it reported running).
				ro = olderShadow(list[:len(list)-1], statuses, resumable)
				if ro == nil {
					continue
				}
			}
			r.log.Info("shadow rollout offered again: the agent no longer runs it", "agent", agentID, "rollout", ro.ID)
		}
		out = append(out, &wirev1.ModelOffer{RolloutId: ro.ID, Size: uint64(ro.Size), Shadow: ro.Shadow,
			Model:    &wirev1.ModelRef{Name: ro.Model.Name, Version: ro.Model.Version, Digest: ro.Model.Digest, Detector: ro.Detector},
			Rollback: len(ro.RollbackInstruction) > 0, RollbackInstruction: ro.RollbackInstruction})
	}
	// In the order the rollouts were created (rollouts is oldest first): the agent processes its
	// offers in the order received, so when two rollouts of different model names feed one
	// detector, the newest one's model is the one it ends with (rollout ids are random).
	pos := make(map[string]int, len(rollouts))
	for i := range rollouts {
		pos[rollouts[i].ID] = i
	}
	slices.SortFunc(out, func(a, b *wirev1.ModelOffer) int { return cmp.Compare(pos[a.RolloutId], pos[b.RolloutId]) })
	return out
}

// olderShadow returns the newest of older (oldest first) that the agent last reported running
// in shadow mode, if it is resumable, else nil.
func olderShadow(older []*store.RolloutRecord, statuses statusIndex, resumable func(*store.RolloutRecord, store.AgentModelStatus) bool) *store.RolloutRecord {
	for i := len(older) - 1; i >= 0; i-- {
		st, ok := statuses.of(older[i])
		if !ok || st.State != "shadow" {
			continue
		}
		if resumable(older[i], st) {
			return older[i]
		}
		return nil
	}
	return nil
}

// OnHello pushes the pending offers of an agent that just connected (endpoint hook).
// shadowRollouts are the rollouts the agent runs in shadow mode (Hello.shadow_rollouts).
func (r *Registry) OnHello(agentID, entity string, shadowRollouts []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := r.getPusher()
	if p == nil {
		return
	}
	r.decideMu.RLock()
	f, untrusted := r.helloMsgs(ctx, p, agentID, entity, shadowRollouts)
	r.decideMu.RUnlock()
	// Rollouts that no longer verify were not offered: halt them (their withdrawals are queued
	// behind this agent's messages), then offer what is now the newest rollout of their models.
	if len(untrusted) > 0 && r.haltUntrusted(ctx, untrusted) {
		r.PushPending(ctx)
	}
	if f != nil {
		f.wait(ctx)
	}
}

// helloMsgs queues the withdrawals and offers of an agent that just connected; the caller
// holds decideMu shared. Offers are checked against the server trust policy first: it returns
// the rollouts that failed the check (not offered), which the caller halts.
func (r *Registry) helloMsgs(ctx context.Context, p Pusher, agentID, entity string, shadowRollouts []string) (*fanOut, []untrustedRollout) {
	rollouts, err := r.cfg.DB.RolloutsInStates(ctx, "active", "halted")
	if err != nil {
		r.log.Error("rollouts for a connecting agent", "agent", agentID, "err", err)
		return nil, nil
	}
	if len(rollouts) == 0 {
		return nil, nil
	}
	var active, halted []store.RolloutRecord
	for _, ro := range rollouts {
		if ro.State == "active" {
			active = append(active, ro)
		} else {
			halted = append(halted, ro)
		}
	}
	st, err := r.cfg.DB.ModelStatuses(ctx, agentID, "")
	if err != nil {
		r.log.Error("model statuses", "err", err)
		return nil, nil
	}
	ix := indexStatuses(st)
	// Withdrawals first: a halted shadow model stops before anything new starts (the agent's
	// queue keeps the order).
	running := make(map[string]bool, len(shadowRollouts))
	for _, id := range shadowRollouts {
		running[id] = true
	}
	check := r.newOfferCheck(active)
	msgs := withdrawalsFor(halted, agentID, entity, ix, running)
	msgs = append(msgs, offerMsgs(check.filter(r.offersFor(active, agentID, entity, ix, running)))...)
	if r.beforeQueue != nil {
		r.beforeQueue()
	}
	return r.enqueue(p, map[string][]*wirev1.ServerControl{agentID: msgs}, r.logPush), check.untrusted
}

// statusIndex holds one agent's model reports by bundle digest and rollout id.
type statusIndex map[statusKey]store.AgentModelStatus

type statusKey struct{ digest, rollout string }

func indexStatuses(st []store.AgentModelStatus) statusIndex {
	ix := make(statusIndex, len(st))
	ix.add(st...)
	return ix
}

func (ix statusIndex) add(st ...store.AgentModelStatus) {
	for _, s := range st {
		ix[statusKey{s.Digest, s.RolloutID}] = s
	}
}

// of returns the agent's last report about rollout ro's bundle under ro: the report naming ro,
// else one naming no rollout (kept from before reports were stored per rollout, or sent by an
// agent that named none), which stands for every rollout of that bundle. A report under another
// rollout of the same bundle (e.g. the shadow rollout an ordinary one promoted) never counts.
func (ix statusIndex) of(ro *store.RolloutRecord) (store.AgentModelStatus, bool) {
	if s, ok := ix[statusKey{ro.Model.Digest, ro.ID}]; ok {
		return s, true
	}
	s, ok := ix[statusKey{ro.Model.Digest, ""}]
	return s, ok
}

// active reports whether the agent reported the bundle active under any rollout.
func (ix statusIndex) active(digest string) bool {
	for k, s := range ix {
		if k.digest == digest && s.State == "active" {
			return true
		}
	}
	return false
}

// maxPushRounds bounds PushPending's passes: one more after each pass whose offers included
// rollouts that it then halted (trustcheck.go), as an older rollout of their models may be the
// one to offer now.
const maxPushRounds = 4

// PushPending offers every connected agent what it lacks; it returns the agents reached.
// Offers whose rollouts no longer verify against the server trust policy are not sent, and those
// rollouts are halted.
func (r *Registry) PushPending(ctx context.Context) []string {
	p := r.getPusher()
	if p == nil {
		return nil
	}
	var fs []*fanOut
	for range maxPushRounds {
		r.decideMu.RLock()
		f, untrusted := r.pendingMsgs(ctx, p)
		r.decideMu.RUnlock()
		if f != nil {
			fs = append(fs, f)
		}
		if len(untrusted) == 0 || !r.haltUntrusted(ctx, untrusted) {
			break
		}
	}
	reachedSet := map[string]bool{}
	for _, f := range fs {
		for id := range f.wait(ctx) {
			reachedSet[id] = true
		}
	}
	var reached []string
	for id := range reachedSet {
		reached = append(reached, id)
	}
	slices.Sort(reached)
	return reached
}

// pendingMsgs queues the offers connected agents lack; the caller holds decideMu shared. It
// returns the rollouts whose offers failed the trust check (not offered).
func (r *Registry) pendingMsgs(ctx context.Context, p Pusher) (*fanOut, []untrustedRollout) {
	rollouts, err := r.cfg.DB.ActiveRollouts(ctx)
	if err != nil {
		r.log.Error("active rollouts", "err", err)
		return nil, nil
	}
	if len(rollouts) == 0 {
		return nil, nil
	}
	agents, err := r.cfg.DB.ListAgents(ctx, store.AgentFilter{})
	if err != nil {
		r.log.Error("list agents", "err", err)
		return nil, nil
	}
	entity := map[string]string{}
	for _, a := range agents {
		entity[a.ID] = a.Entity
	}
	all, err := r.cfg.DB.ModelStatuses(ctx, "", "")
	if err != nil {
		r.log.Error("model statuses", "err", err)
		return nil, nil
	}
	byAgent := map[string]statusIndex{}
	for _, s := range all {
		if byAgent[s.AgentID] == nil {
			byAgent[s.AgentID] = statusIndex{}
		}
		byAgent[s.AgentID].add(s)
	}
	check := r.newOfferCheck(rollouts)
	msgs := map[string][]*wirev1.ServerControl{}
	for _, id := range p.Connected() {
		if offers := check.filter(r.offersFor(rollouts, id, entity[id], byAgent[id], nil)); len(offers) > 0 {
			msgs[id] = offerMsgs(offers)
		}
	}
	return r.enqueue(p, msgs, r.logPush), check.untrusted
}
