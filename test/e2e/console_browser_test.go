package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vigil-edge/vigil/server/api"
	"github.com/vigil-edge/vigil/server/console"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// chromiumPath is Debian's chromium (apt-get install chromium).
const chromiumPath = "/usr/bin/chromium"

// consoleServer is the store, the API and the console as vigil-server
// serves them, over TLS, in process.
type consoleServer struct {
	db     *store.DB
	srv    *httptest.Server
	tokens map[string]string
}

func startConsoleServer(t *testing.T) *consoleServer {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "vigil.db"), testLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cs := &consoleServer{db: db, tokens: map[string]string{}}
	for _, u := range []struct{ name, role, entity string }{{"ana", store.RoleAnalyst, ""}, {"acme-admin", store.RoleEntityAdmin, "acme"}} {
		tok, err := db.CreateUser(ctx, u.name, u.role, u.entity, "test")
		if err != nil {
			t.Fatal(err)
		}
		cs.tokens[u.name] = tok
	}
	now := time.Now()
	for _, a := range []store.Agent{{ID: "a-ok", Entity: "acme", Hostname: "fw-1"}, {ID: "a-sick", Entity: "acme", Hostname: "fw-2"},
		{ID: "b-1", Entity: "beta", Hostname: "beta-sensor"}} {
		a.CertSerial, a.CertNotAfter = "01"+a.ID, now.Add(20*24*time.Hour)
		if err := db.RegisterAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	models := []store.ModelRef{{Name: "netflow-ae", Version: 3, Digest: "sha256:ab12"}}
	if err := db.TouchAgent(ctx, "a-ok", now, store.AgentState{Version: "0.7.0", ActiveModels: models,
		Spool: store.SpoolStats{Depth: 0, CapacityBytes: 1 << 20},
		// A calibrated sensor (agent/detect/calibration.go counters).
		Counters: map[string]uint64{"calibrated_nethost/v3": 1, "model_threshold_micro_nethost/v3": 50518,
			"threshold_micro_nethost/v3": 90686, "calibration_local_micro_nethost/v3": 90686, "calibration_samples_nethost/v3": 1079}}); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchAgent(ctx, "a-sick", now.Add(-time.Hour), store.AgentState{Version: "0.6.9", ActiveModels: models,
		Spool:    store.SpoolStats{Depth: 812, Dropped: 42, Bytes: 900 << 10, CapacityBytes: 1 << 20},
		Counters: map[string]uint64{"kernel_drops": 17}}); err != nil {
		t.Fatal(err)
	}
	sev := []wirev1.Severity{wirev1.Severity_SEVERITY_LOW, wirev1.Severity_SEVERITY_MEDIUM, wirev1.Severity_SEVERITY_HIGH, wirev1.Severity_SEVERITY_CRITICAL}
	for _, a := range []struct{ agent, entity, det string }{{"a-ok", "acme", "netflow"}, {"b-1", "beta", "fileactivity"}} {
		var fs []*wirev1.Finding
		for i := range 12 {
			fs = append(fs, &wirev1.Finding{Seq: uint64(i + 1), Detector: a.det, TimeUnixNano: now.Add(-time.Duration(12-i) * time.Minute).UnixNano(),
				Severity: sev[i%4], Score: 1 + float64(i)/4, Threshold: 1, Count: 3,
				Model:   &wirev1.ModelRef{Name: "netflow-ae", Version: 3, Digest: "sha256:ab12"},
				Context: &wirev1.FindingContext{SrcIp: "10.1.0." + fmt.Sprint(i+1), DstIp: "10.1.9.9", SrcPort: 40000, DstPort: 22, Proto: "tcp"},
				TopFeatures: []*wirev1.FeatureContribution{{Name: "syn_ratio", Contribution: 0.61}, {Name: "dst_port_entropy", Contribution: 0.27},
					{Name: "pkt_rate", Contribution: 0.08}},
				Summary: fmt.Sprintf("%s finding %d", a.entity, i+1)})
			if f := fs[len(fs)-1]; f.Severity == wirev1.Severity_SEVERITY_CRITICAL {
				// The source's traffic before its first anomalous packet.
				f.FirstSeenUnixNano = f.TimeUnixNano
				f.LeadInUnixNano, f.LeadInPackets, f.LeadInBytes = f.TimeUnixNano-8e9, 14, 840
			}
		}
		if _, err := db.InsertFindings(ctx, a.agent, a.entity, fs); err != nil {
			t.Fatal(err)
		}
	}
	h := api.New(db, api.Options{Log: testLog(), Console: console.Handler(), StreamPoll: 200 * time.Millisecond})
	cs.srv = httptest.NewUnstartedServer(h)
	cs.srv.EnableHTTP2 = true
	cs.srv.StartTLS()
	t.Cleanup(cs.srv.Close)
	return cs
}

func needBrowser(t *testing.T) {
	t.Helper()
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("browser test: set VIGIL_E2E=1 (make test does); needs Debian's chromium")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no %s (apt-get install chromium)", chromiumPath)
	}
}

// browser starts headless Chromium; call it after the server so that the
// browser (and its live stream) closes before the server does.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("headless", true),
		chromedp.IgnoreCertErrors, // httptest's self-signed certificate
		chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	return ctx
}

