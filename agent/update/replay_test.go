package update

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
)

const day = 24 * time.Hour

// replayEnv is an agent whose netflow plugin runs one nethost model for nethost/v1 and
// nethost/v2, with v3 then v4 of the nethost model activated on Sunday (e.now).
type replayEnv struct {
	*env
	u      *Updater
	sunday time.Time
	v3, v4 string
}

func newReplayEnv(t *testing.T) *replayEnv {
	t.Helper()
	e := newEnv(t)
	e.loader.info.FeatureSets = []string{"netflow/v1", "nethost/v1", "nethost/v2"}
	// Whole seconds: instructions carry their times to the second (rollback.For).
	e.now = e.now.UTC().Truncate(time.Second).Add(-4 * day)
	r := &replayEnv{env: e, u: e.updater(nil), sunday: e.now}
	r.v3 = e.bundle("nethost", 3, featureSet("nethost/v1"), "model-3")
	r.v4 = e.bundle("nethost", 4, featureSet("nethost/v1"), "model-4")
	install(t, r.u, r.v3)
	install(t, r.u, r.v4)
	return r
}

func featureSet(fs string) func(*bundle.Manifest) {
	return func(m *bundle.Manifest) { m.FeatureSet = fs }
}

// instruct signs a rollback instruction to the bundle at path, issued at issued (the CERT's
// clock), valid for ttl.
func (r *replayEnv) instruct(path string, issued time.Time, ttl time.Duration) []byte {
	r.t.Helper()
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		r.t.Fatal(err)
	}
	instr, err := rollback.Sign(rollback.For(&b.Manifest, issued, ttl, "noisy"), r.a)
	if err != nil {
		r.t.Fatal(err)
	}
	return instr
}

// at sets the agent's clock to the Sunday of the scenario plus d.
func (r *replayEnv) at(d time.Duration) time.Time {
	r.now = r.sunday.Add(d)
	return r.now
}

// rollBack installs path with the instruction, by a fresh updater (another process, such as
// `vigil-agent update --bundle --rollback`): what it checks is in the state directory.
func (r *replayEnv) rollBack(path string, instr []byte) (Result, error) {
	return r.updater(nil).Install(context.Background(), Request{Path: path, Rollback: instr})
}

// mustRollBack is rollBack, which must activate version want.
func (r *replayEnv) mustRollBack(path string, instr []byte, want uint64) {
	r.t.Helper()
	res, err := r.rollBack(path, instr)
	if err != nil || res.State != StateActive {
		r.t.Fatalf("signed rollback to %s: %+v %v", filepath.Base(path), res, err)
	}
	r.wantActive(want)
}

// wantActive checks that the one active nethost model is version want, and that the plugin runs it.
func (r *replayEnv) wantActive(want uint64) {
	r.t.Helper()
	act, err := ActiveModels(r.state)
	if err != nil {
		r.t.Fatal(err)
	}
	var got []uint64
	var path string
	for _, a := range act {
		if strings.HasPrefix(a.FeatureSet, "nethost/") {
			got, path = append(got, a.Manifest.Version), a.Path
		}
	}
	if len(got) != 1 || got[0] != want {
		r.t.Fatalf("active nethost models %v, want version %d", got, want)
	}
	if l := r.loader.loaded(); l != path {
		r.t.Fatalf("the plugin runs %s, want the active %s", l, path)
	}
}

// wantReplayRefused checks that err refuses a rollback instruction as stale, naming the times.
func (r *replayEnv) wantReplayRefused(err error, times ...time.Time) {
	r.t.Helper()
	var rej *Rejection
	if !errors.As(err, &rej) || rej.State != StateRejected || !errors.Is(err, ErrStaleRollback) {
		r.t.Fatalf("err = %v, want a rejection of a stale rollback instruction", err)
	}
	if !strings.Contains(rej.Reason, "ask the release engineers to issue a new rollback instruction") {
		r.t.Fatalf("reason %q does not tell the operator what to do", rej.Reason)
	}
	for _, tm := range times {
		if s := tm.UTC().Format(time.RFC3339); !strings.Contains(rej.Reason, s) {
			r.t.Fatalf("reason %q does not name %s", rej.Reason, s)
		}
	}
}

// replayFile is the persisted replay state of the nethost models.
func (r *replayEnv) replayFile() string {
	return filepath.Join(r.u.detectorDir("netflow"), replayPrefix+"nethost")
}

