package e2e

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	"github.com/vigil-edge/vigil/models/train"
	"github.com/vigil-edge/vigil/test/trafficgen"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// strictNethost returns bundles with the shipped nethost bundle replaced by
// a copy of the same model whose threshold is thr: a model stricter than a
// site's traffic allows, as a sensor's local traffic may be noisier than
// the CERT's held-out data.
func strictNethost(t *testing.T, bundles []detect.BundleInfo, thr float64) []detect.BundleInfo {
	t.Helper()
	var out []detect.BundleInfo
	for _, b := range bundles {
		if !strings.HasPrefix(b.FeatureSet, "nethost/") {
			out = append(out, b)
			continue
		}
		bu, err := bundle.Read(b.Path, bundle.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		man := bu.Manifest
		man.Name += "-strict"
		p, err := train.Build(t.TempDir(), bu.Model, man, calib.Metrics{Threshold: thr})
		if err != nil {
			t.Fatal(err)
		}
		info, err := detect.ReadBundleInfo(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, info)
	}
	return out
}

// TestNetflowCalibration: per-sensor calibration through the agent's
// pipeline and the real plugin. The demo's capture (benign sessions, a SYN
// scan from 30 s) gives benign findings in its first seconds with a copy of
// the shipped nethost model whose threshold is 0.02 (strictNethost; the
// shipped threshold, 0.047, is above every benign score of this capture).
// With a 20 s grace period: no finding starts
// inside it, the scan is still found, and the pipeline's counters (which
// the agent sends to the server in every Status) report the calibration of
// the nethost model: its own threshold, the local quantile, the
// sample size and the active threshold, the larger of the two. A plugin
// killed after that restarts calibrated, with the same threshold.
func TestNetflowCalibration(t *testing.T) {
	in := netflowInstall(t)
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pcap, info := writeTrafficgen(t, dir, "demo.pcap", trafficgen.Config{Seed: 42, Start: t0, Sessions: 400, Scan: true, ScanPorts: 1000})
	const grace = 20 * time.Second

	bundles := strictNethost(t, in.Bundles, 0.02)
	set := "" // the shipped nethost model's feature set, which names its counters
	for _, b := range bundles {
		if strings.HasPrefix(b.FeatureSet, "nethost/") {
			set = b.FeatureSet
		}
	}
	if set == "" {
		t.Fatalf("no nethost bundle installed: %v", in.Bundles)
	}
	run := func(args []string, until func(map[string]uint64) bool, kill bool) ([]*wirev1.Finding, map[string]uint64) {
		t.Helper()
		log := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
		p, err := detect.New(detect.Config{
			Plugin: in.Plugin, Bundles: bundles, ORTLib: in.ORT, StageBundles: true, PluginArgs: args,
			Pcaps: []string{pcap}, Follow: true, Logger: log,
			Aggregate: detect.AggregatorConfig{FirstAfter: time.Second, UpdateEvery: 5 * time.Second},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sink := &findingsSink{}
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, sink) }()
		deadline := time.Now().Add(90 * time.Second)
		var c map[string]uint64
		for {
			c = p.Counters()
			if c["scored"] == uint64(info.Packets) && until(c) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out: counters %v", c)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if kill {
			// A plugin restarted after a crash keeps the calibration (the
			// pipeline passes it back): calibrated at once, with the same
			// threshold, and no samples of its own.
			pid := p.PluginPID()
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill plugin %d: %v", pid, err)
			}
			before := c
			for {
				c = p.Counters()
				if c["plugin_restarts"] >= 1 && p.PluginPID() != pid && c["calibration_samples_"+set] == 0 && c["calibrated_"+set] == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("restarted plugin: counters %v (before the kill %v)", c, before)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if c["threshold_micro_"+set] != before["threshold_micro_"+set] || c["calibration_local_micro_"+set] != before["calibration_local_micro_"+set] {
				t.Fatalf("restarted plugin's calibration differs: %v, before the kill %v", c, before)
			}
			c = before
		}
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("pipeline: %v", err)
		}
		return sink.snapshot(), c
	}
	start := t0.UnixNano() // the first packet is at or after t0
	early := func(fs []*wirev1.Finding) (n int, scan bool) {
		for _, f := range fs {
			if f.FirstSeenUnixNano < start+int64(grace) {
				n++
			}
			if f.GetContext().GetSrcIp() == info.Scanner.String() {
				scan = true
			}
		}
		return n, scan
	}

	plain, _ := run(nil, func(map[string]uint64) bool { return true }, false)
	nPlain, scanPlain := early(plain)
	if nPlain == 0 || !scanPlain {
		t.Fatalf("without calibration: %d findings in the first %s (want the benign one this test is about), scan found %v", nPlain, grace, scanPlain)
	}

	fs, c := run([]string{"-calibrate", grace.String(), "-calibrate-quantile", "0.999"},
		func(c map[string]uint64) bool { return c["calibrated_"+set] == 1 }, true)
	n, scan := early(fs)
	if n != 0 || !scan {
		t.Fatalf("with calibration: %d findings in the grace period, scan found %v", n, scan)
	}
	model, local, active := c["model_threshold_micro_"+set], c["calibration_local_micro_"+set], c["threshold_micro_"+set]
	if model == 0 || local == 0 || c["calibration_samples_"+set] == 0 || active != max(model, local) {
		t.Fatalf("calibration counters: model %d, local %d, active %d (µ), %d samples; all: %v", model, local, active, c["calibration_samples_"+set], c)
	}
	for k := range c {
		if strings.HasPrefix(k, "calibrated_") && c[k] != 1 {
			t.Errorf("%s = %d after the grace period", k, c[k])
		}
	}
	t.Logf("without calibration %d findings (%d in the first %s); with it %d; nethost threshold %.5f → %.5f (local q0.999 %.5f, %d samples)",
		len(plain), nPlain, grace, len(fs), float64(model)/1e6, float64(active)/1e6, float64(local)/1e6, c["calibration_samples_"+set])
}
