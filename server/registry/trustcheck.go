package registry

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// The server's trust policy at every offer (docs/rollouts.md). `rollout create` verifies the
// stored bundle (and a rollback instruction) against <data>/trust.json, but a rollout lives on:
// its offer is repeated at Hellos, reaches agents that join its targets later, and waits in the
// agents' push queues. So every offer is checked again against the policy of now, twice: when a
// pass decides what to offer (a Hello, a push to the connected agents), and right before its push
// is written (an offer queued before trust.json changed). The check:
//
//   - trusted: the stored bundle verifies (signature threshold, expiry, its digest the published
//     one) and so does the rollout's rollback instruction, if any, which still names the bundle;
//   - untrusted: the policy loaded and the bundle or the instruction fails it (a key removed or
//     expired, the bundle or the instruction expired, the file's contents changed): the offer
//     is not sent and the rollout is halted automatically like a shadow rollout by the halt
//     rule (state "halted", reason, audit "rollout.halted" by "system", withdrawals to the
//     agents that have not settled it);
//   - unchecked: the check could not be done (trust.json missing, unreadable or invalid, the
//     bundle file unreadable): the offer is not sent (fail closed), the rollout is not halted
//     (a halt cannot be undone, and a half-edited trust.json says nothing about the bundle).
//     Withheld offers go out again at the agents' next Hello, and to the connected agents at
//     the first pass that reads the policy again.
//
// Results are cached by (content hash of trust.json, bundle digest, bundle file size and mtime,
// hash of the rollback instruction), so a pass costs one read of trust.json (a few kilobytes)
// and one stat per rollout it offers, not a bundle verification; a trusted result is re-checked
// once time may have changed it (the bundle's, the instruction's or a key's expiry) and at least
// every maxCheckAge. Concurrent checks of one key (a reconnect storm) share one verification.

// maxCheckAge bounds how long a trusted result is reused before the bundle is read again.
const maxCheckAge = 10 * time.Minute

// backgroundTimeout bounds the work started in the background by a check (a halt, a push after
// the policy became usable again); the pushes' own wait is bounded by PushWait.
const backgroundTimeout = time.Minute

// maxCheckResults bounds the cached results (all are dropped beyond it).
const maxCheckResults = 1024

// ErrOfferWithheld wraps the error of an offer whose push was dropped at send time because its
// rollout no longer verifies against the server trust policy (or could not be checked).
var ErrOfferWithheld = errors.New("offer withheld")

// offerVerdict is the result of checking an offer against the trust policy.
type offerVerdict int

const (
	offerTrusted   offerVerdict = iota
	offerUntrusted              // fails the policy of now: withhold, halt the rollout
	offerUnchecked              // could not check: withhold, no halt
)

func (v offerVerdict) String() string {
	switch v {
	case offerTrusted:
		return "trusted"
	case offerUntrusted:
		return "untrusted"
	default:
		return "unchecked"
	}
}

// policySnap is trust.json as one pass sees it: its content hash and the policy, or why it
// cannot be used.
type policySnap struct {
	sum [32]byte
	pol trust.Policy
	err error
}

type checkKey struct {
	pol    [32]byte
	digest string
	size   int64
	mtime  int64
	instr  [32]byte
}

type checkResult struct {
	verdict offerVerdict
	err     error
	until   time.Time // a trusted result is re-checked from then on
}

// trustChecker caches the policy and the checks (Registry.trust).
type trustChecker struct {
	mu       sync.Mutex
	havePol  bool
	polSum   [32]byte
	pol      trust.Policy
	polErr   error
	results  map[checkKey]checkResult
	inflight map[checkKey]*inflightCheck
	// logged is what was last logged as unchecked, by subject ("" for the policy, else a
	// rollout id), so that each problem is logged once.
	logged map[string]string
	// withheld: offers were withheld for want of a usable policy; the first pass that has one
	// again pushes to the connected agents.
	withheld bool
	// verifications counts bundle verifications (tests, the benchmark).
	verifications int
	// waiting counts the checks waiting for another's verification of their key (tests), and
	// beforeVerify, when set, runs before a verification (tests hold one there).
	waiting      int
	beforeVerify func()
}

// inflightCheck is a verification in progress: the checks of its key wait for done and take
// res, whatever the verdict (an unchecked result is not cached, but it is shared).
type inflightCheck struct {
	done chan struct{}
	res  checkResult
}

// registryMetrics are the registry's Prometheus metrics (namespace vigil_server).
type registryMetrics struct {
	untrustedHalts prometheus.Counter
	withheld       *prometheus.CounterVec // by reason: untrusted | unchecked
}