// TestRollbackReplayRefused: Monday the CERT rolls nethost back from v4 to v3 with instruction A
// (valid 7 days); Tuesday it rolls out v5; Wednesday A is replayed (a compromised mirror, an
// air-gapped `update --bundle v3.vgb --rollback A.json`). The agent went back to v3 until session
// 27: A was validly signed and not expired. It is refused now (A was issued before v5 was
// activated), and v5 stays, also when v5 is of another version of the feature set (the plugin runs
// one nethost model).
func TestRollbackReplayRefused(t *testing.T) {
	for _, v5Set := range []string{"nethost/v1", "nethost/v2"} {
		t.Run("v5 of "+v5Set, func(t *testing.T) {
			r := newReplayEnv(t)
			monday := r.at(day)
			a := r.instruct(r.v3, monday, 7*day)
			r.mustRollBack(r.v3, a, 3)

			tuesday := r.at(2 * day)
			install(t, r.u, r.bundle("nethost", 5, featureSet(v5Set), "model-5"))
			r.wantActive(5)
			loads := len(r.loader.loads)

			r.at(3 * day)
			_, err := r.rollBack(r.v3, a)
			r.wantReplayRefused(err, monday, tuesday)
			if !strings.Contains(err.Error(), "predates") {
				t.Fatalf("err = %v, want it to say the instruction predates the activation", err)
			}
			r.wantActive(5)
			if len(r.loader.loads) != loads {
				t.Fatalf("the plugin loaded %v for a refused rollback", r.loader.loads[loads:])
			}
		})
	}
}

// TestFreshRollbackInstructionAccepted: after v5's activation, an instruction issued later rolls
// back to v3 (the same bundle whose old instruction is refused).
func TestFreshRollbackInstructionAccepted(t *testing.T) {
	r := newReplayEnv(t)
	a := r.instruct(r.v3, r.at(day), 7*day)
	r.mustRollBack(r.v3, a, 3)
	r.at(2 * day)
	install(t, r.u, r.bundle("nethost", 5, featureSet("nethost/v1"), "model-5"))

	wednesday := r.at(3 * day)
	if _, err := r.rollBack(r.v3, a); err == nil {
		t.Fatal("instruction A replayed after v5")
	}
	r.mustRollBack(r.v3, r.instruct(r.v3, wednesday, day), 3)
}

// TestSameRollbackInstructionTwice: applying an instruction again while the model it names is
// still active changes nothing (the bundle is already active: Result.Already, nothing reloaded,
// nothing recorded), as the server repeats pending offers. Once that model is no longer active
// (here: its bundle lost), the same instruction is refused like any replay: it is not newer than
// the last one applied.
func TestSameRollbackInstructionTwice(t *testing.T) {
	r := newReplayEnv(t)
	monday := r.at(day)
	a := r.instruct(r.v3, monday, 7*day)
	r.mustRollBack(r.v3, a, 3)
	state, err := os.ReadFile(r.replayFile())
	if err != nil {
		t.Fatal(err)
	}
	loads := len(r.loader.loads)

	r.at(day + time.Hour)
	res, err := r.rollBack(r.v3, a)
	if err != nil || res.State != StateActive || !res.Already {
		t.Fatalf("the same instruction again: %+v %v, want a no-op", res, err)
	}
	if len(r.loader.loads) != loads {
		t.Fatalf("the plugin reloaded %v", r.loader.loads[loads:])
	}
	if again, _ := os.ReadFile(r.replayFile()); !bytes.Equal(again, state) {
		t.Fatalf("replay state %q changed to %q by a no-op", state, again)
	}

	// v3's staged bundle is lost; Recover removes its pointer (no previous one after a downgrade).
	act, _ := r.u.Active("netflow", "nethost/v1")
	if err := os.Remove(act.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := r.updater(nil).Recover(); err != nil {
		t.Fatal(err)
	}
	_, err = r.rollBack(r.v3, a)
	r.wantReplayRefused(err, monday)
	if !strings.Contains(err.Error(), "not newer than") {
		t.Fatalf("err = %v, want it to say the instruction is not newer than the last one applied", err)
	}
}

// TestOlderRollbackInstructionRefused: once an instruction was applied, one issued before it (or
// in the same second) is refused, although both were issued after the running model's activation
// and are still valid.
func TestOlderRollbackInstructionRefused(t *testing.T) {
	tests := []struct {
		name  string
		after time.Duration // issue time of the second instruction, relative to the first
	}{
		{"issued an hour before", -time.Hour},
		{"issued in the same second", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReplayEnv(t)
			v2 := r.bundle("nethost", 2, featureSet("nethost/v1"), "model-2")
			b := r.instruct(v2, r.at(day+2*time.Hour), 7*day)
			older := r.instruct(r.v3, r.sunday.Add(day+2*time.Hour+tt.after), 7*day)
			r.mustRollBack(v2, b, 2)

			r.at(day + 3*time.Hour)
			_, err := r.rollBack(r.v3, older)
			r.wantReplayRefused(err, r.sunday.Add(day+2*time.Hour+tt.after), r.sunday.Add(day+2*time.Hour))
			r.wantActive(2)
		})
	}
}

