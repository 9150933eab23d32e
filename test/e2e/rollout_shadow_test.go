package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
)

// shadowAgentStatus is one agent of `vigilctl rollout status --json` of a shadow rollout.
type shadowAgentStatus struct {
	AgentID string `json:"agent_id"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
	Shadow  *struct {
		Batches uint64 `json:"batches"`
		Active  struct {
			Events    uint64  `json:"events"`
			Anomalies uint64  `json:"anomalies"`
			MaxP50    float64 `json:"max_p50"`
			MaxP99    float64 `json:"max_p99"`
			Max       float64 `json:"max"`
		} `json:"active"`
		Shadow struct {
			Events    uint64  `json:"events"`
			Anomalies uint64  `json:"anomalies"`
			MaxP50    float64 `json:"max_p50"`
			MaxP99    float64 `json:"max_p99"`
			Max       float64 `json:"max"`
		} `json:"shadow"`
	} `json:"shadow"`
}

type shadowRolloutStatus struct {
	ID           string  `json:"id"`
	State        string  `json:"state"`
	StateReason  string  `json:"state_reason"`
	Shadow       bool    `json:"shadow"`
	HaltFactor   float64 `json:"halt_factor"`
	ShadowTotals *struct {
		ActiveEvents    uint64 `json:"active_events"`
		ActiveAnomalies uint64 `json:"active_anomalies"`
		ShadowEvents    uint64 `json:"shadow_events"`
		ShadowAnomalies uint64 `json:"shadow_anomalies"`
	} `json:"shadow_totals"`
	Agents []shadowAgentStatus `json:"agents"`
}

// fastReportConfig writes an agent configuration that sends shadow summaries and Status every 2 s
// (defaults: 1 min and longer), so that shadow rollouts are judged within a test.
func fastReportConfig(t *testing.T) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("update:\n  shadow_report_interval: 2s\nuplink:\n  status_interval: 2s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (d *deployment) shadowStatus(id string) (shadowRolloutStatus, bool) {
	d.t.Helper()
	out, _, err := d.ctl("", "rollout", "status", "--id", id, "--json")
	var rs []shadowRolloutStatus
	if err != nil || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 {
		return shadowRolloutStatus{}, false
	}
	return rs[0], true
}

// agentView decodes the agent's entry of the API's agent list (GET /api/v1/agents) into v; false
// when the request fails or the agent is not listed.
func (d *deployment) agentView(agentID string, v any) bool {
	d.t.Helper()
	code, body, err := d.api(http.MethodGet, "agents", d.adminToken)
	if err != nil || code != http.StatusOK {
		return false
	}
	var resp struct {
		Agents []json.RawMessage `json:"agents"`
	}
	if json.Unmarshal(body, &resp) != nil {
		return false
	}
	for _, raw := range resp.Agents {
		var a struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(raw, &a) == nil && a.ID == agentID {
			return json.Unmarshal(raw, v) == nil
		}
	}
	return false
}

// agentCounters reads an agent's last reported counters from the server's API.
func (d *deployment) agentCounters(agentID string) map[string]uint64 {
	d.t.Helper()
	var a struct {
		Counters map[string]uint64 `json:"counters"`
	}
	if !d.agentView(agentID, &a) {
		return nil
	}
	return a.Counters
}

// findingModels counts an agent's stored findings per model "name@version", read through the
// API (GET /api/v1/findings, every page): the provenance an analyst sees.
func (d *deployment) findingModels(agentID string) map[string]int {
	d.t.Helper()
	out := map[string]int{}
	cursor := ""
	for page := 0; page < 1000; page++ {
		path := "findings?limit=500&agent=" + url.QueryEscape(agentID)
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		code, body, err := d.api(http.MethodGet, path, d.adminToken)
		if err != nil || code != http.StatusOK {
			d.t.Fatalf("GET %s: %d %v %s", path, code, err, body)
		}
		var resp struct {
			Findings []struct {
				Model struct {
					Name    string `json:"name"`
					Version uint64 `json:"version"`
				} `json:"model"`
			} `json:"findings"`
			NextCursor string `json:"next_cursor"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			d.t.Fatalf("GET %s: %v", path, err)
		}
		for _, f := range resp.Findings {
			out[f.Model.Name+"@"+itoa(f.Model.Version)]++
		}
		if resp.NextCursor == "" {
			return out
		}
		cursor = resp.NextCursor
	}
	d.t.Fatal("findings: more than 1000 pages")
	return nil
}