func newRegistryMetrics() *registryMetrics {
	const ns, sub = "vigil", "server"
	return &registryMetrics{
		untrustedHalts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "rollouts_halted_untrusted_total",
			Help: "Rollouts halted because their bundle or rollback instruction no longer verifies against the server trust policy."}),
		withheld: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "model_offers_withheld_total",
			Help: "Model offers not sent because their rollout no longer verifies against the server trust policy (untrusted) " +
				"or could not be checked (unchecked: trust.json or the bundle unreadable)."}, []string{"reason"}),
	}
}

func (m *registryMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.untrustedHalts, m.withheld} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register registry metrics: %w", err)
		}
	}
	return nil
}

// readTrustFile reads <data>/trust.json, a regular file (a link to one is followed) of at most
// trust.MaxPolicySize bytes (fsutil.ReadRegular): a named pipe there would otherwise hold the
// pass, and the decisions of every Hello, for good.
func (r *Registry) readTrustFile() ([]byte, error) {
	return fsutil.ReadRegular(filepath.Join(r.cfg.DataDir, TrustFile), trust.MaxPolicySize)
}

// policy returns trust.json as it is now, parsed at most once per content. recovered reports
// that offers were withheld for want of a usable policy and that it is usable again.
func (r *Registry) policy() (snap policySnap, recovered bool) {
	c := &r.trust
	snap = r.loadPolicy()
	c.mu.Lock()
	defer c.mu.Unlock()
	if snap.err != nil {
		c.withheld = true
		if c.logged[""] != snap.err.Error() {
			c.logged[""] = snap.err.Error()
			r.log.Error("model offers withheld: the server trust policy cannot be used", "err", snap.err)
		}
		return snap, false
	}
	if _, ok := c.logged[""]; ok {
		delete(c.logged, "")
		r.log.Info("server trust policy usable again: model offers resume")
	}
	recovered, c.withheld = c.withheld, false
	return snap, recovered
}

func (r *Registry) loadPolicy() policySnap {
	c := &r.trust
	for range 3 {
		data, err := r.readTrustFile()
		if err != nil {
			return policySnap{err: fmt.Errorf("server trust policy: %w", err)}
		}
		sum := sha256.Sum256(data)
		c.mu.Lock()
		if c.havePol && c.polSum == sum {
			snap := policySnap{sum: sum, pol: c.pol, err: c.polErr}
			c.mu.Unlock()
			return snap
		}
		c.mu.Unlock()
		// trust.Load reads the file again: keep what it parsed only if the file still has the
		// content hashed above (else it changed meanwhile: read it again).
		pol, perr := r.Policy()
		again, err := r.readTrustFile()
		if err != nil {
			return policySnap{err: fmt.Errorf("server trust policy: %w", err)}
		}
		if sha256.Sum256(again) != sum {
			continue
		}
		c.mu.Lock()
		c.havePol, c.polSum, c.pol, c.polErr = true, sum, pol, perr
		for k := range c.results { // results under another policy are of no use any more
			if k.pol != sum {
				delete(c.results, k)
			}
		}
		c.mu.Unlock()
		return policySnap{sum: sum, pol: pol, err: perr}
	}
	return policySnap{err: errors.New("server trust policy: trust.json keeps changing while it is read")}
}

// checkOffer checks the offer of model (name, version, digest) with rollback instruction instr
// (nil: none) against snap.
func (r *Registry) checkOffer(snap policySnap, name string, version uint64, digest string, instr []byte) checkResult {
	if snap.err != nil {
		return checkResult{verdict: offerUnchecked, err: snap.err}
	}
	c := &r.trust
	path := r.bundlePath(digest)
	st, err := os.Stat(path)
	if err != nil {
		return checkResult{verdict: offerUnchecked, err: fmt.Errorf("%s@%d: the stored bundle: %w", name, version, err)}
	}
	key := checkKey{pol: snap.sum, digest: digest, size: st.Size(), mtime: st.ModTime().UnixNano()}
	if len(instr) > 0 {
		key.instr = sha256.Sum256(instr)
	}
	now := r.cfg.Now()
	c.mu.Lock()
	if res, ok := c.results[key]; ok && (res.verdict != offerTrusted || now.Before(res.until)) {
		c.mu.Unlock()
		return res
	}
	if f, ok := c.inflight[key]; ok {
		c.waiting++
		c.mu.Unlock()
		<-f.done
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
		return f.res
	}
	f := &inflightCheck{done: make(chan struct{})}
	c.inflight[key] = f
	c.verifications++
	hook := c.beforeVerify
	c.mu.Unlock()
	if hook != nil {
		hook()
	}
	res := r.verifyOffer(snap.pol, path, name, version, digest, instr, now)
	c.mu.Lock()
	if res.verdict != offerUnchecked {
		if len(c.results) >= maxCheckResults {
			clear(c.results)
		}
		c.results[key] = res
	}
	f.res = res
	delete(c.inflight, key)
	close(f.done)
	c.mu.Unlock()
	return res
}