// TestRollbackWithStateFromOldCode: state written before session 27 has no replay state (no
// replay file, or one without the fields): it loads, and sets no constraint, so an instruction is
// accepted whenever it was issued. Applying it records it: an older one is refused from then on.
func TestRollbackWithStateFromOldCode(t *testing.T) {
	tests := []struct {
		name string
		old  func(r *replayEnv)
	}{
		{"no replay file", func(r *replayEnv) {
			if err := os.Remove(r.replayFile()); err != nil {
				r.t.Fatal(err)
			}
		}},
		{"replay file without the fields", func(r *replayEnv) { writeFile(r.t, r.replayFile(), []byte("{}\n")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReplayEnv(t)
			tt.old(r)
			r.at(day)
			if _, err := r.updater(nil).Recover(); err != nil {
				t.Fatal(err)
			}
			// Issued Saturday, before v4 was activated: no constraint is known.
			r.mustRollBack(r.v3, r.instruct(r.v3, r.sunday.Add(-day), 7*day), 3)

			v2 := r.bundle("nethost", 2, featureSet("nethost/v1"), "model-2")
			_, err := r.rollBack(v2, r.instruct(v2, r.sunday.Add(-2*day), 7*day))
			r.wantReplayRefused(err, r.sunday.Add(-2*day), r.sunday.Add(-day))
			r.wantActive(3)
		})
	}
}

// TestRollbackClockSkew: the CERT's clock and the sensor's differ; an instruction issued up to
// rollbackSkew (15 minutes) before the running model's activation, by the agent's clock, is
// taken as issued after it (the agent's clock is ahead). Earlier ones are refused.
func TestRollbackClockSkew(t *testing.T) {
	tests := []struct {
		issued time.Duration // relative to v5's activation
		ok     bool
	}{
		{-5 * time.Minute, true},
		{-rollbackSkew, true},
		{-rollbackSkew - time.Second, false},
		{-time.Hour, false},
		{time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.issued.String(), func(t *testing.T) {
			r := newReplayEnv(t)
			activated := r.at(2 * day)
			install(t, r.u, r.bundle("nethost", 5, featureSet("nethost/v1"), "model-5"))
			r.at(2*day + time.Hour)
			issued := activated.Add(tt.issued)
			res, err := r.rollBack(r.v3, r.instruct(r.v3, issued, day))
			if !tt.ok {
				r.wantReplayRefused(err, issued, activated)
				r.wantActive(5)
				return
			}
			if err != nil || res.State != StateActive {
				t.Fatalf("instruction issued %s after the activation: %+v %v", tt.issued, res, err)
			}
			r.wantActive(3)
		})
	}
}

// TestRollbackInstructionAfterHealthFailure: a model that fails its health check is not activated
// (the earlier model is loaded back, no pointer changes), so it records nothing: an instruction
// issued before the failed update rolls back from the model that still runs. A downgrade allowed by
// an instruction that fails its health check does not use the instruction up either.
func TestRollbackInstructionAfterHealthFailure(t *testing.T) {
	r := newReplayEnv(t)
	state, err := os.ReadFile(r.replayFile())
	if err != nil {
		t.Fatal(err)
	}
	b := r.instruct(r.v3, r.at(2*day), day)

	r.at(2*day + 5*time.Minute)
	_, err = r.u.Install(context.Background(), Request{Path: r.bundle("nethost", 5, featureSet("nethost/v1"), "model-5-NaN")})
	var rej *Rejection
	if !errors.As(err, &rej) || rej.State != StateRolledBack {
		t.Fatalf("broken v5: %v, want rolled back", err)
	}
	r.wantActive(4)
	broken := r.bundle("nethost", 2, featureSet("nethost/v1"), "model-2-NaN")
	if _, err := r.rollBack(broken, r.instruct(broken, r.now, day)); !errors.As(err, &rej) || rej.State != StateRolledBack {
		t.Fatalf("broken v2 with a rollback instruction: %v, want rolled back", err)
	}
	r.wantActive(4)
	if after, _ := os.ReadFile(r.replayFile()); !bytes.Equal(after, state) {
		t.Fatalf("replay state %q changed to %q by models that were never activated", state, after)
	}

	r.at(2*day + 10*time.Minute)
	r.mustRollBack(r.v3, b, 3)
}

// TestRollbackInstructionAfterShadow: a shadow model is not activated, so it records nothing.
func TestRollbackInstructionAfterShadow(t *testing.T) {
	r := newReplayEnv(t)
	sl := &shadowLoader{fakeLoader: r.loader}
	b := r.instruct(r.v3, r.at(2*day), day)
	r.at(2*day + time.Hour)
	u := r.updater(nil)
	u.cfg.Loaders = LoaderMap{"netflow": sl}
	res, err := u.Install(context.Background(), Request{Path: r.bundle("nethost", 5, featureSet("nethost/v1"), "model-5"), Shadow: true, RolloutID: "s5"})
	if err != nil || res.State != StateShadow {
		t.Fatalf("shadow v5: %+v %v", res, err)
	}
	r.at(2*day + 2*time.Hour)
	r.mustRollBack(r.v3, b, 3)
}
