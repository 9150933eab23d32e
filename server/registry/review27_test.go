package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestStatusFromUntargetedAgentRefused: an agent may report about a rollout only if the
// rollout targets it (entity, agent list, canary share). Before, the store kept any agent's
// report naming any rollout of the bundle, and `GET /api/v1/rollouts` counted it in the
// rollout's progress: a sensor of entity beta could mark entity alpha's rollout "active"
// for one more agent (or "rejected", "rolled_back").
func TestStatusFromUntargetedAgentRefused(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	e.addAgent("b-1", "beta")
	_, d2 := e.publish("nf", 2)
	// Two agents of entity alpha, one in the 20% canary of nf and one out of it.
	var in, out string
	for i := 0; in == "" || out == ""; i++ {
		id := fmt.Sprintf("c-%d", i)
		switch {
		case InCanary(id, "nf", 20) && in == "":
			in = id
		case !InCanary(id, "nf", 20) && out == "":
			out = id
		default:
			continue
		}
		e.addAgent(id, "alpha")
	}
	create := func(req RolloutRequest) string {
		t.Helper()
		req.Model = "nf@2"
		id, _, err := e.reg.CreateRollout(ctx, req, "release-eng")
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	byEntity := create(RolloutRequest{Entity: "alpha"})
	byList := create(RolloutRequest{Agents: []string{"a-2"}})
	canary := create(RolloutRequest{Percent: 20})
	report := func(agent, rollout string) error {
		return e.db.RecordModelStatus(ctx, agent, &wirev1.ModelStatus{RolloutId: rollout, State: "active",
			Model: &wirev1.ModelRef{Name: "nf", Version: 2, Digest: d2}})
	}
	for _, c := range []struct {
		agent, rollout string
		targeted       bool
	}{
		{"a-1", byEntity, true},
		{"b-1", byEntity, false}, // another entity's rollout
		{"a-2", byList, true},
		{"a-1", byList, false}, // not in the agent list
		{in, canary, true},
		{out, canary, false}, // outside the canary share
		{"b-1", "", true},    // a report naming no rollout, as before
	} {
		err := report(c.agent, c.rollout)
		if c.targeted && err != nil {
			t.Errorf("%s about %q: %v", c.agent, c.rollout, err)
		}
		if !c.targeted && !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s about %q (not targeted): %v, want ErrInvalid", c.agent, c.rollout, err)
		}
	}
	rs, err := e.db.ListRollouts(ctx, store.RolloutFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if n := r.Progress["active"]; n != 1 {
			t.Errorf("rollout %s (entity %q, target %s, percent %d): progress %v, want active=1", r.ID, r.Entity, r.Target, r.Percent, r.Progress)
		}
	}
}