func (r *Registry) bundlePath(digest string) string {
	return filepath.Join(r.cfg.BundleDir, strings.TrimPrefix(digest, "sha256:")+bundle.Extension)
}

// verifyOffer is the full check of an offer (checkOffer caches it).
func (r *Registry) verifyOffer(pol trust.Policy, path, name string, version uint64, digest string, instr []byte, now time.Time) checkResult {
	b, _, err := trust.VerifyBundle(path, pol, now)
	if err != nil {
		// The reason is shown to API clients (rollout status): without the server's paths.
		why := strings.ReplaceAll(strings.ReplaceAll(err.Error(), "verify bundle "+path+": ", ""), path, "the stored bundle")
		return checkResult{verdict: verdictOf(err), err: fmt.Errorf("the bundle of %s@%d no longer verifies against the server trust policy: %s", name, version, why)}
	}
	d, err := bundle.Digest(path)
	if err != nil {
		return checkResult{verdict: offerUnchecked, err: fmt.Errorf("%s@%d: the stored bundle: %w", name, version, err)}
	}
	if d != digest {
		return checkResult{verdict: offerUntrusted, err: fmt.Errorf("the stored bundle of %s@%d changed: its digest is %s, not the published %s", name, version, d, digest)}
	}
	until := b.Manifest.Expires
	if len(instr) > 0 {
		in, err := rollback.Verify(instr, pol, now)
		if err != nil {
			return checkResult{verdict: verdictOf(err), err: fmt.Errorf("the rollback instruction of %s@%d no longer verifies against the server trust policy: %w", name, version, err)}
		}
		if !in.Allows(&b.Manifest) {
			return checkResult{verdict: offerUntrusted, err: fmt.Errorf("the rollback instruction of %s@%d names %s@%d (model %.12s), not this bundle", name, version, in.Name, in.Version, in.ModelSHA256)}
		}
		until = earlier(until, in.Expires)
	}
	for _, k := range pol.Keys { // a key that expires changes which signatures count
		if k.Expires != nil && k.Expires.After(now) {
			until = earlier(until, *k.Expires)
		}
	}
	return checkResult{verdict: offerTrusted, until: earlier(until, now.Add(maxCheckAge))}
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// verdictOf tells a failed verification that is a verdict on the bundle or the instruction
// (untrusted) from one that is not (unchecked: an I/O error, an instruction "issued in the
// future" after the server's clock stepped back).
func verdictOf(err error) offerVerdict {
	switch {
	case errors.Is(err, trust.ErrThreshold), errors.Is(err, trust.ErrExpired), errors.Is(err, trust.ErrPayloadType),
		errors.Is(err, bundle.ErrInvalid):
		return offerUntrusted
	}
	return offerUnchecked
}

// untrustedRollout is a rollout that failed the check.
type untrustedRollout struct {
	ro  store.RolloutRecord
	err error
}

// offerCheck checks the offers of one pass (OnHello, PushPending): once per rollout, the
// policy read once, and only when there is an offer to check.
type offerCheck struct {
	r         *Registry
	byID      map[string]*store.RolloutRecord
	snap      *policySnap
	done      map[string]offerVerdict
	untrusted []untrustedRollout
}

func (r *Registry) newOfferCheck(rollouts []store.RolloutRecord) *offerCheck {
	c := &offerCheck{r: r, byID: make(map[string]*store.RolloutRecord, len(rollouts)), done: map[string]offerVerdict{}}
	for i := range rollouts {
		c.byID[rollouts[i].ID] = &rollouts[i]
	}
	return c
}

// filter returns the offers whose rollouts pass the check.
func (c *offerCheck) filter(offers []*wirev1.ModelOffer) []*wirev1.ModelOffer {
	out := offers[:0]
	for _, o := range offers {
		if v := c.verdict(o.RolloutId); v != offerTrusted {
			c.r.metrics.withheld.WithLabelValues(v.String()).Inc()
			continue
		}
		out = append(out, o)
	}
	return out
}

func (c *offerCheck) verdict(id string) offerVerdict {
	if v, ok := c.done[id]; ok {
		return v
	}
	ro := c.byID[id]
	if ro == nil { // cannot happen: offers come from the pass's rollouts
		return offerUnchecked
	}
	if c.snap == nil {
		snap, recovered := c.r.policy()
		c.snap = &snap
		if recovered {
			c.r.bg.Go(c.r.pushAfterRecovery)
		}
	}
	res := c.r.checkOffer(*c.snap, ro.Model.Name, ro.Model.Version, ro.Model.Digest, ro.RollbackInstruction)
	c.done[id] = res.verdict
	switch res.verdict {
	case offerUntrusted:
		c.untrusted = append(c.untrusted, untrustedRollout{ro: *ro, err: res.err})
	case offerUnchecked:
		if c.snap.err == nil {
			c.r.logUnchecked(ro.ID, res.err)
		}
	default:
		c.r.clearUnchecked(ro.ID)
	}
	return res.verdict
}

// logUnchecked logs, once per problem, a rollout whose offers are withheld because its bundle
// could not be checked (a policy that cannot be used is logged by policy).
func (r *Registry) logUnchecked(id string, err error) {
	c := &r.trust
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.logged[id] == err.Error() {
		return
	}
	c.logged[id] = err.Error()
	r.log.Error("model offers of a rollout withheld: cannot check it against the server trust policy", "rollout", id, "err", err)
}

func (r *Registry) clearUnchecked(id string) {
	c := &r.trust
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.logged, id)
}

