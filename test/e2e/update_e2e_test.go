package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	agentupdate "github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/trust"
)

// updateKit is what the update tests share: release keys, a base ONNX model and bundle makers.
type updateKit struct {
	t        *testing.T
	dir      string
	model    []byte // a real netflow/v1 model (from the baseline bundle)
	base     bundle.Manifest
	a, b     *sign.Signer // a: trusted by agents and server; b: trusted by the server only
	aPub     string
	bPub     string
	policyA  string // trust.json trusting a only (agents)
	pluginOK bool
}

func newUpdateKit(t *testing.T, b bins) *updateKit {
	t.Helper()
	k := &updateKit{t: t, dir: t.TempDir()}
	if _, err := os.Stat(filepath.Join(b.dir, "vigil-detector-netflow")); err != nil {
		t.Skipf("no vigil-detector-netflow in %s", b.dir)
	}
	// The shipped baseline of the netflow detector is the nethost model
	// (models/baseline/REPORT.md); the netflow/v1 one is experimental.
	var cands []string
	for _, g := range []string{filepath.Join(b.dir, "models", "nethost-*.vgb"), "../../models/baseline/nethost-*.vgb",
		"../../models/baseline/experimental/netflow-*.vgb"} {
		m, _ := filepath.Glob(g)
		cands = append(cands, m...)
	}
	if len(cands) == 0 {
		t.Skip("no baseline bundle of the netflow detector")
	}
	src := cands[0]
	bb, err := bundle.Read(src, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	k.model, k.base = bb.Model, bb.Manifest
	t.Setenv(sign.PassphraseEnv, "correct horse battery")
	// Key a through the real CLI (keygen), key b in process.
	prefix := filepath.Join(k.dir, "release-a")
	if out, err := exec.Command(b.ctl, "model", "keygen", "--out", prefix, "--alg", "ed25519").CombinedOutput(); err != nil {
		t.Fatalf("vigilctl model keygen: %v\n%s", err, out)
	}
	k.a, err = sign.LoadSigner(prefix+".key", []byte("correct horse battery"))
	if err != nil {
		t.Fatal(err)
	}
	k.aPub = prefix + ".pub"
	privB, pubB, _, err := sign.GenerateKey(sign.AlgECDSAP256, []byte("correct horse battery"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sign.WriteKeyPair(filepath.Join(k.dir, "release-b"), privB, pubB); err != nil {
		t.Fatal(err)
	}
	k.bPub = filepath.Join(k.dir, "release-b.pub")
	k.b, err = sign.ParseSigner(privB, []byte("correct horse battery"))
	if err != nil {
		t.Fatal(err)
	}
	pa, _ := os.ReadFile(k.aPub)
	pol, err := trust.NewPolicy(1, pa)
	if err != nil {
		t.Fatal(err)
	}
	k.policyA = filepath.Join(k.dir, "trust-agents.json")
	if err := pol.WriteFile(k.policyA); err != nil {
		t.Fatal(err)
	}
	return k
}

// bundle writes a bundle of version ver signed by signers; edit changes the manifest, model
// replaces the model bytes.
func (k *updateKit) bundle(name string, ver uint64, edit func(*bundle.Manifest), model []byte, signers ...*sign.Signer) string {
	k.t.Helper()
	m := k.base
	m.Name, m.Version = name, ver
	m.Created = time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	m.Expires = m.Created.Add(30 * 24 * time.Hour)
	if edit != nil {
		edit(&m)
	}
	if model == nil {
		model = k.model
	}
	dir := filepath.Join(k.dir, "b", name+"-"+time.Now().Format("150405.000000000"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		k.t.Fatal(err)
	}
	p, err := bundle.WriteFile(dir, model, &m)
	if err != nil {
		k.t.Fatal(err)
	}
	for _, s := range signers {
		if err := sign.SignBundle(p, s); err != nil {
			k.t.Fatal(err)
		}
	}
	return p
}

type rolloutStatusJSON struct {
	ID     string `json:"id"`
	Agents []struct {
		AgentID string `json:"agent_id"`
		State   string `json:"state"`
		Reason  string `json:"reason"`
	} `json:"agents"`
}

func (d *deployment) rolloutState(id string) map[string][2]string {
	d.t.Helper()
	out, _, err := d.ctl("", "rollout", "status", "--id", id, "--json")
	if err != nil {
		return nil
	}
	var rs []rolloutStatusJSON
	if json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 {
		return nil
	}
	m := map[string][2]string{}
	for _, a := range rs[0].Agents {
		m[a.AgentID] = [2]string{a.State, a.Reason}
	}
	return m
}

func (d *deployment) publish(path string, extra ...string) {
	d.t.Helper()
	out := d.mustCtl("", append([]string{"model", "publish", path}, extra...)...)
	d.t.Logf("publish: %s", strings.TrimSpace(out))
}

func (d *deployment) rollout(args ...string) string {
	d.t.Helper()
	var res struct {
		ID string `json:"id"`
	}
	out := d.mustCtl("", append([]string{"rollout", "create", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.ID == "" {
		d.t.Fatalf("rollout create: %v %s", err, out)
	}
	return res.ID
}

// waitStates waits until every listed agent reached its wanted state in the rollout.
func (d *deployment) waitStates(id string, timeout time.Duration, want map[string]string) map[string][2]string {
	d.t.Helper()
	var last map[string][2]string
	waitFor(d.t, timeout, func() string {
		b, _ := json.Marshal(last)
		return "rollout " + id + " states " + string(b) + "\n" + tail(d.log, 30)
	}, func() bool {
		last = d.rolloutState(id)
		for a, s := range want {
			if last[a][0] != s {
				return false
			}
		}
		return true
	})
	return last
}

func activeVersion(t *testing.T, stateDir string) uint64 {
	t.Helper()
	act, err := agentupdate.ActiveModels(stateDir)
	if err != nil || len(act) == 0 {
		return 0
	}
	return act[0].Manifest.Version
}

func installTrust(t *testing.T, k *updateKit, a *agentProc) {
	t.Helper()
	b, err := os.ReadFile(k.policyA)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.dir, "trust.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateEndToEnd: keygen, sign, publish (verified and smoke-loaded by the real plugin),
// rollout to an entity, push, fetch, verify, activate, the rejections with their reasons in
// `rollout status`, kill -9 at several steps, and the air-gapped update.
func TestUpdateEndToEnd(t *testing.T) {
	b := needBins(t)
	k := newUpdateKit(t, b)
	if os.Getenv("ONNXRUNTIME_LIB") == "" {
		if _, err := os.Stat(filepath.Join(b.dir, "lib", "libonnxruntime.so")); err != nil {
			t.Skip("no ONNX Runtime: set ONNXRUNTIME_LIB")
		}
	}
	d := newDeployment(t, b, "upd.vigil")
	if out, err := exec.Command(b.server, "trust", "set", "--data", d.dir, "--pub", k.aPub, "--pub", k.bPub).CombinedOutput(); err != nil {
		t.Fatalf("vigil-server trust set: %v\n%s", err, out)
	}
	d.start()
	a1, a2, b1 := d.enroll("alpha"), d.enroll("alpha"), d.enroll("beta")
	for _, a := range []*agentProc{a1, a2, b1} {
		installTrust(t, k, a)
		a.run()
	}
	for _, a := range []*agentProc{a1, a2, b1} {
		a.waitConnected()
	}
	id1, id2, idb := a1.id.AgentID, a2.id.AgentID, b1.id.AgentID

	// Versions from 101: above the installed baseline (bin/models/nethost-9.vgb), which is a
	// version floor also for agents without a packet pipeline. v102 signed with the CLI.
	v2 := k.bundle("nf", 102, nil, nil)
	d.mustCtl("", "model", "sign", "--key", filepath.Join(k.dir, "release-a.key"), v2)
	if out := d.mustCtl("", "model", "verify", "--pub", k.aPub, v2); !strings.Contains(out, "OK") {
		t.Fatalf("model verify: %s", out)
	}
	d.publish(v2)
	start := time.Now()
	r2 := d.rollout("--model", "nf@102", "--entity", "alpha")
	d.waitStates(r2, 20*time.Second, map[string]string{id1: "active", id2: "active"})
	took := time.Since(start)
	t.Logf("rollout to entity alpha: both agents active after %s", took)
	if took > 5*time.Second {
		t.Errorf("rollout took %s, want under 5 s", took)
	}
	if st := d.rolloutState(r2); len(st) != 2 || st[idb][0] != "" {
		t.Fatalf("rollout to alpha touched other agents: %v", st)
	}
	if v := activeVersion(t, b1.dir); v != 0 {
		t.Fatalf("beta agent runs version %d", v)
	}
	for _, a := range []*agentProc{a1, a2} {
		if v := activeVersion(t, a.dir); v != 102 {
			t.Fatalf("agent %s active version %d, want 102", a.id.AgentID, v)
		}
	}

	// Rejections: each reaches the agent and is refused with its reason. A bundle tampered with
	// on the server, or expired since it was published, is refused by the server already, when
	// the rollout is created (it checks the stored bundle again): atCreate; the agent's own checks
	// of both are in agent/update's tests.
	cases := []struct {
		name, model, want string
		path              func() string
		publish           []string
		tamper, atCreate  bool
	}{
		{"untrusted key", "nf@103", "signature check failed", func() string { return k.bundle("nf", 103, nil, nil, k.b) }, nil, false, false},
		{"lower version", "nf@101", "not greater than the active version 102", func() string { return k.bundle("nf", 101, nil, nil, k.a) }, nil, false, false},
		{"wrong feature set", "nf@104", "feature set fileactivity/v1 not supported", func() string {
			return k.bundle("nf", 104, func(m *bundle.Manifest) { m.FeatureSet = "fileactivity/v1" }, nil, k.a)
		}, []string{"--no-smoke"}, false, false},
		{"broken model", "nf@105", "plugin refused the model", func() string { return k.bundle("nf", 105, nil, []byte("not an onnx graph"), k.a) },
			[]string{"--no-smoke"}, false, false},
		{"tampered on the server", "nf@106", "no longer verifies|digest", func() string { return k.bundle("nf", 106, nil, nil, k.a) }, nil, true, true},
		{"expired", "nf@107", "expired", func() string {
			return k.bundle("nf", 107, func(m *bundle.Manifest) { m.Expires = time.Now().UTC().Add(3 * time.Second).Truncate(time.Second) }, nil, k.a)
		}, nil, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := c.path()
			d.publish(p, c.publish...)
			if c.tamper {
				dg, _ := bundle.Digest(p)
				sp := filepath.Join(d.dir, "bundles", strings.TrimPrefix(dg, "sha256:")+".vgb")
				data, err := os.ReadFile(sp)
				if err != nil {
					t.Fatal(err)
				}
				data[len(data)/2] ^= 0xff
				if err := os.WriteFile(sp, data, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			if c.name == "expired" {
				time.Sleep(4 * time.Second)
			}
			if c.atCreate {
				_, errOut, err := d.ctl("", "rollout", "create", "--json", "--model", c.model, "--agents", id1)
				if err == nil || !slices.ContainsFunc(strings.Split(c.want, "|"), func(w string) bool { return strings.Contains(errOut, w) }) {
					t.Fatalf("rollout create of %s: err %v, stderr %q; want a refusal mentioning %q", c.model, err, errOut, c.want)
				}
				t.Logf("refused at create: %s", strings.TrimSpace(errOut))
				if v := activeVersion(t, a1.dir); v != 102 {
					t.Fatalf("active version %d after a refused rollout", v)
				}
				return
			}
			r := d.rollout("--model", c.model, "--agents", id1)
			st := d.waitStates(r, 20*time.Second, map[string]string{id1: "rejected"})
			if !strings.Contains(st[id1][1], c.want) {
				t.Fatalf("reason %q, want it to mention %q", st[id1][1], c.want)
			}
			t.Logf("rejected: %s", st[id1][1])
			if v := activeVersion(t, a1.dir); v != 102 {
				t.Fatalf("active version %d after a rejected update", v)
			}
		})
	}

	// A model that loads but scores NaN is loaded, fails its health check, and the previous model
	// is loaded back: rolled_back, with the reason, and nf@102 stays active.
	t.Run("NaN scores rolled back", func(t *testing.T) {
		d.publish(k.bundle("nf", 108, nil, nanGraph(t, k.model), k.a), "--no-smoke")
		r := d.rollout("--model", "nf@108", "--agents", id1)
		st := d.waitStates(r, 30*time.Second, map[string]string{id1: "rolled_back"})
		t.Logf("rolled back: %s", st[id1][1])
		if !strings.Contains(st[id1][1], "not finite") || !strings.Contains(st[id1][1], "rolled back to nf-102-") {
			t.Fatalf("reason %q", st[id1][1])
		}
		if v := activeVersion(t, a1.dir); v != 102 {
			t.Fatalf("active version %d after a rolled-back update", v)
		}
	})

	// kill -9 of the agent at several steps of an update: it comes back on a valid model and the
	// update completes after the restart (the server repeats the pending offer after Hello).
	ver := uint64(110)
	for _, step := range []string{"fetched", "staged", "loaded", "activated"} {
		t.Run("kill -9 at "+step, func(t *testing.T) {
			a2.p.stop(t, 30*time.Second)
			a2.p = startProc(t, "vigil-agent", a2.log, []string{"VIGIL_TEST_FAILPOINTS=1", "VIGIL_UPDATE_FAILPOINT=" + step},
				b.agent, "run", "--state", a2.dir, "--metrics", a2.metrics, "--log-level", "debug", "--log-format", "text")
			a2.waitConnected()
			before := activeVersion(t, a2.dir)
			ver++
			d.publish(k.bundle("nf", ver, nil, nil, k.a))
			r := d.rollout("--model", "nf@"+itoa(ver), "--agents", id2)
			waitFor(t, 30*time.Second, func() string { return "agent killed at " + step + "\n" + tail(a2.log, 20) }, a2.p.exited)
			after := activeVersion(t, a2.dir)
			if after != before && after != ver {
				t.Fatalf("after kill -9 at %s the active version is %d (before %d, new %d)", step, after, before, ver)
			}
			if after == 0 {
				t.Fatalf("no active model after kill -9 at %s", step)
			}
			a2.run()
			d.waitStates(r, 30*time.Second, map[string]string{id2: "active"})
			if v := activeVersion(t, a2.dir); v != ver {
				t.Fatalf("after restart active version %d, want %d", v, ver)
			}
		})
	}

	// Air-gapped: the same checks without a server.
	t.Run("air-gapped", func(t *testing.T) {
		st := t.TempDir()
		b0, _ := os.ReadFile(k.policyA)
		if err := os.WriteFile(filepath.Join(st, "trust.json"), b0, 0o644); err != nil {
			t.Fatal(err)
		}
		good := k.bundle("nf", 20, nil, nil, k.a)
		out, err := exec.Command(b.agent, "update", "--bundle", good, "--state", st, "--json").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"state": "active"`) {
			t.Fatalf("air-gapped update: %v\n%s", err, out)
		}
		out, err = exec.Command(b.agent, "update", "--bundle", k.bundle("nf", 19, nil, nil, k.a), "--state", st).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "not greater than the active version 20") {
			t.Fatalf("air-gapped downgrade: err %v\n%s", err, out)
		}
		out, err = exec.Command(b.agent, "update", "--bundle", k.bundle("nf", 21, nil, nil, k.b), "--state", st).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "signature check failed") {
			t.Fatalf("air-gapped untrusted: err %v\n%s", err, out)
		}
		if v := activeVersion(t, st); v != 20 {
			t.Fatalf("air-gapped active version %d", v)
		}
	})

	// Audit: who published and who rolled out.
	audit := d.mustCtl("", "audit", "list", "--json")
	for _, action := range []string{"model.publish", "rollout.create"} {
		if !strings.Contains(audit, action) {
			t.Errorf("audit log has no %s entry", action)
		}
	}
}

func itoa(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