// TestRolloutCreateRechecksBundle: `rollout create` checks the stored bundle again against the
// server's trust policy of now, its expiry and its file. Before, a model published under a key
// since removed from trust.json (a key retired or compromised), a model that had expired, or a
// model whose bundle file was gone was rolled out: offered to every targeted agent, where an
// agent still holding the old policy installed the no longer trusted model, and the others all
// reported it rejected, or failed to fetch it.
func TestRolloutCreateRechecksBundle(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	e.push.connected = []string{"a-1"}
	e.publish("nf", 2)
	_, d3 := e.publish("nf", 3)
	e.publish("nf", 4)

	// nf@2: its key is no longer trusted.
	other := signtest.NewSigner(t, sign.AlgEd25519)
	pol := signtest.Policy(t, 1, other)
	if err := pol.WriteFile(filepath.Join(e.dir, TrustFile)); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha"}, "release-eng")
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("rollout of a model signed by a key no longer trusted: %v, want ErrRejected", err)
	}
	if strings.Contains(err.Error(), e.dir) {
		t.Errorf("the refusal, sent to the API client, names the server's files: %v", err)
	}
	if err := signtest.Policy(t, 1, e.signer, other).WriteFile(filepath.Join(e.dir, TrustFile)); err != nil {
		t.Fatal(err)
	}

	// nf@3: its bundle file is gone.
	if err := os.Remove(filepath.Join(e.dir, "bundles", strings.TrimPrefix(d3, "sha256:")+bundle.Extension)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@3", Entity: "alpha"}, "release-eng"); !errors.Is(err, ErrRejected) {
		t.Fatalf("rollout of a model without its bundle file: %v, want ErrRejected", err)
	}

	// nf@4: expired (signtest manifests expire after 30 days).
	e.reg.cfg.Now = func() time.Time { return time.Now().Add(31 * 24 * time.Hour) }
	if _, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@4", Entity: "alpha"}, "release-eng"); !errors.Is(err, ErrRejected) ||
		!strings.Contains(err.Error(), "expired") {
		t.Fatalf("rollout of an expired model: %v, want ErrRejected", err)
	}
	e.reg.cfg.Now = time.Now

	if o := e.push.offers("a-1"); len(o) != 0 {
		t.Fatalf("refused rollouts were offered: %v", o)
	}
	if rs, err := e.db.ListRollouts(ctx, store.RolloutFilter{}); err != nil || len(rs) != 0 {
		t.Fatalf("refused rollouts recorded: %v %v", rs, err)
	}
	// The same model still rolls out while it is trusted, present and valid.
	if _, reached, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@4", Entity: "alpha"}, "release-eng"); err != nil || len(reached) != 1 {
		t.Fatalf("valid rollout: %v %v", reached, err)
	}
}

