package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Tests of the server's trust policy at every offer (trustcheck.go, docs/rollouts.md). Before,
// only `rollout create` checked the stored bundle against trust.json: a rollout created before a
// key was removed from it (or before its bundle expired) was offered on, at every Hello, to
// agents that joined its targets later and by queued pushes, and an agent whose own trust.json
// still listed the key installed it.

// publishWith signs NAME@version with signers and publishes it (no smoke test); it returns the
// digest.
func (e *regEnv) publishWith(name string, version uint64, signers ...*sign.Signer) string {
	e.t.Helper()
	m := signtest.Manifest(name, version, time.Now().Add(-time.Minute))
	p := signtest.WriteBundle(e.t, e.t.TempDir(), []byte(fmt.Sprintf("model %s %d", name, version)), m, signers...)
	data, err := os.ReadFile(p)
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := e.reg.Publish(context.Background(), bytes.NewReader(data), "release-eng", PublishOptions{NoSmoke: true})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Model.Digest
}

// trustOnly rewrites trust.json to trust signers only.
func (e *regEnv) trustOnly(signers ...*sign.Signer) {
	e.t.Helper()
	if err := signtest.Policy(e.t, 1, signers...).WriteFile(filepath.Join(e.dir, TrustFile)); err != nil {
		e.t.Fatal(err)
	}
}

// rollout returns rollout id as stored.
func (e *regEnv) rollout(id string) store.RolloutRecord {
	e.t.Helper()
	ro, err := e.db.RolloutByID(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return ro
}

// waitHalted waits (polling, up to 10 s) until rollout id is halted and returns it.
func (e *regEnv) waitHalted(id string) store.RolloutRecord {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ro := e.rollout(id)
		if ro.State == "halted" {
			return ro
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("rollout %s is still %s", id, ro.State)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// assertUntrustedHalt checks that rollout id was halted by the trust check, with a reason
// naming want, audited as rollout.halted by system.
func (e *regEnv) assertUntrustedHalt(id, want string) {
	e.t.Helper()
	ro := e.waitHalted(id)
	if ro.StateChangedBy != HaltActor || !strings.Contains(ro.StateReason, "no longer verifies against the server trust policy") ||
		!strings.Contains(ro.StateReason, want) {
		e.t.Fatalf("rollout %s halted by %q with reason %q, want by %s, naming the trust policy and %q", id, ro.StateChangedBy, ro.StateReason, HaltActor, want)
	}
	if strings.Contains(ro.StateReason, e.dir) {
		e.t.Errorf("the reason, shown to API clients, names the server's files: %q", ro.StateReason)
	}
	audit, err := e.db.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, a := range audit {
		if a.Action == "rollout.halted" && a.Target == id && a.Actor == HaltActor && strings.Contains(a.Detail, want) {
			n++
		}
	}
	if n != 1 {
		e.t.Fatalf("%d rollout.halted audit entries of %s naming %q, want 1", n, id, want)
	}
}

// TestHelloRechecksTrust: a key removed from trust.json after `rollout create` stops the
// rollout's offers at the next Hello, of an agent it was offered to before (the repeated offer)
// and of an agent that joined its entity later; the rollout is halted once.
func TestHelloRechecksTrust(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	e.publish("nf", 2)
	e.push.connected = []string{"a-1"}
	id, reached, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha"}, "release-eng")
	if err != nil || len(reached) != 1 {
		t.Fatalf("rollout: %v %v", reached, err)
	}
	e.status("a-1", id, e.push.offers("a-1")[0].Model.Digest, "offered", "")

	// The release key is retired: a new one signs from now on.
	e.trustOnly(signtest.NewSigner(t, sign.AlgEd25519))
	e.addAgent("a-4", "alpha") // joins the entity after the rollout was created
	e.push.connected = []string{"a-1", "a-4"}
	e.reg.OnHello("a-4", "alpha", nil)
	if o := e.push.offers("a-4"); len(o) != 0 {
		t.Fatalf("a bundle whose key was removed from trust.json was offered to a new agent: %v", o)
	}
	e.assertUntrustedHalt(id, "not enough trusted signatures")
	// a-1, which had the offer and had not settled it, gets the withdrawal; its Hello offers
	// nothing again.
	e.reg.OnHello("a-1", "alpha", nil)
	if o := e.push.offers("a-1"); len(o) != 1 {
		t.Fatalf("offers to a-1: %v, want only the one before the key was removed", o)
	}
	waitFor(t, func() bool { return len(e.push.withdrawals("a-1")) > 0 }, "withdrawal to a-1")
}

// TestPushRechecksTrust: a push to the connected agents (here after another rollout's create)
// does not offer a rollout whose bundle expired since its create; that rollout is halted.
func TestPushRechecksTrust(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	e.publish("nf", 2)
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Agents: []string{"a-1"}}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	// signtest manifests expire after 30 days.
	e.reg.cfg.Now = func() time.Time { return time.Now().Add(31 * 24 * time.Hour) }
	e.push.connected = []string{"a-1"}
	e.reg.PushPending(ctx)
	if o := e.push.offers("a-1"); len(o) != 0 {
		t.Fatalf("an expired bundle was pushed: %v", o)
	}
	e.assertUntrustedHalt(id, "expired")
}

// gatePusher blocks every push until its gate is opened.
type gatePusher struct {
	*fakePusher
	gate chan struct{}
}

func (g *gatePusher) Push(id string, m *wirev1.ServerControl) error {
	<-g.gate
	return g.fakePusher.Push(id, m)
}

// TestQueuedOfferRechecked: an offer queued for an agent (behind a push that is slow to write)
// while its bundle verified is not sent once trust.json no longer trusts it; its rollout halts.
func TestQueuedOfferRechecked(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	k2 := signtest.NewSigner(t, sign.AlgEd25519)
	e.trustOnly(e.signer, k2)
	e.publishWith("fa", 1, k2)
	e.publishWith("nf", 2, e.signer)
	g := &gatePusher{fakePusher: e.push, gate: make(chan struct{})}
	e.push.connected = []string{"a-1"}
	e.reg.SetPusher(g)
	e.reg.cfg.PushWait = time.Millisecond // create does not wait for the blocked pushes
	if _, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "fa@1", Agents: []string{"a-1"}}, "release-eng"); err != nil {
		t.Fatal(err)
	}
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Agents: []string{"a-1"}}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	e.trustOnly(k2) // the key of nf@2 is removed while its offer waits in a-1's queue
	close(g.gate)
	e.assertUntrustedHalt(id, "not enough trusted signatures")
	waitFor(t, func() bool { return len(e.push.offers("a-1")) >= 1 }, "the offer of fa@1")
	for _, o := range e.push.offers("a-1") {
		if o.RolloutId == id {
			t.Fatalf("the queued offer of nf@2 was sent after its key was removed: %v", o)
		}
	}
}

