package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/onnx"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/test/filework"
	"google.golang.org/protobuf/proto"
)

// agentModels reads the active models an agent last reported (Hello, Status) from the API, as
// "name@version", in the agent's order.
func (d *deployment) agentModels(agentID string) []string {
	d.t.Helper()
	var a struct {
		Health struct {
			ActiveModels []struct {
				Name    string `json:"name"`
				Version uint64 `json:"version"`
			} `json:"active_models"`
		} `json:"health"`
	}
	if !d.agentView(agentID, &a) {
		return nil
	}
	var out []string
	for _, m := range a.Health.ActiveModels {
		out = append(out, m.Name+"@"+itoa(m.Version))
	}
	return out
}

// TestRolloutFileactivity: fileactivity models reach an agent that watches a folder (`vigil-agent
// run --watch`), and it scores with them. The release engineer's bundles are the shipped model,
// renamed fa-site, signed:
//   - fa-site@99 is installed air-gapped (`vigil-agent update --bundle`) before the agent runs, and
//     the file pipeline starts with it rather than with the installed baseline;
//   - fa-site@100 is published (the server's smoke test runs the real plugin on it) and rolled out;
//     the agent verifies and activates it and hands it to its running plugin, reports it, and only
//     it, as its fileactivity model, and a ransomware simulation in the watched folder becomes a
//     finding stamped fa-site@100;
//   - after a restart the pipeline starts with fa-site@100.
//
// Before, all of it failed: the probe batch of the smoke test and of the agent's check was refused
// by the file-event encoding, the running file pipeline had no model loader, it started with the
// newest installed bundle whatever the updater had activated, and the agent reported both models.
func TestRolloutFileactivity(t *testing.T) {
	b := needBins(t)
	if _, err := os.Stat(filepath.Join(b.dir, "vigil-detector-fileactivity")); err != nil {
		t.Skipf("no vigil-detector-fileactivity in %s", b.dir)
	}
	base, _ := filepath.Glob(filepath.Join(b.dir, "models", "fileactivity-*.vgb"))
	if len(base) == 0 {
		t.Skip("no fileactivity baseline bundle next to the binaries")
	}
	k := newUpdateKit(t, b)
	bb, err := bundle.Read(base[0], bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	faSiteModel := func(ver uint64, model []byte, edit ...func(*bundle.Manifest)) string {
		m := bb.Manifest
		m.Name, m.Version = "fa-site", ver
		for _, e := range edit {
			e(&m)
		}
		m.Created = time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
		m.Expires = m.Created.Add(30 * 24 * time.Hour)
		dir := filepath.Join(t.TempDir(), "fa")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p, err := bundle.WriteFile(dir, model, &m)
		if err != nil {
			t.Fatal(err)
		}
		if err := sign.SignBundle(p, k.a); err != nil {
			t.Fatal(err)
		}
		return p
	}
	faSite := func(ver uint64, edit ...func(*bundle.Manifest)) string { return faSiteModel(ver, bb.Model, edit...) }
	site := faSite(100)

	d := newDeployment(t, b, "fa.vigil")
	if out, err := exec.Command(b.server, "trust", "set", "--data", d.dir, "--pub", k.aPub).CombinedOutput(); err != nil {
		t.Fatalf("vigil-server trust set: %v\n%s", err, out)
	}
	d.start()
	ag := d.enroll("fa")
	installTrust(t, k, ag)
	root := t.TempDir()
	share := filepath.Join(root, "share")
	if _, err := filework.CopySourceTree(share, 424243, 400); err != nil {
		t.Skipf("no Go source tree: %v", err)
	}
	// Air-gapped first (`vigil-agent update --bundle`): the updater checks the bundle in a plugin
	// of its own, and the pipeline starts with it.
	if out, err := exec.Command(b.agent, "update", "--bundle", faSite(99), "--state", ag.dir, "--json").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), `"state": "active"`) {
		t.Fatalf("air-gapped fileactivity update: %v\n%s", err, out)
	}
	cfg := fastReportConfig(t)
	ag.run("--config", cfg, "--watch", root)
	ag.waitConnected()
	id := ag.id.AgentID
	hasModels := func(want ...string) func() bool {
		return func() bool {
			got := ag.d.agentModels(id)
			n := 0
			for _, g := range got {
				if strings.HasPrefix(g, "fileactivity@") || strings.HasPrefix(g, "fa-site@") {
					n++
				}
			}
			for _, w := range want {
				if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+w+" ") {
					return false
				}
			}
			return n == len(want) // one fileactivity model, reported once
		}
	}
	models := func() string {
		return "active models " + strings.Join(d.agentModels(id), " ") + "\n" + tail(ag.log, 30)
	}
	waitFor(t, 60*time.Second, models, hasModels("fa-site@99"))

	d.publish(site)
	r := d.rollout("--model", "fa-site@100", "--agents", id)
	d.waitStates(r, 90*time.Second, map[string]string{id: "active"})
	waitFor(t, 60*time.Second, models, hasModels("fa-site@100"))
	if !strings.Contains(tail(ag.log, 400), "fileactivity model loaded into the running plugin") {
		t.Errorf("the running pipeline did not load the model:\n%s", tail(ag.log, 40))
	}

	// A shadow rollout of fa-site@101, whose threshold is 1,000 times lower: the agent runs it in a
	// second plugin beside fa-site@100 on the same file events, reports both models' counts, and
	// the server halts the rollout once the shadow flags more than twice as often; the agent then
	// stops the shadow model. None of its anomalies becomes a finding, and fa-site@100 stays the
	// only active model.
	d.publish(faSite(101, func(m *bundle.Manifest) { m.Threshold *= 1e-3 }))
	ro := d.rollout("--model", "fa-site@101", "--agents", id, "--shadow", "--halt-factor", "2")
	wctx, wcancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer wcancel()
	workDone := make(chan struct{})
	go func() { // ordinary work in the watched folder until the rollout halts (bounded)
		defer close(workDone)
		for seed := uint64(1); seed <= 20 && wctx.Err() == nil; seed++ {
			_ = filework.Unpack(wctx, filepath.Join(root, "work", itoa(seed)), seed)
			select {
			case <-wctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	var sst shadowRolloutStatus
	waitFor(t, 3*time.Minute, func() string {
		b, _ := json.Marshal(sst)
		return "fileactivity shadow rollout halted: " + string(b) + "\n" + tail(ag.log, 40)
	}, func() bool {
		var ok bool
		sst, ok = d.shadowStatus(ro)
		return ok && sst.State == "halted"
	})
	wcancel()
	<-workDone
	t.Logf("halted: %s", sst.StateReason)
	if len(sst.Agents) != 1 || sst.Agents[0].Shadow == nil {
		t.Fatalf("no shadow summary in the status: %+v", sst)
	}
	sum := sst.Agents[0].Shadow
	t.Logf("shadow summary: batches %d, active %d events %d anomalies, shadow %d events %d anomalies", sum.Batches,
		sum.Active.Events, sum.Active.Anomalies, sum.Shadow.Events, sum.Shadow.Anomalies)
	if !strings.Contains(sst.StateReason, "exceeds 2 x active rate") || sum.Shadow.Events < 1000 ||
		sum.Shadow.Events != sum.Active.Events || sum.Shadow.Anomalies <= 2*sum.Active.Anomalies {
		t.Errorf("shadow rollout status %+v", sst)
	}
	waitFor(t, 60*time.Second, func() string { return "agent stopped the shadow model\n" + tail(ag.log, 30) }, func() bool {
		return grepLog(ag.log, "shadow model stopped")
	})
	waitFor(t, 30*time.Second, func() string { return "file_shadow_anomalies reported" }, func() bool {
		return d.agentCounters(id)["file_shadow_anomalies"] > 0
	})
	waitFor(t, 30*time.Second, models, hasModels("fa-site@100"))

	// A model that fails: fa-site@102's graph scores NaN. The server's smoke test refuses it at
	// publish; published with --no-smoke, it reaches the agent, which loads it into the running
	// plugin, sees the probe batch's scores are not finite, and loads fa-site@100 back.
	broken := faSiteModel(102, nanGraph(t, bb.Model))
	if out, errOut, err := d.ctl("", "model", "publish", broken); err == nil || !strings.Contains(out+errOut, "not finite") {
		t.Fatalf("publish of a model scoring NaN: %v\n%s%s", err, out, errOut)
	}
	d.publish(broken, "--no-smoke")
	rb := d.rollout("--model", "fa-site@102", "--agents", id)
	rbst := d.waitStates(rb, 90*time.Second, map[string]string{id: "rolled_back"})
	t.Logf("fa-site@102: %s", rbst[id][1])
	if !strings.Contains(rbst[id][1], "not finite") || !strings.Contains(rbst[id][1], "rolled back to fa-site-100") {
		t.Errorf("rollback reason %q", rbst[id][1])
	}
	waitFor(t, 30*time.Second, models, hasModels("fa-site@100"))

	// The running plugin scores with it: the attack's finding carries its name.
	time.Sleep(time.Second)
	n, err := filework.Ransomware(context.Background(), share, ".crypt", 9)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ransomware encrypted %d files", n)
	var fm map[string]int
	waitFor(t, 60*time.Second, func() string { b, _ := json.Marshal(fm); return "finding models " + string(b) }, func() bool {
		fm = d.findingModels(id)
		return fm["fa-site@100"] > 0
	})
	if fm["fa-site@99"] > 0 || fm["fa-site@101"] > 0 || fm["fa-site@102"] > 0 {
		t.Errorf("findings of the replaced, the shadow or the rolled-back model: %v", fm)
	}

	// After a restart, the pipeline starts with the activated model.
	ag.p.stop(t, 60*time.Second)
	st, err := os.Stat(ag.log)
	if err != nil {
		t.Fatal(err)
	}
	off := st.Size()
	restarted := func() string {
		b, _ := os.ReadFile(ag.log)
		if int64(len(b)) < off {
			return ""
		}
		return string(b[off:])
	}
	ag.run("--config", cfg, "--watch", root)
	ag.waitConnected()
	waitFor(t, 60*time.Second, restarted, func() bool { return strings.Contains(restarted(), `msg="fileactivity model"`) })
	if lg := restarted(); !regexp.MustCompile(`msg="fileactivity model" .*name=fa-site version=100 `).MatchString(lg) {
		t.Errorf("the restarted agent's fileactivity pipeline does not start with fa-site@100:\n%s", lg)
	}
	waitFor(t, 60*time.Second, models, hasModels("fa-site@100"))
}

// nanGraph returns the ONNX model with every float constant (initializer) set to NaN: a graph
// that ONNX Runtime loads and runs, and whose scores are all NaN.
func nanGraph(t *testing.T, model []byte) []byte {
	t.Helper()
	var m onnx.ModelProto
	if err := proto.Unmarshal(model, &m); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, in := range m.GetGraph().GetInitializer() {
		if in.GetDataType() != int32(onnx.TensorProto_FLOAT) {
			continue
		}
		nan := math.Float32bits(float32(math.NaN()))
		if raw := in.GetRawData(); len(raw) > 0 {
			for i := 0; i+4 <= len(raw); i += 4 {
				binary.LittleEndian.PutUint32(raw[i:], nan)
			}
		}
		for i := range in.FloatData {
			in.FloatData[i] = float32(math.NaN())
		}
		n++
	}
	if n == 0 {
		t.Fatal("no float initializer in the model")
	}
	out, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