// TestRolloutShadowHalts: a canary agent captures on a veth pair (its peer in another network
// namespace serves HTTP, as in TestNetflowLive) with its active (baseline) model; a shadow rollout
// of the same model with a threshold a million times lower runs beside it on the same packets (a
// second plugin instance). Benign downloads and, every fifth round, a small nmap SYN scan feed both.
// The agent reports both models' counts and quantiles every 2 s (update.shadow_report_interval);
// the server judges them and, once the shadow alert rate exceeds 2 x the active one over at least
// 1,000 events, halts the rollout itself: state halted with the verdict, audited by "system", no
// longer offered, and the agent stops the shadow model (status "withdrawn"). Throughout, the
// active model raises its findings on the scans, and no finding of the shadow model reaches the
// server. (Loopback is no place for this: its 64 KiB frames are anomalous to every model.)
func TestRolloutShadowHalts(t *testing.T) {
	if os.Getenv(nfHelperEnv) == "1" {
		t.Skip("helper")
	}
	b := needBins(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, raw capture)")
	}
	for _, tool := range []string{"ip", "nmap", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	k := newUpdateKit(t, b)
	hostIf, peer := shadowVeth(t)
	d := newDeployment(t, b, "shadow.vigil")
	if out, err := exec.Command(b.server, "trust", "set", "--data", d.dir, "--pub", k.aPub).CombinedOutput(); err != nil {
		t.Fatalf("vigil-server trust set: %v\n%s", err, out)
	}
	d.start()
	canary := d.enroll("canary")
	installTrust(t, k, canary)
	cfg := fastReportConfig(t)
	canary.run("--config", cfg, "--iface", hostIf)
	canary.waitConnected()
	id := canary.id.AgentID
	active := k.base.Name + "@" + itoa(k.base.Version) // the baseline the packet pipeline runs

	// A shadow model whose graph the plugin cannot load: the agent refuses it with the reason, and
	// no shadow instance runs. Before, the instance started without it and passed its check.
	broken := k.base.Version + 5
	d.publish(k.bundle("nf-broken", broken, nil, []byte("not an onnx graph"), k.a), "--no-smoke")
	rb := d.rollout("--model", "nf-broken@"+itoa(broken), "--agents", id, "--shadow")
	if st := d.waitStates(rb, 60*time.Second, map[string]string{id: "rejected"}); !strings.Contains(st[id][1], "shadow plugin refused the model") {
		t.Fatalf("unloadable shadow model: %q", st[id][1])
	}

	// Shadow models run in memory only. A restarted agent lists no shadow rollout in its Hello,
	// so the server offers the rollout again and the agent resumes the comparison (a reconnect
	// that keeps the shadow model running is in the registry's TestShadowResumesAfterRestart).
	quiet := k.base.Version + 2
	d.publish(k.bundle(k.base.Name, quiet, nil, nil, k.a))
	rq := d.rollout("--model", k.base.Name+"@"+itoa(quiet), "--agents", id, "--shadow")
	d.waitStates(rq, 60*time.Second, map[string]string{id: "shadow"})
	running := "shadow model running"
	if n := strings.Count(readFile(t, canary.log), running); n != 1 {
		t.Fatalf("%d %q lines before the restart, want 1\n%s", n, running, tail(canary.log, 30))
	}
	canary.p.stop(t, 60*time.Second)
	canary.run("--config", cfg, "--iface", hostIf)
	canary.waitConnected()
	waitFor(t, 90*time.Second, func() string {
		return "shadow model resumed after the restart\n" + tail(canary.log, 30) + "\n" + tail(d.log, 20)
	}, func() bool {
		return strings.Count(readFile(t, canary.log), running) == 2
	})
	d.waitStates(rq, 60*time.Second, map[string]string{id: "shadow"})
	if !grepLog(d.log, "shadow rollout offered again") {
		t.Fatal("server log does not show the shadow rollout offered again")
	}

	// The too-sensitive model: the same network, threshold 1e-6 of the calibrated one.
	noisy := k.bundle(k.base.Name, k.base.Version+1, func(m *bundle.Manifest) { m.Threshold *= 1e-6 }, nil, k.a)
	d.publish(noisy)
	ro := d.rollout("--model", k.base.Name+"@"+itoa(k.base.Version+1), "--agents", id, "--shadow", "--halt-factor", "2")

	// Traffic until the rollout halts (bounded): downloads, and a small SYN scan every 5th round.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	scans := make(chan struct{})
	go func() {
		defer close(scans)
		sizes := []int{2_000, 40_000, 300_000, 1_000_000, 15_000}
		for i := 0; ctx.Err() == nil; i++ {
			url := fmt.Sprintf("http://%s:8080/file?size=%d", peer, sizes[i%len(sizes)])
			_ = exec.CommandContext(ctx, "curl", nfCurlArgs("-s", "-f", "-m", "10", "-o", "/dev/null", url)...).Run()
			if i%5 == 0 {
				_ = exec.CommandContext(ctx, "nmap", "-sS", "-n", "-Pn", "-T4", "--max-retries", "0", "-p", "1-50", peer).Run()
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()

	// The shadow model runs and reports before the rollout is judged or halted.
	var sawShadow bool
	var st shadowRolloutStatus
	waitFor(t, 3*time.Minute, func() string {
		b, _ := json.Marshal(st)
		return "shadow rollout halted: " + string(b) + "\n" + tail(canary.log, 40) + "\n" + tail(d.log, 20)
	}, func() bool {
		var ok bool
		if st, ok = d.shadowStatus(ro); !ok || len(st.Agents) != 1 {
			return false
		}
		if a := st.Agents[0]; a.State == "shadow" && a.Shadow != nil {
			sawShadow = true
		}
		return st.State == "halted"
	})
	t.Logf("halted: %s", st.StateReason)
	if !sawShadow {
		t.Log("the rollout halted before a shadow report was seen in flight; checking the kept reports")
	}
	if !strings.Contains(st.StateReason, "halted automatically") || !strings.Contains(st.StateReason, "exceeds 2 x active rate") {
		t.Fatalf("state reason %q", st.StateReason)
	}
	// Both models' counts and quantiles, as the agent reported them (kept with the halt).
	a := st.Agents[0]
	if a.Shadow == nil {
		t.Fatalf("no shadow summary in the status: %+v", a)
	}
	s := a.Shadow
	t.Logf("shadow summary: batches %d, active %d/%d p99<=%.4g max %.4g, shadow %d/%d p99<=%.4g max %.4g", s.Batches,
		s.Active.Anomalies, s.Active.Events, s.Active.MaxP99, s.Active.Max, s.Shadow.Anomalies, s.Shadow.Events, s.Shadow.MaxP99, s.Shadow.Max)
	if s.Batches == 0 || s.Active.Events < 1000 || s.Shadow.Events < 1000 || s.Shadow.Anomalies <= 2*s.Active.Anomalies ||
		s.Shadow.MaxP99 <= 0 || s.Active.MaxP99 <= 0 || s.Active.Max <= 0 {
		t.Fatalf("shadow summary %+v", *s)
	}
	if st.ShadowTotals == nil || st.ShadowTotals.ShadowEvents != s.Shadow.Events || st.HaltFactor != 2 {
		t.Fatalf("totals %+v factor %g", st.ShadowTotals, st.HaltFactor)
	}

	// The agent stops the shadow model when the server withdraws the rollout.
	waitFor(t, 60*time.Second, func() string { return "agent withdrew the shadow model\n" + tail(canary.log, 30) }, func() bool {
		st, _ = d.shadowStatus(ro)
		return len(st.Agents) == 1 && st.Agents[0].State == "withdrawn"
	})
	if !strings.Contains(st.Agents[0].Reason, "halted automatically") {
		t.Fatalf("withdrawn reason %q", st.Agents[0].Reason)
	}
	if !grepLog(canary.log, "shadow model stopped") {
		t.Fatal("agent log does not show the shadow model stopping")
	}
	// The text status says halted with the reason.
	text := d.mustCtl("", "rollout", "status", "--id", ro)
	if !strings.Contains(text, "halted") || !strings.Contains(text, "halted automatically") {
		t.Fatalf("rollout status text:\n%s", text)
	}
	// Audited by the system, and no longer among the rollouts offered.
	audit := d.mustCtl("", "audit", "list", "--json")
	var entries []struct {
		Actor  string `json:"actor"`
		Action string `json:"action"`
		Target string `json:"target"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal([]byte(audit), &entries); err != nil {
		t.Fatalf("audit list: %v", err)
	}
	found := false
	for _, e := range entries {
		if e.Action == "rollout.halted" && e.Target == ro {
			found = e.Actor == "system" && strings.Contains(e.Detail, "shadow alert rate")
		}
	}
	if !found {
		t.Fatalf("no rollout.halted audit entry by system for %s: %s", ro, audit)
	}

	// Active findings kept flowing, every one named after the active model (its provenance
	// through the API); none from the shadow model, whose anomalies the agent only counts
	// (shadow_anomalies).
	waitFor(t, 60*time.Second, func() string {
		return fmt.Sprintf("active findings stored (findings per model %v)\n%s", d.findingModels(id), tail(canary.log, 20))
	}, func() bool { return d.count(id) > 0 })
	var c map[string]uint64
	waitFor(t, 30*time.Second, func() string { return fmt.Sprintf("shadow counters reported: %v", c) }, func() bool {
		c = d.agentCounters(id)
		return c["shadow_anomalies"] > 0
	})
	cancel()
	<-scans
	models := d.findingModels(id)
	t.Logf("findings per model: %v (active model %s)", models, active)
	if n := models[k.base.Name+"@"+itoa(k.base.Version+1)]; n > 0 {
		t.Fatalf("%d findings of the shadow model reached the server: %v", n, models)
	}
	if len(models) != 1 || models[active] == 0 {
		t.Fatalf("findings per model %v: want findings of the active model %s only", models, active)
	}
	t.Logf("agent counters: scored %d, anomalies %d, findings %d, shadow_anomalies %d, shadow_dropped %d",
		c["scored"], c["anomalies"], c["netflow_findings"], c["shadow_anomalies"], c["shadow_dropped"])
	if c["anomalies"] == 0 || c["netflow_findings"] == 0 {
		t.Fatalf("the active model raised nothing: %v", c)
	}
}

// TestRolloutRollbackInstruction: an agent at version 2 gets version 1 through a rollout that
// carries a signed rollback instruction (`vigilctl rollout create --rollback-instruction`), verified
// by the server against its trust policy and by the agent against its own, and activates it.
// Without an instruction, or with one signed by a key the server trusts but the agent does not,
// the agent rejects it with the reason in `rollout status`; an unsigned or forged instruction is
// refused by the server at `rollout create`.
func TestRolloutRollbackInstruction(t *testing.T) {
	b := needBins(t)
	k := newUpdateKit(t, b)
	d := newDeployment(t, b, "rollback.vigil")
	if out, err := exec.Command(b.server, "trust", "set", "--data", d.dir, "--pub", k.aPub, "--pub", k.bPub).CombinedOutput(); err != nil {
		t.Fatalf("vigil-server trust set: %v\n%s", err, out)
	}
	d.start()
	ag := d.enroll("rb")
	installTrust(t, k, ag)
	ag.run()
	ag.waitConnected()
	id := ag.id.AgentID

	// Versions above the installed baseline (nethost-9.vgb), a floor on every agent.
	v1 := k.bundle("nf", 101, nil, nil, k.a)
	v2 := k.bundle("nf", 102, nil, nil, k.a)
	d.publish(v1)
	d.publish(v2)
	r2 := d.rollout("--model", "nf@102", "--agents", id)
	d.waitStates(r2, 60*time.Second, map[string]string{id: "active"})
	if v := activeVersion(t, ag.dir); v != 102 {
		t.Fatalf("active version %d, want 102", v)
	}

	dir := t.TempDir()
	instr := func(name string, signer string) string {
		p := filepath.Join(dir, name)
		d.mustCtl("", "model", "rollback", "--key", signer, "--out", p, "--ttl", "1h", "--reason", "v2 too noisy", v1)
		return p
	}
	viaB := instr("rb-b.json", filepath.Join(k.dir, "release-b.key")) // server trusts b, the agent does not
	viaA := instr("rb-a.json", filepath.Join(k.dir, "release-a.key"))

	// The server refuses an unsigned or forged instruction before any agent sees it.
	raw, err := os.ReadFile(viaA)
	if err != nil {
		t.Fatal(err)
	}
	var env bundle.Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	unsigned := env
	unsigned.Signatures = []bundle.Signature{}
	forged := env
	_, in, err := rollback.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	in.Reason = "forged"
	pl, _ := json.Marshal(in)
	forged.Payload = base64.StdEncoding.EncodeToString(pl)
	for name, e := range map[string]bundle.Envelope{"unsigned": unsigned, "forged": forged} {
		p := filepath.Join(dir, name+".json")
		data, _ := json.Marshal(e)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, stderr, err := d.ctl("", "rollout", "create", "--model", "nf@101", "--agents", id, "--rollback-instruction", p)
		if err == nil || !strings.Contains(stderr, "rollback instruction") {
			t.Fatalf("%s instruction: err %v, stderr %s", name, err, stderr)
		}
		t.Logf("%s instruction refused: %s", name, strings.TrimSpace(stderr))
	}

	cases := []struct {
		name  string
		args  []string
		state string
		want  string
	}{
		{"missing instruction", nil, "rejected", "not greater than the active version 102"},
		{"instruction not trusted by the agent", []string{"--rollback-instruction", viaB}, "rejected", "rollback instruction: signature check failed"},
		{"valid instruction", []string{"--rollback-instruction", viaA}, "active", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := d.rollout(append([]string{"--model", "nf@101", "--agents", id}, c.args...)...)
			st := d.waitStates(r, 60*time.Second, map[string]string{id: c.state})
			if !strings.Contains(st[id][1], c.want) {
				t.Fatalf("reason %q, want %q", st[id][1], c.want)
			}
			t.Logf("%s: %s %s", c.name, st[id][0], st[id][1])
			want := uint64(102)
			if c.state == "active" {
				want = 101
			}
			if v := activeVersion(t, ag.dir); v != want {
				t.Fatalf("active version %d, want %d", v, want)
			}
		})
	}
}

// shadowVeth makes a network namespace and a veth pair (wire-sized frames, as on a mirror port),
// starts TestNetflowLiveHelper's HTTP and DNS servers in the namespace, and returns the root
// end's interface and the peer's address.
func shadowVeth(t *testing.T) (hostIf, peer string) {
	t.Helper()
	const hostAddr, peerAddr = "10.99.78.1", "10.99.78.2"
	ns, hostIf := vethPair(t, "vgsh", hostAddr, peerAddr)
	helper := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestNetflowLiveHelper$")
	helper.Env = append(os.Environ(), nfHelperEnv+"=1")
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })
	waitFor(t, 60*time.Second, func() string { return "helper HTTP server in " + ns }, func() bool {
		return exec.Command("curl", nfCurlArgs("-s", "-f", "-m", "2", "-o", "/dev/null", "http://"+peerAddr+":8080/file?size=10")...).Run() == nil
	})
	return hostIf, peerAddr
}
