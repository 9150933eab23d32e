package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/uplink/uplinktest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = Main(context.Background(), append([]string{"--log-format", "text"}, args...), &o, &e)
	return code, o.String(), e.String()
}

func TestCLIEnrollAndStatus(t *testing.T) {
	srv := uplinktest.New(t, func(s *uplinktest.Server) { s.Token = "vge_abc.topsecret" })
	dir := filepath.Join(t.TempDir(), "state")

	code, _, stderr := runCLI(t, "enroll", "--server", srv.Addr, "--token", "vge_abc.wrong", "--ca-pin", srv.Pin(), "--state", dir)
	if code == 0 || !strings.Contains(stderr, "token_invalid") || !strings.Contains(stderr, "unknown, used or expired") {
		t.Fatalf("wrong token: code %d, stderr %q", code, stderr)
	}
	code, stdout, stderr := runCLI(t, "enroll", "--server", srv.Addr, "--token", srv.Token, "--ca-pin", srv.Pin(), "--state", dir)
	if code != 0 || !strings.Contains(stdout, "enrolled: agent a-") {
		t.Fatalf("enroll: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if strings.Contains(stderr, "topsecret") || strings.Contains(stdout, "topsecret") {
		t.Fatal("the token's secret appears in the output")
	}
	code, _, stderr = runCLI(t, "enroll", "--server", srv.Addr, "--token", srv.Token, "--ca-pin", srv.Pin(), "--state", dir)
	if code == 0 || !strings.Contains(stderr, "--force") {
		t.Fatalf("re-enroll without --force: code %d, stderr %q", code, stderr)
	}

	code, stdout, _ = runCLI(t, "status", "--json", "--state", dir, "--metrics", "off")
	if code != 0 {
		t.Fatalf("status: code %d", code)
	}
	var rep StatusReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout)
	}
	if !rep.Enrolled || rep.Entity != "acme" || rep.CertNotAfter.IsZero() || rep.Running {
		t.Fatalf("status %+v", rep)
	}
	code, stdout, _ = runCLI(t, "status", "--state", filepath.Join(t.TempDir(), "none"), "--metrics", "off")
	if code == 0 || !strings.Contains(stdout, "enrolled:     no") {
		t.Fatalf("status of an empty dir: code %d\n%s", code, stdout)
	}
}

