package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/test/filework"
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
	faSite := func(ver uint64) string {
		m := bb.Manifest
		m.Name, m.Version = "fa-site", ver
		m.Created = time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
		m.Expires = m.Created.Add(30 * 24 * time.Hour)
		dir := filepath.Join(t.TempDir(), "fa")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p, err := bundle.WriteFile(dir, bb.Model, &m)
		if err != nil {
			t.Fatal(err)
		}
		if err := sign.SignBundle(p, k.a); err != nil {
			t.Fatal(err)
		}
		return p
	}
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
	ag.run("--watch", root)
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
	if fm["fa-site@99"] > 0 {
		t.Errorf("findings of the replaced model after the update: %v", fm)
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
	ag.run("--watch", root)
	ag.waitConnected()
	waitFor(t, 60*time.Second, restarted, func() bool { return strings.Contains(restarted(), `msg="fileactivity model"`) })
	if lg := restarted(); !regexp.MustCompile(`msg="fileactivity model" .*name=fa-site version=100 `).MatchString(lg) {
		t.Errorf("the restarted agent's fileactivity pipeline does not start with fa-site@100:\n%s", lg)
	}
	waitFor(t, 60*time.Second, models, hasModels("fa-site@100"))
}
