package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	agentapp "github.com/vigil-edge/vigil/agent/app"
	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/enroll"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/state"
	"github.com/vigil-edge/vigil/agent/suppress"
	"github.com/vigil-edge/vigil/server/endpoint"
	"github.com/vigil-edge/vigil/server/servertest"
	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// handSource is a finding source the test drives: it hands its sink out.
type handSource struct{ sink chan pipeline.Sink }

func (s *handSource) Name() string { return "e2e-hand" }

func (s *handSource) Run(ctx context.Context, sink pipeline.Sink) error {
	s.sink <- sink
	<-ctx.Done()
	return nil
}

// supAgent is a real agent (agent/app.Run) with a hand-driven source.
type supAgent struct {
	id      string
	dir     string
	sink    pipeline.Sink
	running *agentapp.Running
}

func startSupAgent(t *testing.T, srv *servertest.Server, entity string) *supAgent {
	t.Helper()
	log := testLog()
	dir := filepath.Join(t.TempDir(), "agent-"+entity)
	ctx := context.Background()
	id, err := enroll.Enroll(ctx, enroll.Options{Server: srv.Addr, Token: srv.EnrollToken(t, entity), Pin: srv.Pin,
		StateDir: state.Dir(dir), Timeout: 10 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.StateDir = dir
	cfg.Metrics.Listen = "off"
	cfg.Uplink.BackoffMin = config.Duration(10 * time.Millisecond)
	cfg.Uplink.BackoffMax = config.Duration(200 * time.Millisecond)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	src := &handSource{sink: make(chan pipeline.Sink, 1)}
	ready := make(chan *agentapp.Running, 1)
	done := make(chan error, 1)
	rctx, cancel := context.WithCancel(ctx)
	go func() {
		done <- agentapp.Run(rctx, cfg, agentapp.Options{Sources: []pipeline.Source{src}, Ready: func(r *agentapp.Running) { ready <- r }}, log)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent %s: %v", id.AgentID, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("agent %s did not stop", id.AgentID)
		}
	})
	a := &supAgent{id: id.AgentID, dir: dir}
	select {
	case a.running = <-ready:
	case err := <-done:
		t.Fatalf("agent run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("agent not ready")
	}
	a.sink = <-src.sink
	return a
}

// emit raises one finding of the test detector towards dst port.
func (a *supAgent) emit(t *testing.T, port uint32, summary string) {
	t.Helper()
	f := &wirev1.Finding{Detector: "e2e-sup", Severity: wirev1.Severity_SEVERITY_HIGH, Count: 1, Score: 2, Threshold: 1,
		TimeUnixNano: time.Now().UnixNano(), Summary: summary,
		Context: &wirev1.FindingContext{SrcIp: "10.0.0.1", DstIp: "10.0.0.2", SrcPort: 40000 + port, DstPort: port, Proto: "tcp"}}
	if err := a.sink.Append(context.Background(), []*wirev1.Finding{f}); err != nil {
		t.Fatal(err)
	}
}

// callAPI calls the server's HTTPS API with token.
func callAPI(t *testing.T, srv *servertest.Server, token, method, path string, body any, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, srv.APIURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Roots, MinVersion: tls.VersionTLS13}}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// summaries are the summaries of agentID's stored findings.
func summaries(t *testing.T, srv *servertest.Server, agentID string) map[string]bool {
	out := map[string]bool{}
	for _, f := range srv.ListFindings(t, store.FindingFilter{AgentID: agentID, Limit: 1000}) {
		out[f.Summary] = true
	}
	return out
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// TestFalsePositiveSuppression: an analyst marks a finding false_positive
// through the API; within seconds the agents of that entity (real agents,
// agent/app.Run, against the real server in process) drop new matching
// findings and count them, while other findings still arrive, and an agent
// of another entity is unaffected; lifting the suppression restores
// delivery. The set is kept in the agent's state directory.
func TestFalsePositiveSuppression(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{Endpoint: func(c *endpoint.Config) { c.StatusInterval = 200 * time.Millisecond }})
	a1 := startSupAgent(t, srv, "acme")
	a2 := startSupAgent(t, srv, "acme")
	b := startSupAgent(t, srv, "beta")
	analyst, err := srv.Store.CreateUser(context.Background(), "ann", store.RoleAnalyst, "", "e2e")
	if err != nil {
		t.Fatal(err)
	}
	const push = 10 * time.Second // "within seconds"

	// The finding the analyst will call a false positive.
	a1.emit(t, 22, "first")
	waitUntil(t, 30*time.Second, "first finding stored", func() bool { return summaries(t, srv, a1.id)["first"] })
	fs := srv.ListFindings(t, store.FindingFilter{AgentID: a1.id})
	if len(fs) != 1 {
		t.Fatalf("%d findings", len(fs))
	}
	callAPI(t, srv, analyst, http.MethodPost, fmt.Sprintf("/api/v1/findings/%d/triage", fs[0].ID),
		map[string]any{"status": "false_positive", "comment": "nightly backup"}, nil)
	d := waitUntil(t, push, "acme agents got the suppression", func() bool {
		return a1.running.Suppressions.Len() == 1 && a2.running.Suppressions.Len() == 1
	})
	t.Logf("suppression reached the agents %v after the triage", d)

	// Matching findings are dropped and counted; others still arrive. The
	// spool is first in, first out: once "other" is stored, "again" would be.
	a1.emit(t, 22, "again")
	a1.emit(t, 80, "other")
	a2.emit(t, 22, "again-a2")
	a2.emit(t, 443, "other-a2")
	waitUntil(t, 30*time.Second, "non-matching findings stored", func() bool {
		return summaries(t, srv, a1.id)["other"] && summaries(t, srv, a2.id)["other-a2"]
	})
	if summaries(t, srv, a1.id)["again"] || summaries(t, srv, a2.id)["again-a2"] {
		t.Fatal("a suppressed finding reached the server")
	}
	if n := a1.running.Suppressions.Suppressed(); n != 1 {
		t.Fatalf("a1 suppressed %d, want 1", n)
	}
	if n := a2.running.Suppressions.Suppressed(); n != 1 {
		t.Fatalf("a2 suppressed %d, want 1", n)
	}
	// The counter reaches the server in Status.
	waitUntil(t, 30*time.Second, "findings_suppressed in the agent's status", func() bool {
		ag, err := srv.Store.GetAgent(context.Background(), a1.id)
		return err == nil && ag.Counters["findings_suppressed"] == 1
	})
	// The other entity's agent is unaffected.
	b.emit(t, 22, "beta-same-context")
	waitUntil(t, 30*time.Second, "beta's finding stored", func() bool { return summaries(t, srv, b.id)["beta-same-context"] })
	if b.running.Suppressions.Len() != 0 || b.running.Suppressions.Suppressed() != 0 {
		t.Fatalf("beta agent: %d rules, %d suppressed", b.running.Suppressions.Len(), b.running.Suppressions.Suppressed())
	}
	// The set is kept in the state directory for restarts and offline time.
	kept, err := suppress.Load(filepath.Join(a1.dir, suppress.FileName))
	if err != nil || len(kept.Rules) != 1 || kept.Rules[0].DstPort != 22 || kept.Rules[0].Detector != "e2e-sup" {
		t.Fatalf("kept set %+v %v", kept, err)
	}
	if _, err := os.Stat(filepath.Join(b.dir, suppress.FileName)); err != nil {
		t.Fatalf("beta agent keeps no (empty) set: %v", err)
	}

	// Lifting restores delivery.
	var list struct {
		Suppressions []store.Suppression `json:"suppressions"`
	}
	callAPI(t, srv, analyst, http.MethodGet, "/api/v1/suppressions?entity=acme", nil, &list)
	if len(list.Suppressions) != 1 {
		t.Fatalf("suppressions %+v", list.Suppressions)
	}
	callAPI(t, srv, analyst, http.MethodPost, fmt.Sprintf("/api/v1/suppressions/%d/lift", list.Suppressions[0].ID), nil, nil)
	d = waitUntil(t, push, "the lift reached the agents", func() bool {
		return a1.running.Suppressions.Len() == 0 && a2.running.Suppressions.Len() == 0
	})
	t.Logf("lift reached the agents %v after the request", d)
	a1.emit(t, 22, "after-lift")
	waitUntil(t, 30*time.Second, "finding after the lift stored", func() bool { return summaries(t, srv, a1.id)["after-lift"] })
	if n := a1.running.Suppressions.Suppressed(); n != 1 {
		t.Fatalf("a1 suppressed %d after the lift, want still 1", n)
	}
	if kept, err := suppress.Load(filepath.Join(a1.dir, suppress.FileName)); err != nil || len(kept.Rules) != 0 {
		t.Fatalf("kept set after the lift %+v %v", kept, err)
	}
	if !strings.HasPrefix(a1.id, "a-") {
		t.Fatalf("agent id %q", a1.id)
	}
}