func TestRunWithDemoGenerator(t *testing.T) {
	srv := uplinktest.New(t, func(s *uplinktest.Server) { s.Token, s.StatusIntervalMs = "vge_abc.topsecret", 200 })
	dir := filepath.Join(t.TempDir(), "state")
	if code, _, stderr := runCLI(t, "enroll", "--server", srv.Addr, "--token", srv.Token, "--ca-pin", srv.Pin(), "--state", dir); code != 0 {
		t.Fatalf("enroll: %s", stderr)
	}
	cfgFile := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfgFile, []byte("state_dir: "+dir+"\nmetrics:\n  listen: 127.0.0.1:0\ndemo:\n  rate: 500\nuplink:\n  backoff_min: 10ms\n  backoff_max: 100ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *Running, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, Options{Ready: func(r *Running) { ready <- r }}, slog.New(slog.DiscardHandler))
	}()
	var r *Running
	select {
	case r = <-ready:
	case err := <-done:
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run not ready")
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(srv.Findings()) < 200 {
		if time.Now().After(deadline) {
			t.Fatalf("server has %d findings", len(srv.Findings()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	f := srv.Finding(1)
	if f.Detector != "demo" || f.Context.GetSrcIp() == "" || len(f.TopFeatures) == 0 || f.Severity == wirev1.Severity_SEVERITY_UNSPECIFIED {
		t.Fatalf("demo finding %v", f)
	}
	// Status carries the pipeline's counters.
	deadline = time.Now().Add(30 * time.Second)
	for {
		var ok bool
		for _, s := range srv.Statuses() {
			if s.Counters["demo_findings_generated"] > 0 && s.Counters["findings_in"] > 0 {
				ok = true
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no status with pipeline counters")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r.FindingsIn() == 0 || r.Uplink.Stats().Acks == 0 {
		t.Fatal("running counters are zero")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop")
	}
	// Stopped: status reads the spool file itself.
	rep := collectStatus(context.Background(), &config.Config{StateDir: dir, Metrics: config.Metrics{Listen: "off"}})
	if rep.Spool == nil || rep.Spool.NextSeq < 200 || len(rep.Problems) != 0 {
		t.Fatalf("status after stop %+v", rep)
	}
}

func TestRunNotEnrolled(t *testing.T) {
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.Metrics.Listen = "off"
	err := Run(context.Background(), cfg, Options{}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "enroll first") {
		t.Fatalf("Run without identity: %v", err)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"50/s": 50, "0.5/s": 0.5, "10": 10} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"x/s", "-1/s", "1e9/s"} {
		if _, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) accepted", in)
		}
	}
}

// TestDependencies checks the house rules: the agent binary never links
// server code or ONNX Runtime, and builds without cgo.
func TestDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	cmd := exec.Command(goBin, "list", "-deps", "github.com/vigil-edge/vigil/agent/cmd/vigil-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/vigil-edge/vigil/server") || strings.Contains(dep, "onnxruntime") {
			t.Errorf("vigil-agent depends on %s", dep)
		}
	}
}

// slowStopSource appends one finding after its context ends, delay later, as
// the packet pipeline does after closing its plugin; appended holds the
// result of that append.
type slowStopSource struct {
	delay    time.Duration
	appended chan error
}

func (s *slowStopSource) Name() string { return "slow-stop" }

func (s *slowStopSource) Run(ctx context.Context, sink pipeline.Sink) error {
	<-ctx.Done()
	time.Sleep(s.delay)
	f := &wirev1.Finding{Detector: "slow-stop", Severity: wirev1.Severity_SEVERITY_HIGH, Count: 1, Score: 2, Threshold: 1,
		TimeUnixNano: time.Now().UnixNano(), Summary: "last finding"}
	err := sink.Append(context.Background(), []*wirev1.Finding{f})
	s.appended <- err
	return err
}

// TestRunWaitsForSourcesToFlush: Run keeps the spool open until its sources
// have stopped and appended their last findings (within sourceStopTimeout),
// and says so with an error when a source takes longer (its last findings
// are lost): it closed the spool after 10 s, under the packet pipeline's
// 30 s plugin close, and returned nil.
func TestRunWaitsForSourcesToFlush(t *testing.T) {
	old := sourceStopTimeout
	sourceStopTimeout = 2 * time.Second
	defer func() { sourceStopTimeout = old }()
	srv := uplinktest.New(t, func(s *uplinktest.Server) { s.Token = "vge_abc.topsecret" })
	for _, c := range []struct {
		name    string
		delay   time.Duration
		wantErr bool
	}{
		{"in time", 300 * time.Millisecond, false},
		{"too slow", 4 * time.Second, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if code, _, stderr := runCLI(t, "enroll", "--server", srv.Addr, "--token", srv.Token, "--ca-pin", srv.Pin(), "--state", dir); code != 0 {
				t.Fatalf("enroll: %s", stderr)
			}
			cfg := config.Default()
			cfg.StateDir = dir
			cfg.Metrics.Listen = "off"
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			src := &slowStopSource{delay: c.delay, appended: make(chan error, 1)}
			ctx, cancel := context.WithCancel(context.Background())
			ready := make(chan *Running, 1)
			done := make(chan error, 1)
			go func() {
				done <- Run(ctx, cfg, Options{Sources: []pipeline.Source{src}, Ready: func(r *Running) { ready <- r }}, slog.New(slog.DiscardHandler))
			}()
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("Run returned early: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("Run not ready")
			}
			cancel()
			var err error
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("Run did not stop")
			}
			if c.wantErr {
				if err == nil || !strings.Contains(err.Error(), "did not stop") {
					t.Fatalf("Run returned %v, want an error saying the sources did not stop", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if aerr := <-src.appended; aerr != nil {
				t.Fatalf("the source's last append: %v", aerr)
			}
		})
	}
}

// modelSource is a pipeline.Source that reports the models it runs.
type modelSource struct{ refs []*wirev1.ModelRef }

func (modelSource) Name() string                             { return "models" }
func (modelSource) Run(context.Context, pipeline.Sink) error { return nil }
func (m modelSource) ActiveModels() []*wirev1.ModelRef       { return m.refs }

// TestReportedModels: Hello and Status report what the pipelines run, then
// the updater's active models of detectors no pipeline serves; never a model
// twice, never a model a pipeline replaced (before, an agent that had
// activated nethost@10 reported nethost@10 and its old nethost@9, or
// nethost@10 twice after a restart).
func TestReportedModels(t *testing.T) {
	ref := func(det, name string, v uint64) *wirev1.ModelRef {
		return &wirev1.ModelRef{Detector: det, Name: name, Version: v}
	}
	str := func(rs []*wirev1.ModelRef) string {
		var s []string
		for _, r := range rs {
			s = append(s, fmt.Sprintf("%s:%s@%d", r.Detector, r.Name, r.Version))
		}
		return strings.Join(s, " ")
	}
	for _, c := range []struct {
		name      string
		activated []*wirev1.ModelRef
		sources   []pipeline.Source
		want      string
	}{
		{"nothing", nil, nil, ""},
		{"updater only (air-gapped detector)", []*wirev1.ModelRef{ref("fileactivity", "fa", 5)}, nil, "fileactivity:fa@5"},
		{"pipeline runs the activated model",
			[]*wirev1.ModelRef{ref("netflow", "nethost", 10)},
			[]pipeline.Source{modelSource{[]*wirev1.ModelRef{ref("netflow", "nethost", 10)}}},
			"netflow:nethost@10"},
		{"pipeline still runs the old model",
			[]*wirev1.ModelRef{ref("netflow", "nethost", 10)},
			[]pipeline.Source{modelSource{[]*wirev1.ModelRef{ref("netflow", "nethost", 9)}}},
			"netflow:nethost@9"},
		{"two pipelines, one detector without a pipeline",
			[]*wirev1.ModelRef{ref("netflow", "nethost", 10), ref("fileactivity", "fa", 5), ref("dns", "d", 1)},
			[]pipeline.Source{
				modelSource{[]*wirev1.ModelRef{ref("netflow", "nethost", 10), ref("netflow", "netflow", 9)}},
				modelSource{[]*wirev1.ModelRef{ref("fileactivity", "fa", 5)}},
				&slowStopSource{},
			},
			"netflow:nethost@10 netflow:netflow@9 fileactivity:fa@5 dns:d@1"},
	} {
		if got := str(reportedModels(c.activated, c.sources)); got != c.want {
			t.Errorf("%s: reported %q, want %q", c.name, got, c.want)
		}
	}
}