// TestTrustFileUnusableFailsClosed: while trust.json is malformed or unreadable, nothing is
// offered and nothing is halted (a half-edited file says nothing about the bundles); once it
// is restored, the offers resume, also to connected agents that said Hello meanwhile.
func TestTrustFileUnusableFailsClosed(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	path := filepath.Join(e.dir, TrustFile)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e.publish("nf", 2)
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha"}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	e.push.connected = []string{"a-1", "a-2", "a-3"}
	for i, bad := range []func(){
		func() { writeFile(t, path, good[:len(good)/2]) },     // truncated by an editor
		func() { writeFile(t, path, []byte(`{"keys":[]}`)) },  // valid JSON, invalid policy
		func() { mustRemove(t, path) },                        // gone
		func() { mustRemove(t, path); os.Mkdir(path, 0o700) }, // unreadable
		func() { mustRemove(t, path); mkfifo(t, path) },       // a named pipe: must not block
	} {
		bad()
		agent := []string{"a-1", "a-2", "a-1", "a-2", "a-1"}[i]
		e.reg.OnHello(agent, "alpha", nil)
		e.reg.PushPending(ctx)
		if o := e.push.offers(agent); len(o) != 0 {
			t.Fatalf("case %d: offered without a usable trust policy: %v", i, o)
		}
		if ro := e.rollout(id); ro.State != "active" {
			t.Fatalf("case %d: rollout %s (%s) without a usable trust policy, want it still active", i, ro.State, ro.StateReason)
		}
	}
	mustRemove(t, path)
	writeFile(t, path, good)
	e.reg.OnHello("a-3", "alpha", nil)
	if o := offerIDs(e, "a-3"); len(o) == 0 || o[0] != id {
		t.Fatalf("offers once trust.json is restored: %v", o)
	}
	// a-1 and a-2 said Hello while the policy was unusable; they are still connected.
	waitFor(t, func() bool { return len(e.push.offers("a-1")) > 0 && len(e.push.offers("a-2")) > 0 }, "the withheld offers pushed")
	if ro := e.rollout(id); ro.State != "active" {
		t.Fatalf("rollout %s (%s)", ro.State, ro.StateReason)
	}
}

