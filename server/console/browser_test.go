package console_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vigil-edge/vigil/server/api"
	"github.com/vigil-edge/vigil/server/console"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// The browser tests drive the console in headless Chromium, like
// test/e2e/console_browser_test.go, and are gated the same way.

const chromiumPath = "/usr/bin/chromium" // Debian's chromium

func needBrowser(t *testing.T) {
	t.Helper()
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("browser test: set VIGIL_E2E=1 (make test does); needs Debian's chromium")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no %s (apt-get install chromium)", chromiumPath)
	}
}

// xss is attacker-controlled text as agents report it. It must reach the
// page as text: no element is ever made from it.
const xss = `<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>`

type consoleEnv struct {
	db    *store.DB
	url   string
	token string // an analyst's
}

// startConsole serves the store through the API with the console, over TLS
// (HTTP/2, as vigil-server does). wrap, if not nil, wraps the handler.
func startConsole(t *testing.T, wrap func(http.Handler) http.Handler) *consoleEnv {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "vigil.db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tok, err := db.CreateUser(ctx, "ana", store.RoleAnalyst, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	a := store.Agent{ID: "a-1", Entity: "acme", Hostname: xss, CertSerial: "01", CertNotAfter: time.Now().Add(24 * time.Hour)}
	if err := db.RegisterAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchAgent(ctx, "a-1", time.Now(), store.AgentState{Version: xss,
		ActiveModels: []store.ModelRef{{Name: xss, Version: 1, Digest: "sha256:ab"}}}); err != nil {
		t.Fatal(err)
	}
	var h http.Handler = api.New(db, api.Options{Log: log, Console: console.Handler(), StreamPoll: 100 * time.Millisecond})
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &consoleEnv{db: db, url: srv.URL, token: tok}
}

// insert stores n findings of agent a-1 with sequence numbers from seq.
func (e *consoleEnv) insert(t *testing.T, seq, n int, summary func(i int) string) {
	t.Helper()
	now := time.Now()
	var fs []*wirev1.Finding
	for i := range n {
		fs = append(fs, &wirev1.Finding{Seq: uint64(seq + i), Detector: "netflow", TimeUnixNano: now.Add(time.Duration(i) * time.Millisecond).UnixNano(),
			Severity: wirev1.Severity_SEVERITY_HIGH, Score: 2, Threshold: 1, Count: 1,
			Model:       &wirev1.ModelRef{Name: xss, Version: 1, Digest: "sha256:ab"},
			Context:     &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", DstPort: 80, Proto: "tcp", Path: xss, SrcMac: xss},
			TopFeatures: []*wirev1.FeatureContribution{{Name: xss, Contribution: 0.5}},
			Summary:     summary(i)})
	}
	if _, err := e.db.InsertFindings(context.Background(), "a-1", "acme", fs); err != nil {
		t.Fatal(err)
	}
}

// browser starts headless Chromium (after the server, so that it closes
// first) and signs in.
func (e *consoleEnv) browser(t *testing.T) context.Context {
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
	if err := chromedp.Do(ctx, chromedp.Navigate(e.url+"/"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), e.token), chromedp.Click(chromedp.ID("signin"))); err != nil {
		t.Fatalf("sign in: %v", err)
	}
	return ctx
}