// pushAfterRecovery pushes to the connected agents the offers withheld while the policy could
// not be used.
func (r *Registry) pushAfterRecovery() {
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	r.PushPending(ctx)
}

// haltUntrusted halts the rollouts that failed the check (as the shadow halt rule halts: state
// "halted", reason, audit "rollout.halted" by HaltActor, withdrawals queued for the connected
// agents that have not settled it). It reports whether it halted any, after which an older
// rollout of the same model may be the one to offer.
func (r *Registry) haltUntrusted(ctx context.Context, list []untrustedRollout) bool {
	haltedAny := false
	for _, u := range list {
		ro := u.ro
		reason := "halted automatically: " + u.err.Error()
		var final json.RawMessage
		if ro.Shadow { // keep the shadow reports at the halt, as the other halts do
			if reps, err := r.shadowReports(ctx, &ro); err == nil {
				final, _ = json.Marshal(reps)
			}
		}
		r.decideMu.Lock()
		halted, err := r.cfg.DB.HaltRollout(ctx, ro.ID, HaltActor, reason, final)
		if err != nil || !halted {
			r.decideMu.Unlock()
			if err != nil {
				r.log.Error("halt a rollout that no longer verifies (its offers stay withheld)", "rollout", ro.ID, "err", err)
			}
			continue
		}
		ro.State, ro.StateReason, ro.StateChangedBy, ro.ShadowFinal = "halted", reason, HaltActor, final
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), backgroundTimeout)
		f, targeted := r.queueWithdrawals(wctx, ro)
		r.decideMu.Unlock()
		haltedAny = true
		r.metrics.untrustedHalts.Inc()
		r.log.Warn("rollout halted: it no longer verifies against the server trust policy", "rollout", ro.ID,
			"model", ro.Model.Name, "version", ro.Model.Version, "shadow", ro.Shadow, "rollback", len(ro.RollbackInstruction) > 0,
			"reason", u.err.Error(), "withdrawals", targeted)
		id := ro.ID
		r.bg.Go(func() {
			defer cancel()
			if f != nil {
				r.log.Info("rollout withdrawn from connected agents", "rollout", id, "agents", len(f.wait(wctx)), "targeted", targeted)
			}
		})
	}
	return haltedAny
}

// guardOffer is the push queue's last check of an offer before it is written: an offer queued
// before trust.json changed is dropped (and its rollout halted) rather than sent.
func (r *Registry) guardOffer(agentID string, m *wirev1.ServerControl) error {
	o := m.GetModelOffer()
	if o == nil {
		return nil
	}
	snap, recovered := r.policy()
	if recovered {
		r.bg.Go(r.pushAfterRecovery)
	}
	res := r.checkOffer(snap, o.GetModel().GetName(), o.GetModel().GetVersion(), o.GetModel().GetDigest(), o.GetRollbackInstruction())
	if res.verdict == offerTrusted {
		return nil
	}
	r.metrics.withheld.WithLabelValues(res.verdict.String()).Inc()
	if res.verdict == offerUntrusted {
		id := o.RolloutId
		r.bg.Go(func() { r.haltUntrustedID(id, res.err) })
	} else if snap.err == nil {
		r.logUnchecked(o.RolloutId, res.err)
	}
	return fmt.Errorf("push offer of rollout %s to %s: %w: %w", o.RolloutId, agentID, ErrOfferWithheld, res.err)
}

// haltUntrustedID halts rollout id, whose queued offer failed the check, then offers what is
// now the newest rollout of its model.
func (r *Registry) haltUntrustedID(id string, why error) {
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	ro, err := r.cfg.DB.RolloutByID(ctx, id)
	if err != nil {
		r.log.Error("halt a rollout that no longer verifies", "rollout", id, "err", err)
		return
	}
	if ro.State != "active" {
		return
	}
	if r.haltUntrusted(ctx, []untrustedRollout{{ro: ro, err: why}}) {
		r.PushPending(ctx)
	}
}