// TestRollbackRolloutRechecksInstruction: a rollback rollout is offered only while its signed
// instruction verifies against the server trust policy too: an instruction signed by a key
// removed since (the bundle itself still trusted) halts it.
func TestRollbackRolloutRechecksInstruction(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	k2 := signtest.NewSigner(t, sign.AlgEd25519)
	e.trustOnly(e.signer, k2)
	e.publishWith("nf", 1, k2)
	e.publishWith("nf", 2, k2)
	ro, err := e.db.ListRollouts(ctx, store.RolloutFilter{})
	if err != nil || len(ro) != 0 {
		t.Fatal(ro, err)
	}
	m, err := e.db.ModelByVersion(ctx, "nf", 1)
	if err != nil {
		t.Fatal(err)
	}
	var man bundle.Manifest
	if err := json.Unmarshal(m.Manifest, &man); err != nil {
		t.Fatal(err)
	}
	instr, err := rollback.Sign(rollback.For(&man, time.Now(), time.Hour, "v2 noisy"), e.signer)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@1", Entity: "alpha", RollbackInstruction: instr}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	e.trustOnly(k2) // the bundle's key stays, the instruction's goes
	e.push.connected = []string{"a-1"}
	e.reg.OnHello("a-1", "alpha", nil)
	if o := e.push.offers("a-1"); len(o) != 0 {
		t.Fatalf("a rollback whose instruction no longer verifies was offered: %v", o)
	}
	e.assertUntrustedHalt(id, "rollback instruction")
}

// TestShadowRolloutRechecksTrust: a shadow rollout whose bundle no longer verifies is halted
// like one halted by the halt rule: its withdrawal reaches every targeted connected agent (one
// running the shadow model stops it), and it is no longer offered, not even to an agent that
// restarted without its shadow model.
func TestShadowRolloutRechecksTrust(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	e.publish("nf", 2)
	e.push.connected = []string{"a-1"}
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha", Shadow: true}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	d := e.push.offers("a-1")[0].Model.Digest
	e.status("a-1", id, d, "shadow", summary(10, 0, 10, 0))
	e.trustOnly(signtest.NewSigner(t, sign.AlgEd25519))
	e.push.connected = []string{"a-1", "a-2"}
	e.reg.OnHello("a-1", "alpha", nil) // restarted: runs no shadow model, would be offered it again
	if o := e.push.offers("a-1"); len(o) != 1 {
		t.Fatalf("offers to a-1: %v, want only the first", o)
	}
	e.assertUntrustedHalt(id, "not enough trusted signatures")
	waitFor(t, func() bool { return len(e.push.withdrawals("a-1")) > 0 && len(e.push.withdrawals("a-2")) > 0 }, "withdrawals")
	if o := e.push.offers("a-2"); len(o) != 0 {
		t.Fatalf("offers to a-2: %v", o)
	}
	if ro := e.rollout(id); len(ro.ShadowFinal) == 0 {
		t.Fatal("the shadow reports at the halt were not kept")
	}
}

// TestOlderRolloutOfferedAfterTrustHalt: when the newest rollout of a model halts because it no
// longer verifies, an older active one of the same model that still verifies is offered, after
// the withdrawal (as after a halt by hand).
func TestOlderRolloutOfferedAfterTrustHalt(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	k2 := signtest.NewSigner(t, sign.AlgEd25519)
	e.trustOnly(e.signer, k2)
	e.publishWith("nf", 2, k2)
	e.publishWith("nf", 3, e.signer)
	old, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha"}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@3", Entity: "alpha"}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	e.trustOnly(k2)
	e.push.connected = []string{"a-1"}
	e.reg.OnHello("a-1", "alpha", nil)
	e.assertUntrustedHalt(id, "not enough trusted signatures")
	waitFor(t, func() bool { return slices.Contains(offerIDs(e, "a-1"), old) }, "the offer of the older rollout")
	if ids := offerIDs(e, "a-1"); slices.Contains(ids, id) {
		t.Fatalf("offers %v include the halted rollout", ids)
	}
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
}