func pollTrue(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash + ' | ' + document.getElementById('main').innerText.slice(0, 300)`))
		t.Fatalf("%s: %v (page: %s)", what, err, state)
	}
}

func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// noMarkup: the page made no element from the payload, nothing of it ran,
// and it shows the payload literally.
func noMarkup(t *testing.T, ctx context.Context, page string) {
	t.Helper()
	if n := evalJS[int](t, ctx, `document.querySelectorAll('#main img, #main script, #main [onerror]').length`); n != 0 {
		t.Errorf("%s: %d elements made from finding text", page, n)
	}
	if v := evalJS[bool](t, ctx, `window.__xss === undefined`); !v {
		t.Errorf("%s: the payload ran", page)
	}
	if txt := evalJS[string](t, ctx, `document.getElementById('main').textContent`); !strings.Contains(txt, `<img src=x onerror="window.__xss=1">`) {
		t.Errorf("%s does not show the payload as text: %.300s", page, txt)
	}
}

// TestBrowserAttackerTextStaysText: markup in what agents report (summary,
// path, MAC, model name, feature name, host name, version), listed, streamed
// live and opened, is shown as text.
func TestBrowserAttackerTextStaysText(t *testing.T) {
	needBrowser(t)
	e := startConsole(t, nil)
	e.insert(t, 1, 3, func(int) string { return xss })
	ctx := e.browser(t)
	pollTrue(t, ctx, "findings listed", `document.querySelectorAll('#findings tbody tr[data-id]').length === 3`)
	pollTrue(t, ctx, "live", `document.getElementById('live-state').textContent.includes('live')`)
	e.insert(t, 100, 1, func(int) string { return "LIVE " + xss })
	pollTrue(t, ctx, "live finding shown", `document.querySelector('#findings tbody tr').textContent.includes('LIVE')`)
	noMarkup(t, ctx, "findings")
	id := evalJS[string](t, ctx, `document.querySelector('#findings tbody tr[data-id]').dataset.id`)
	for _, p := range []struct{ hash, shown string }{{"#/finding/" + id, "#feature-chart"}, {"#/agents", "#agents"}} {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`location.hash = '`+p.hash+`'`)); err != nil {
			t.Fatal(err)
		}
		pollTrue(t, ctx, p.hash, `!!document.querySelector('`+p.shown+`')`)
		noMarkup(t, ctx, p.hash)
	}
}

// liveRows is the most rows the findings list keeps while findings stream in
// (LIVE_ROWS in app.js).
const liveRows = 500

// TestBrowserLiveListBounded: a findings list left open all day must not
// keep every streamed finding: past liveRows rows, each streamed finding
// drops the oldest row, and "Load more" brings the dropped ones back. The
// list kept every finding the stream ever sent (the DOM and the set of seen
// ids grew without bound).
func TestBrowserLiveListBounded(t *testing.T) {
	needBrowser(t)
	e := startConsole(t, nil)
	e.insert(t, 1, 20, func(i int) string { return fmt.Sprintf("old %d", i) })
	ctx := e.browser(t)
	pollTrue(t, ctx, "findings listed", `document.querySelectorAll('#findings tbody tr[data-id]').length === 20`)
	pollTrue(t, ctx, "live", `document.getElementById('live-state').textContent.includes('live')`)
	const n = 700
	e.insert(t, 1000, n, func(i int) string { return fmt.Sprintf("live %d", i) })
	pollTrue(t, ctx, "newest streamed finding on top", fmt.Sprintf(`document.querySelector('#findings tbody tr').textContent.includes('live %d')`, n-1))
	time.Sleep(500 * time.Millisecond) // let any straggling events land
	if rows := evalJS[int](t, ctx, `document.querySelectorAll('#findings tbody tr').length`); rows > liveRows {
		t.Fatalf("the live list holds %d rows (at most %d)", rows, liveRows)
	}
	// The rows dropped are reachable again, in order, without duplicates.
	pollTrue(t, ctx, "load more offered", `!document.getElementById('more').hidden`)
	for range 10 {
		if evalJS[bool](t, ctx, `document.getElementById('more').hidden`) {
			break
		}
		before := evalJS[int](t, ctx, `document.querySelectorAll('#findings tbody tr[data-id]').length`)
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("more"))); err != nil {
			t.Fatal(err)
		}
		pollTrue(t, ctx, "more loaded", fmt.Sprintf(`document.querySelectorAll('#findings tbody tr[data-id]').length > %d || document.getElementById('more').hidden`, before))
	}
	ids := evalJS[[]int64](t, ctx, `[...document.querySelectorAll('#findings tbody tr[data-id]')].map(r => Number(r.dataset.id))`)
	if len(ids) != n+20 {
		t.Errorf("after loading all: %d rows, want %d", len(ids), n+20)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] != ids[i-1]-1 {
			t.Errorf("row %d: id %d after %d (gap or duplicate)", i, ids[i], ids[i-1])
			break
		}
	}
}

// TestBrowserOvertakenRouteStaysQuiet: when the analyst moves on before a
// findings page has loaded (a slow query), that page must neither draw over
// the page now shown nor start a live stream. It did both: its stream
// replaced the current page's in stopLive and was never stopped, so every
// quick filter change leaked a connection (and a slot of the server's
// MaxStreams) that fed a detached table for as long as the tab stayed open.
func TestBrowserOvertakenRouteStaysQuiet(t *testing.T) {
	needBrowser(t)
	var streams atomic.Int32
	var slow atomic.Bool
	e := startConsole(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/api/v1/findings/stream":
				streams.Add(1)
				defer streams.Add(-1)
			case "/api/v1/entities", "/api/v1/findings":
				if slow.Load() {
					time.Sleep(time.Second)
				}
			}
			next.ServeHTTP(w, r)
		})
	})
	e.insert(t, 1, 5, func(i int) string { return fmt.Sprintf("f %d", i) })
	ctx := e.browser(t)
	pollTrue(t, ctx, "live", `document.getElementById('live-state') && document.getElementById('live-state').textContent.includes('live')`)
	time.Sleep(time.Second)
	// Signing in routes twice (directly and on the hash change).
	if n := streams.Load(); n != 1 {
		t.Errorf("after sign-in: %d live streams open, want 1", n)
	}

	// Three filter changes in quick succession: one stream stays.
	slow.Store(true)
	for _, sev := range []string{"low", "medium", "high"} {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`location.hash = '#/findings?severity=`+sev+`'`)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	pollTrue(t, ctx, "last filter shown and live", `(document.getElementById('filter-severity') || {}).value === 'high' &&
		(document.getElementById('live-state') || {textContent: ''}).textContent.includes('live')`)
	time.Sleep(3 * time.Second) // every overtaken page has finished by now
	if n := streams.Load(); n != 1 {
		t.Errorf("%d live streams open, want 1", n)
	}

	// Away from the findings before they load: the agents page stays.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`location.hash = '#/findings?severity=low'`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`location.hash = '#/agents'`)); err != nil {
		t.Fatal(err)
	}
	pollTrue(t, ctx, "agents shown", `!!document.getElementById('agents')`)
	time.Sleep(3 * time.Second)
	if !evalJS[bool](t, ctx, `!!document.getElementById('agents') && !document.getElementById('findings')`) {
		t.Errorf("the overtaken findings page drew over the agents page")
	}
	if n := streams.Load(); n != 0 {
		t.Errorf("%d live streams open on the agents page, want 0", n)
	}
}