func artifactsDir(t *testing.T) string {
	dir := filepath.Join("..", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(artifactsDir(t), name+".png")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("screenshot %s", p)
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// pollTrue waits until the JavaScript expression is true.
func pollTrue(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		shot(t, ctx, "console-failed")
		t.Fatalf("%s: %v", what, err)
	}
}

func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	must(t, "evaluate "+expr, err)
	return v
}

// TestConsoleBrowser drives the console in headless Chromium as acme's
// entity-admin: sign in, filter, open a finding, mark it false positive,
// watch a new finding arrive live, see the agents' health, and check that
// nothing of beta ever shows.
func TestConsoleBrowser(t *testing.T) {
	needBrowser(t)
	cs := startConsoleServer(t)
	ctx := browser(t)
	bg := context.Background()

	// Sign in.
	must(t, "open console", chromedp.Do(ctx, chromedp.Navigate(cs.srv.URL+"/")))
	must(t, "sign-in form", chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("token"))))
	shot(t, ctx, "console-00-signin")
	must(t, "type token", chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), cs.tokens["acme-admin"]), chromedp.Click(chromedp.ID("signin"))))
	pollTrue(t, ctx, "findings listed", `document.querySelectorAll('#findings tbody tr[data-id]').length === 12`)
	pollTrue(t, ctx, "live stream connected", `document.getElementById('live-state').textContent.includes('live')`)
	body := evalJS[string](t, ctx, `document.body.innerText`)
	if strings.Contains(body, "beta") || strings.Contains(body, "b-1") {
		t.Errorf("entity-admin of acme sees beta: %.500s", body)
	}
	if n := evalJS[int](t, ctx, `document.querySelectorAll('#filter-entity').length`); n != 0 {
		t.Errorf("entity-admin gets an entity selector")
	}
	if tok := evalJS[string](t, ctx, `location.href + document.cookie`); strings.Contains(tok, "vgu_") {
		t.Errorf("token in URL or cookie: %s", tok)
	}
	shot(t, ctx, "console-01-findings")

	// Filter: critical only.
	must(t, "filter", chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("filter-severity"), "critical"), chromedp.Click(chromedp.ID("filter-apply"))))
	pollTrue(t, ctx, "filtered to critical", `(() => { const r = document.querySelectorAll('#findings tbody tr[data-id]');
		return r.length === 3 && [...r].every(x => x.querySelector('.sev-critical')); })()`)
	if h := evalJS[string](t, ctx, `location.hash`); h != "#/findings?severity=critical" {
		t.Errorf("hash %q", h)
	}
	shot(t, ctx, "console-02-filtered")

	// Open one.
	firstID := evalJS[string](t, ctx, `document.querySelector('#findings tbody tr[data-id]').dataset.id`)
	must(t, "open finding", chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#findings tbody tr[data-id] a.finding-link"))))
	pollTrue(t, ctx, "finding page", `!!document.getElementById('feature-chart') && document.querySelectorAll('#feature-chart rect.bar').length === 3`)
	if txt := evalJS[string](t, ctx, `document.getElementById('explanation').textContent`); !strings.Contains(txt, "syn_ratio") {
		t.Errorf("explanation %q", txt)
	}
	if txt := evalJS[string](t, ctx, `(document.getElementById('lead-in') || {}).textContent + ' / ' + (document.getElementById('lead-in-packets') || {}).textContent`); !strings.HasSuffix(txt, "Z / 14") {
		t.Errorf("lead-in %q", txt)
	}
	if txt := evalJS[string](t, ctx, `document.body.innerText`); !strings.Contains(txt, "sha256:ab12") || !strings.Contains(txt, "10.1.9.9:22") {
		t.Errorf("provenance or context missing: %.400s", txt)
	}
	shot(t, ctx, "console-03-finding")

	// Mark it false positive.
	must(t, "comment", chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("triage-comment"), "lab scanner")))
	must(t, "false positive", chromedp.Do(ctx, chromedp.Click(chromedp.ID("triage-fp"))))
	pollTrue(t, ctx, "status false positive", `document.getElementById('status') && document.getElementById('status').textContent === 'false positive'`)
	pollTrue(t, ctx, "history shows it", `document.getElementById('notes').textContent.includes('lab scanner')`)
	var id int64
	fmt.Sscan(firstID, &id)
	f, err := cs.db.GetFinding(bg, id)
	if err != nil || f.Status != store.StatusFalsePositive {
		t.Errorf("stored status %q %v", f.Status, err)
	}
	sups, _ := cs.db.ListSuppressions(bg, store.SuppressionFilter{Entity: "acme", Active: true})
	if len(sups) != 1 || sups[0].FindingID != id {
		t.Errorf("suppressions %+v", sups)
	}
	shot(t, ctx, "console-04-false-positive")
	// The suppression it made is listed (one page: no "Load more").
	must(t, "suppressions page", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#nav a[data-page="suppressions"]`))))
	pollTrue(t, ctx, "suppression listed", `(() => { const t = document.getElementById('suppressions'); const m = document.getElementById('suppressions-more');
		return !!t && !!m && m.hidden && t.querySelectorAll('tbody tr').length === 1 && t.querySelector('tbody tr a').textContent === '`+firstID+`'; })()`)

	// A new finding appears live (and beta's does not).
	must(t, "back to list", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#nav a[data-page="findings"]`))))
	pollTrue(t, ctx, "list again", `document.querySelectorAll('#findings tbody tr[data-id]').length === 12`)
	pollTrue(t, ctx, "live again", `document.getElementById('live-state').textContent.includes('live')`)
	ingest := func(agent, entity string, seq uint64, summary string) time.Time {
		at := time.Now()
		_, err := cs.db.InsertFindings(bg, agent, entity, []*wirev1.Finding{{Seq: seq, Detector: "netflow", TimeUnixNano: at.UnixNano(),
			Severity: wirev1.Severity_SEVERITY_CRITICAL, Score: 9, Threshold: 1, Summary: summary}})
		must(t, "insert", err)
		return at
	}
	ingest("b-1", "beta", 500, "BETA-LIVE-SECRET")
	at := ingest("a-ok", "acme", 500, "ACME-LIVE-1")
	pollTrue(t, ctx, "live finding shown", `document.querySelector('#findings tbody tr').textContent.includes('ACME-LIVE-1')`)
	t.Logf("live finding on screen %s after commit (poll interval 200ms)", time.Since(at).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	if txt := evalJS[string](t, ctx, `document.body.innerText`); strings.Contains(txt, "BETA-LIVE-SECRET") {
		t.Errorf("beta's live finding reached acme's console")
	}
	shot(t, ctx, "console-05-live")

	// Agents: problems first.
	must(t, "agents", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#nav a[data-page="agents"]`))))
	pollTrue(t, ctx, "agents table", `document.querySelectorAll('#agents tbody tr[data-agent]').length === 2`)
	first := evalJS[string](t, ctx, `document.querySelector('#agents tbody tr').dataset.agent + ' ' + document.querySelector('#agents tbody tr').textContent`)
	if !strings.HasPrefix(first, "a-sick ") || !strings.Contains(first, "offline") || !strings.Contains(first, "42 findings dropped") {
		t.Errorf("first agent row: %s", first)
	}
	if txt := evalJS[string](t, ctx, `document.querySelector('#agents tr[data-agent="a-ok"] .calibration').textContent`); txt != "nethost/v3: threshold 0.05052 → 0.09069 (local)" {
		t.Errorf("calibration of a-ok: %q", txt)
	}
	if txt := evalJS[string](t, ctx, `document.getElementById('health-summary').textContent`); !strings.Contains(txt, "1ok") {
		t.Errorf("health summary %q", txt)
	}
	shot(t, ctx, "console-06-agents")

	// Charts and models render (acme only).
	must(t, "charts", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#nav a[data-page="charts"]`))))
	pollTrue(t, ctx, "chart drawn", `document.querySelectorAll('#chart-entity polyline').length === 1 && document.querySelectorAll('#chart-detector polyline').length === 1`)
	shot(t, ctx, "console-07-charts")
	must(t, "models", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#nav a[data-page="models"]`))))
	pollTrue(t, ctx, "models page", `!!document.getElementById('rollouts')`)

	// The CSP held: no violation was reported.
	if n := evalJS[int](t, ctx, `performance.getEntriesByType('resource').filter(e => !e.name.startsWith(location.origin)).length`); n != 0 {
		t.Errorf("%d requests left the origin", n)
	}

	// Sign out: the token is gone from the tab.
	must(t, "sign out", chromedp.Do(ctx, chromedp.Click(chromedp.ID("signout"))))
	pollTrue(t, ctx, "signed out", `!!document.getElementById('token') && sessionStorage.length === 0`)
}

// TestConsoleAnalystSeesAll: an analyst's console lists every entity and
// offers the entity filter.
func TestConsoleAnalystSeesAll(t *testing.T) {
	needBrowser(t)
	cs := startConsoleServer(t)
	ctx := browser(t)
	must(t, "open", chromedp.Do(ctx, chromedp.Navigate(cs.srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), cs.tokens["ana"]), chromedp.Click(chromedp.ID("signin"))))
	pollTrue(t, ctx, "all findings", `document.querySelectorAll('#findings tbody tr[data-id]').length === 24`)
	must(t, "filter beta", chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("filter-entity"), "beta"), chromedp.Click(chromedp.ID("filter-apply"))))
	pollTrue(t, ctx, "beta only", `(() => { const r = [...document.querySelectorAll('#findings tbody tr[data-id]')];
		return r.length === 12 && r.every(x => x.children[2].textContent === 'beta'); })()`)
	// A bad token is refused with a clear message.
	must(t, "sign out", chromedp.Do(ctx, chromedp.Click(chromedp.ID("signout"))))
	must(t, "bad token", chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), "vgu_abc.def"), chromedp.Click(chromedp.ID("signin"))))
	pollTrue(t, ctx, "refused", `document.getElementById('signin-error').textContent.includes('refused')`)
	shot(t, ctx, "console-08-analyst-refused")
}