// TestHaltedShadowStillRunningWithdrawn: an agent that says it runs a halted shadow rollout gets
// its withdrawal, whatever its stored report says. Before, the withdrawal went only to agents
// connected at the halt and, at Hello, to agents whose stored report was shadow, offered,
// fetched or verified: an agent whose reports were lost (dropped by the endpoint's rate limit, a
// broken link) or whose withdrawal push failed (the agent's queue full, a write timeout) ran the
// halted shadow model on; its Hello listing the rollout and its periodic shadow reports were
// ignored.
func TestHaltedShadowStillRunningWithdrawn(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	_, d2 := e.publish("nf", 2)
	e.push.connected = []string{"a-1", "a-2", "a-3"}
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha", Shadow: true, HaltFactor: 3}, "release-eng")
	if err != nil {
		t.Fatal(err)
	}
	e.push.connected = []string{"a-2"} // a-1 and a-3 lose their links; their reports are lost
	e.status("a-2", id, d2, "shadow", summary(6000, 0, 6000, 1200))
	if ro, err := e.db.RolloutByID(ctx, id); err != nil || ro.State != "halted" {
		t.Fatalf("rollout not halted: %+v %v", ro, err)
	}
	waitWithdrawals := func(agent string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(e.push.withdrawals(agent)) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s runs the halted shadow rollout and got no withdrawal", agent)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// a-1 reconnects: its Hello lists the shadow rollout it runs.
	e.push.connected = []string{"a-1", "a-2"}
	e.reg.OnHello("a-1", "alpha", []string{id})
	waitWithdrawals("a-1")
	if o := e.push.offers("a-1"); len(o) != 1 {
		t.Fatalf("a-1 offered again: %v", o)
	}
	// a-3 is connected (its withdrawal push failed) and its periodic shadow report comes in.
	e.push.connected = []string{"a-1", "a-2", "a-3"}
	e.status("a-3", id, d2, "shadow", summary(100, 0, 100, 1))
	waitWithdrawals("a-3")
	// An agent that runs it no longer (it reported it withdrawn) is not sent it again.
	e.status("a-1", id, d2, "withdrawn", "rollout withdrawn by the server")
	n := len(e.push.withdrawals("a-1"))
	e.reg.OnHello("a-1", "alpha", nil)
	time.Sleep(50 * time.Millisecond)
	if m := len(e.push.withdrawals("a-1")); m != n {
		t.Fatalf("a-1 got %d more withdrawals after it reported withdrawn", m-n)
	}
}

// errReader fails after its bytes, as an upload cut short (or a disk that fills) does.
type errReader struct{ data []byte }

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, errors.New("connection reset")
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestPublishRefusals: what publish refuses leaves nothing FETCH would serve and no model: an
// untrusted signature, a second bundle for a published NAME@VERSION (different bytes), the same
// bundle again, an oversized or broken upload; the published bundle keeps its bytes.
func TestPublishRefusals(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	bundles := filepath.Join(e.dir, "bundles")
	write := func(model string, signers ...*sign.Signer) []byte {
		t.Helper()
		p := signtest.WriteBundle(t, t.TempDir(), []byte(model), signtest.Manifest("nf", 2, time.Now().Add(-time.Minute)), signers...)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	files := func() []string {
		t.Helper()
		ents, err := os.ReadDir(bundles)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		var out []string
		for _, d := range ents {
			out = append(out, d.Name())
		}
		return out
	}
	publish := func(rd io.Reader) error {
		_, err := e.reg.Publish(ctx, rd, "release-eng", PublishOptions{NoSmoke: true})
		return err
	}
	stranger := signtest.NewSigner(t, sign.AlgEd25519)
	if err := publish(bytes.NewReader(write("m1", stranger))); !errors.Is(err, ErrRejected) {
		t.Fatalf("untrusted bundle: %v", err)
	}
	if err := publish(bytes.NewReader(write("m1"))); !errors.Is(err, ErrRejected) {
		t.Fatalf("unsigned bundle: %v", err)
	}
	if f := files(); len(f) != 0 {
		t.Fatalf("refused bundles left files: %v", f)
	}
	a := write("m1", e.signer)
	if err := publish(bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	want := files()
	for name, rd := range map[string]io.Reader{
		"other bytes, same version": bytes.NewReader(write("m2", e.signer)),
		"same bundle again":         bytes.NewReader(a),
		"oversized":                 io.MultiReader(bytes.NewReader(a), bytes.NewReader(make([]byte, bundle.DefaultLimits().MaxTotal))),
		"broken upload":             &errReader{data: a[:len(a)/2]},
	} {
		if err := publish(rd); err == nil {
			t.Errorf("%s: published", name)
		}
		if f := files(); fmt.Sprint(f) != fmt.Sprint(want) {
			t.Errorf("%s: bundle files %v, want %v", name, f, want)
		}
	}
	m, err := e.db.ModelByVersion(ctx, "nf", 2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(bundles, strings.TrimPrefix(m.Digest, "sha256:")+bundle.Extension))
	if err != nil || !bytes.Equal(got, a) {
		t.Fatalf("published bundle changed: %v", err)
	}
}

// TestOffersInCreationOrder: an agent gets its offers in the order their rollouts were created,
// and processes them in that order, so the newest rollout's model is the one it ends with when
// two rollouts of different model names feed one detector (e.g. a rollback of nf-site while nf
// rolls out). Before, offers were sorted by rollout id, which is random: which model an agent
// ended with depended on the ids drawn.
func TestOffersInCreationOrder(t *testing.T) {
	r := New(Config{})
	rs := []store.RolloutRecord{ // oldest first, as the store lists them
		{Rollout: store.Rollout{ID: "r-ff", Entity: "alpha", Model: store.ModelRef{Name: "nf", Version: 5, Digest: "d5"}}, Size: 10},
		{Rollout: store.Rollout{ID: "r-00", Entity: "alpha", Model: store.ModelRef{Name: "nf-site", Version: 3, Digest: "d3"}}, Size: 10,
			RollbackInstruction: []byte("signed")},
		{Rollout: store.Rollout{ID: "r-80", Entity: "alpha", Shadow: true, Model: store.ModelRef{Name: "nf", Version: 6, Digest: "d6"}}, Size: 10},
	}
	var got []string
	for _, o := range r.offersFor(rs, "a-1", "alpha", nil, nil) {
		got = append(got, o.RolloutId)
	}
	if want := "[r-ff r-00 r-80]"; fmt.Sprint(got) != want {
		t.Fatalf("offers %v, want creation order %s", got, want)
	}
}
