package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/filedetect"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/test/filework"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// vigilctlBinary returns vigilctl from the installation, or builds it.
func vigilctlBinary(t *testing.T, dir string) string {
	t.Helper()
	if p := filepath.Join(dir, "vigilctl"); nfFileExists(p) {
		return p
	}
	out := t.TempDir()
	cmd := exec.Command("go", "build", "-o", out+"/", "./server/cmd/vigilctl")
	cmd.Dir = nfRepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build vigilctl: %v\n%s", err, b)
	}
	return filepath.Join(out, "vigilctl")
}

// recordSession runs `vigil-agent record` on root while work runs, stops it
// with SIGINT and returns the trace's events.
func recordSession(t *testing.T, agent, root, out string, work func() error) []event.File {
	t.Helper()
	cmd := exec.Command(agent, "record", "--dir", root, "--out", out, "--duration", "0", "--log-level", "info", "--log-format", "text")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The watcher is set up before the recorder logs that it records.
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "recording file events") {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the recorder did not start within 30 s")
	}
	werr := work()
	time.Sleep(1500 * time.Millisecond) // debounce and batch windows
	_ = cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("record: %v; stdout %s", err, stdout.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the recorder did not stop within 30 s of SIGINT")
	}
	if werr != nil {
		t.Fatalf("workload: %v", werr)
	}
	if !strings.Contains(stdout.String(), "stopped by signal") {
		t.Errorf("record summary: %q", stdout.String())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	evs, err := event.ReadTrace(f, 0)
	if err != nil {
		t.Fatalf("trace %s: %v", out, err)
	}
	return evs
}

// TestFileactivitySiteModel is the release engineer's path to a model of
// one site's own file activity, with the real binaries: `vigil-agent
// record` on three folders while ordinary work runs (unpack, build, edit,
// office), `vigilctl model train --feature-set fileactivity/v1` on the
// traces (one held out for the threshold), then the agent's file pipeline
// with the real plugin and the new bundle finds a ransomware run.
func TestFileactivitySiteModel(t *testing.T) {
	in := fileactivityInstall(t)
	ctl := vigilctlBinary(t, in.Dir)
	traces := t.TempDir()
	ctx := context.Background()
	work := []filework.Workload{}
	for _, wl := range filework.Benign() {
		if wl.Name == "unpack" || wl.Name == "edit" || wl.Name == "office" || wl.Name == "build" {
			work = append(work, wl)
		}
	}
	if len(work) != 4 {
		t.Fatalf("benign workloads: %d of 4 found", len(work))
	}
	total := 0
	for s := range 3 {
		root := t.TempDir()
		evs := recordSession(t, in.Agent, root, filepath.Join(traces, fmt.Sprintf("day%d.vft.gz", s)), func() error {
			for i, wl := range work {
				if err := wl.Run(ctx, root, uint64(9000+10*s+i)); err != nil {
					return fmt.Errorf("%s: %w", wl.Name, err)
				}
			}
			return nil
		})
		for _, ev := range evs {
			if !strings.HasPrefix(ev.Path, root) && !strings.HasPrefix(ev.OldPath, root) {
				t.Fatalf("recorded an event outside the watched folder: %+v", ev)
			}
		}
		t.Logf("session %d: %d events recorded", s, len(evs))
		total += len(evs)
	}
	if total < 600 {
		t.Fatalf("only %d events recorded in three sessions", total)
	}

	models := t.TempDir()
	cmd := exec.Command(ctl, "model", "train", "--feature-set", "fileactivity/v1", "--benign", traces, "--quant", "int8-qdq",
		"--epochs", "20", "--name", "fileactivity", "--version", "7", "--out", models, "--json")
	cmd.Env = append(os.Environ(), "ONNXRUNTIME_LIB="+in.Inst.ORTLib)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("model train: %v\n%s", err, exitStderr(err))
	}
	var res struct {
		Bundle      string `json:"bundle"`
		HoldoutList string `json:"holdout_list"`
		TrainRows   int    `json:"train_rows"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Bundle == "" {
		t.Fatalf("model train output: %v: %s", err, out)
	}
	bi, err := filedetect.ReadBundleInfo(res.Bundle)
	if err != nil || bi.Version != 7 || bi.FeatureSet != "fileactivity/v1" {
		t.Fatalf("trained bundle: %+v, %v", bi, err)
	}
	t.Logf("trained %s on %d rows", filepath.Base(res.Bundle), res.TrainRows)

	// The bundle runs in the real plugin inside the agent's file pipeline.
	site := *in
	inst := *in.Inst
	inst.Bundle = bi
	site.Inst = &inst
	root := t.TempDir()
	share := filepath.Join(root, "share")
	files := sourceTree(t, share, 515151, 400)
	p, sink, stop := startWatching(t, &site, root)
	time.Sleep(time.Second)
	start := time.Now()
	n := ransomware(t, files)
	f := waitFinding(sink, start.Add(15*time.Second), func(f *wirev1.Finding) bool {
		return strings.HasPrefix(f.GetContext().GetPath(), share) && f.GetCount() >= 20
	})
	stop()
	if f == nil {
		t.Fatalf("the site model gave no burst finding for %d encrypted files; counters %v; findings:%s", n, p.Counters(), describe(sink.snapshot()))
	}
	if f.GetModel().GetVersion() != 7 {
		t.Errorf("finding from model %+v, want the site model (version 7)", f.GetModel())
	}
	t.Logf("site model finding after %v: %s", time.Since(start).Round(time.Millisecond), describe([]*wirev1.Finding{f}))
}

// exitStderr returns a failed command's stderr.
func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
