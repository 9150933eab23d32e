package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	"github.com/vigil-edge/vigil/models/dataset"
	"github.com/vigil-edge/vigil/models/eval"
	"github.com/vigil-edge/vigil/models/onnx"
	"github.com/vigil-edge/vigil/models/train"
	"github.com/vigil-edge/vigil/test/filework"
	"github.com/vigil-edge/vigil/test/trafficgen"
)

// TestModelTrainAttached: train and eval hang under the model group.
func TestModelTrainAttached(t *testing.T) {
	for _, sub := range []string{"train", "eval"} {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), []string{"model", sub, "--help"}, &out, &errb); code != 0 {
			t.Fatalf("model %s --help: exit %d: %s", sub, code, errb.String())
		}
		if !strings.Contains(out.String(), "--feature-set") && !strings.Contains(out.String(), "--bundle") {
			t.Errorf("model %s --help: %s", sub, out.String())
		}
	}
}

func TestModelTrainFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no feature set", []string{"model", "train", "--benign", "x"}, "--feature-set and --benign are required"},
		{"unknown set", []string{"model", "train", "--feature-set", "nope/v9", "--benign", "x"}, "unknown feature set"},
		{"bad holdout", []string{"model", "train", "--feature-set", "nethost/v1", "--benign", "x", "--holdout", "1.5"}, "--holdout"},
		{"bad kind", []string{"model", "train", "--feature-set", "nethost/v1", "--benign", "x", "--kind", "rnn"}, "--kind"},
		{"bad quant", []string{"model", "train", "--feature-set", "nethost/v1", "--benign", "x", "--quant", "fp16"}, "--quant"},
		{"split input needs qdq", []string{"model", "train", "--feature-set", "nethost/v1", "--benign", "x", "--quant", "int8-dynamic", "--split-input"}, "--split-input needs --quant int8-qdq"},
		{"unknown layout", []string{"model", "train", "--feature-set", "nethost/v1", "--benign", "x", "--layout", "int4"}, "unknown int8 layout"},
		{"layout needs qdq", []string{"model", "train", "--feature-set", "nethost/v1", "--benign", "x", "--quant", "int8-dynamic", "--layout", "fit-rounding"}, "--layout needs --quant int8-qdq"},
		{"layouts disagree", []string{"model", "train", "--feature-set", "nethost/v1", "--benign", "x", "--layout", "input-gain", "--split-input"}, "--split-input and --layout disagree"},
		{"bad snap epochs", []string{"model", "train", "--feature-set", "fileactivity/v1", "--benign", "x", "--snap-epochs", "-3"}, "--snap-epochs -3"},
		{"bad min agent version", []string{"model", "train", "--feature-set", "nethost/v1", "--benign", "x", "--min-agent-version", "1.4"}, "--min-agent-version: min_agent_version \"1.4\" is not a semantic version"},
		{"eval needs bundle", []string{"model", "eval", "--benign", "x", "--attack", "y"}, "--bundle, --benign and --attack are required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := Main(context.Background(), c.args, &out, &errb); code == 0 || !strings.Contains(errb.String(), c.want) {
				t.Errorf("exit %d, stderr %q, want an error containing %q", code, errb.String(), c.want)
			}
		})
	}
}

func TestProgressPlain(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b)
	for i := 1; i <= 100; i++ {
		p.step("reading", i, 100, "")
	}
	p.done()
	if n := strings.Count(b.String(), "\n"); n != 11 { // 1/100 then each decile
		t.Errorf("%d lines when piped, want 11:\n%s", n, b.String())
	}
}

func TestListWithAt(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.pcap"), filepath.Join(dir, "b.pcap")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	list := filepath.Join(dir, "list.txt")
	if err := os.WriteFile(list, []byte("# held out\n"+b+"\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := listWithAt([]string{"@" + list, a})
	if err != nil || len(got) != 2 || got[0] != a || got[1] != b {
		t.Errorf("got %v, %v", got, err)
	}
}

func writeCapture(t *testing.T, path string, cfg trafficgen.Config) trafficgen.Info {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := trafficgen.Write(f, cfg)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// writeBenign writes n generated benign captures (seeds seed0, seed0+1, …) into dir/benign and
// returns that folder.
func writeBenign(t *testing.T, dir string, n int, seed0 uint64, sessions int, d time.Duration) string {
	t.Helper()
	benign := filepath.Join(dir, "benign")
	if err := os.Mkdir(benign, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		writeCapture(t, filepath.Join(benign, fmt.Sprintf("b%d.pcap", i)), trafficgen.Config{Seed: seed0 + uint64(i), Sessions: sessions, Duration: d})
	}
	return benign
}

// runCtl runs vigilctl in process and returns its standard output; a
// non-zero exit fails the test.
func runCtl(t *testing.T, args ...string) []byte {
	t.Helper()
	var so, se bytes.Buffer
	if code := Main(context.Background(), args, &so, &se); code != 0 {
		t.Fatalf("vigilctl %s: exit %d: %s", strings.Join(args, " "), code, se.String())
	}
	return so.Bytes()
}

// TestModelTrainEval trains nethost/v1 on synthetic benign captures, then
// evaluates the bundle on a synthetic SYN scan with a truth file.
func TestModelTrainEval(t *testing.T) {
	if os.Getenv("ONNXRUNTIME_LIB") == "" {
		t.Skip("ONNXRUNTIME_LIB not set: model train and eval need ONNX Runtime")
	}
	dir := t.TempDir()
	benign := writeBenign(t, dir, 5, 200, 150, 30*time.Second)
	out := filepath.Join(dir, "out")
	var res TrainResult
	js := runCtl(t, "model", "train", "--feature-set", "nethost/v1", "--benign", benign, "--epochs", "3", "--seed", "7",
		"--name", "lab", "--version", "4", "--out", out, "--created", "2026-01-01T00:00:00Z", "--min-agent-version", "0.2.0", "--json")
	if err := json.Unmarshal(js, &res); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	if res.HoldoutSplit != "files" || res.HoldoutFiles != 1 || res.TrainFiles != 4 || res.Metrics.Threshold <= 0 || res.PeakRSSBytes == 0 {
		t.Errorf("train result: %+v", res)
	}
	b, err := bundle.Read(res.Bundle, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Name != "lab" || b.Manifest.Version != 4 || b.Manifest.MinAgentVersion != "0.2.0" || b.Manifest.Quantization != bundle.QuantInt8Static || b.Manifest.Threshold != res.Metrics.Threshold {
		t.Errorf("manifest %+v", b.Manifest)
	}
	// Deterministic for a seed: the same flags give the same model bytes.
	out2 := filepath.Join(dir, "out2")
	runCtl(t, "model", "train", "--feature-set", "nethost/v1", "--benign", benign, "--epochs", "3", "--seed", "7",
		"--name", "lab", "--version", "4", "--out", out2, "--created", "2026-01-01T00:00:00Z", "--json")
	b2, err := bundle.Read(filepath.Join(out2, "lab-4.vgb"), bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Model, b2.Model) {
		t.Error("two runs with the same seed gave different models")
	}

	attacks := filepath.Join(dir, "attacks")
	if err := os.Mkdir(attacks, 0o755); err != nil {
		t.Fatal(err)
	}
	info := writeCapture(t, filepath.Join(attacks, "scan.pcap"), trafficgen.Config{Seed: 9, Sessions: 150, Duration: 30 * time.Second, Scan: true})
	truth := fmt.Sprintf(`{"capture":"scan.pcap","attacks":[{"name":"nmap","command":"synthetic SYN scan","attacker":%q,"start":%q,"end":%q}]}`,
		info.Scanner.String(), info.ScanStart.Format(time.RFC3339Nano), info.ScanEnd.Format(time.RFC3339Nano))
	truthFile := filepath.Join(dir, "truth.json")
	if err := os.WriteFile(truthFile, []byte(truth), 0o644); err != nil {
		t.Fatal(err)
	}
	evalDir := filepath.Join(dir, "eval")
	var rep eval.Report
	js = runCtl(t, "model", "eval", "--bundle", res.Bundle, "--benign", "@"+res.HoldoutList, "--attack", attacks, "--labels", truthFile, "--out", evalDir, "--json")
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	if rep.Captures != 1 || len(rep.Attacks) != 1 || !rep.Attacks[0].Labelled || rep.Attacks[0].AttackPackets == 0 || rep.Attacks[0].AttackPackets > info.ScanPackets { // ScanPackets counts the replies too
		t.Errorf("report: %+v, scan packets %d", rep, info.ScanPackets)
	}
	if !rep.Attacks[0].Detected || rep.ROCAUC < 0.9 {
		t.Errorf("synthetic SYN scan not detected: %+v", rep.Attacks[0])
	}
	for _, f := range []string{eval.MarkdownFile, eval.JSONFile, eval.SVGFile} {
		if _, err := os.Stat(filepath.Join(evalDir, f)); err != nil {
			t.Error(err)
		}
	}
}

// TestModelTrainLayouts trains the same static-QDQ model with the default int8 layout, with
// --split-input and with --layout input-gain. The split bundle's graph has the encoder's second
// pass (one Gemm more, on the same int8 weights: models/export.TestLayoutOptions checks that ONNX
// Runtime fuses both into QGemm); the input-gain bundle multiplies the features by their gains
// (one Mul more) and needs no Clip before the encoder. Both rank their int8 scores at least about
// as close to the float model's as the default does.
func TestModelTrainLayouts(t *testing.T) {
	if os.Getenv("ONNXRUNTIME_LIB") == "" {
		t.Skip("ONNXRUNTIME_LIB not set: model train needs ONNX Runtime")
	}
	dir := t.TempDir()
	benign := writeBenign(t, dir, 3, 300, 100, 20*time.Second)
	ops := map[string]map[string]int{}
	rho := map[string]float64{}
	for _, layout := range []string{"default", "split", "gain"} {
		args := []string{"model", "train", "--feature-set", "nethost/v6", "--benign", benign, "--epochs", "2", "--quant", bundle.QuantInt8Static,
			"--version", "1", "--out", filepath.Join(dir, layout), "--created", "2026-01-01T00:00:00Z", "--json"}
		switch layout {
		case "split":
			args = append(args, "--split-input")
		case "gain":
			args = append(args, "--layout", "input-gain")
		}
		var res TrainResult
		if js := runCtl(t, args...); json.Unmarshal(js, &res) != nil {
			t.Fatalf("train output: %s", js)
		}
		_, m := readModel(t, res.Bundle)
		ops[layout], rho[layout] = onnx.OpCounts(m.Graph), res.SpearmanInt8Float
		if res.HoldoutRows >= 256 && (res.Speeds == nil || res.Speeds.Int8 <= 0 || res.Speeds.Float <= 0) {
			t.Errorf("%s: %d held-out rows but no int8/float speed: %+v", layout, res.HoldoutRows, res.Speeds)
		}
	}
	def := ops["default"]
	if def["Gemm"] < 1 || ops["split"]["Gemm"] != def["Gemm"]+1 {
		t.Errorf("Gemm nodes: %d by default, %d with --split-input (want one more)", def["Gemm"], ops["split"]["Gemm"])
	}
	if g := ops["gain"]; g["Mul"] != def["Mul"]+1 || g["Clip"] != def["Clip"]-1 || g["Gemm"] != def["Gemm"] {
		t.Errorf("--layout input-gain: Mul %d, Clip %d, Gemm %d; by default %d, %d, %d (want one Mul more, one Clip less)", g["Mul"], g["Clip"], g["Gemm"], def["Mul"], def["Clip"], def["Gemm"])
	}
	for _, l := range []string{"split", "gain"} {
		if rho[l] < rho["default"]-0.001 {
			t.Errorf("int8/float Spearman %.4f with %s, %.4f by default", rho[l], l, rho["default"])
		}
	}
	t.Logf("int8/float Spearman %v", rho)
}

// readModel reads the bundle at path and parses its ONNX model.
func readModel(t *testing.T, path string) (*bundle.Bundle, *onnx.ModelProto) {
	t.Helper()
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	m, err := onnx.Unmarshal(b.Model)
	if err != nil {
		t.Fatal(err)
	}
	return b, m
}

// TestModelTrainDynamic: --quant int8-dynamic (no longer the default) still writes a dynamically
// quantized bundle, whose graph quantizes its activations at run time.
func TestModelTrainDynamic(t *testing.T) {
	if os.Getenv("ONNXRUNTIME_LIB") == "" {
		t.Skip("ONNXRUNTIME_LIB not set: model train needs ONNX Runtime")
	}
	dir := t.TempDir()
	benign := writeBenign(t, dir, 3, 400, 60, 20*time.Second)
	var res TrainResult
	js := runCtl(t, "model", "train", "--feature-set", "nethost/v6", "--benign", benign, "--epochs", "1", "--quant", bundle.QuantInt8Dyn,
		"--out", filepath.Join(dir, "out"), "--created", "2026-01-01T00:00:00Z", "--json")
	if err := json.Unmarshal(js, &res); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	b, m := readModel(t, res.Bundle)
	if ops := onnx.OpCounts(m.Graph); res.Quantization != bundle.QuantInt8Dyn || b.Manifest.Quantization != bundle.QuantInt8Dyn || ops["DynamicQuantizeLinear"] == 0 {
		t.Errorf("quantization %q, manifest %q, graph %v", res.Quantization, b.Manifest.Quantization, ops)
	}
}

// TestModelTrainFileactivity trains fileactivity/v1 on the committed benign
// file-event traces of the shipped model (models/baseline/fileactivity,
// written by vigil-train-fileactivity -save, the format of vigil-agent
// record), then evaluates the bundle on its ransomware and overwriting-wiper traces.
func TestModelTrainFileactivity(t *testing.T) {
	if os.Getenv("ONNXRUNTIME_LIB") == "" {
		t.Skip("ONNXRUNTIME_LIB not set: model train and eval need ONNX Runtime")
	}
	traces := filepath.Join("..", "..", "models", "baseline", "fileactivity")
	benign, _ := filepath.Glob(filepath.Join(traces, "*-train.vft.gz"))
	hold, _ := filepath.Glob(filepath.Join(traces, "*-holdout.vft.gz"))
	benign = append(benign, hold...)
	var attacks []string
	for _, name := range []string{"ransomware", "overwrite"} {
		p, err := filework.FindTrace(traces, "attack", name)
		if err != nil {
			t.Fatal(err)
		}
		attacks = append(attacks, p)
	}
	if len(benign) != 22 {
		t.Fatalf("benign traces: %v", benign)
	}
	dir := t.TempDir()
	args := []string{"model", "train", "--feature-set", "fileactivity/v1", "--epochs", "10", "--quant", bundle.QuantInt8Static,
		"--out", dir, "--created", "2026-01-01T00:00:00Z", "--json"}
	for _, b := range benign {
		args = append(args, "--benign", b)
	}
	var res TrainResult
	if js := runCtl(t, args...); json.Unmarshal(js, &res) != nil {
		t.Fatalf("train output: %s", js)
	}
	if res.Kind != "kitnet" || res.HoldoutSplit != "files" || res.TrainFiles != 18 || res.HoldoutFiles != 4 ||
		res.TrainRows < 10000 || res.HoldoutRows < 2000 || len(res.SkippedFiles) != 0 || res.Metrics.Threshold <= 0 {
		t.Errorf("train result: %+v", res)
	}
	b, err := bundle.Read(res.Bundle, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if m := b.Manifest; m.Name != "fileactivity" || m.Detector != "fileactivity" || m.FeatureSet != "fileactivity/v1" || m.Dim != 71 {
		t.Errorf("manifest %+v", m)
	}
	var rep eval.Report
	args = []string{"model", "eval", "--bundle", res.Bundle, "--benign", "@" + res.HoldoutList, "--out", filepath.Join(dir, "eval"), "--json"}
	for _, a := range attacks {
		args = append(args, "--attack", a)
	}
	if js := runCtl(t, args...); json.Unmarshal(js, &rep) != nil {
		t.Fatalf("eval output: %s", js)
	}
	if rep.Captures != 2 || rep.Detected != 2 || rep.BenignFiles != 4 || rep.AttackPackets < 500 || rep.Model.Unit != "file events" {
		t.Errorf("eval: %d of %d attack traces detected, %d benign files, %d attack events, unit %q", rep.Detected, rep.Captures, rep.BenignFiles, rep.AttackPackets, rep.Model.Unit)
	}
	if md, err := os.ReadFile(filepath.Join(dir, "eval", eval.MarkdownFile)); err != nil || !strings.Contains(string(md), "attack file events: 817") && !strings.Contains(string(md), "Attack file events: 817") {
		t.Errorf("eval.md does not count file events: %v\n%s", err, md)
	}
	// A pcap is not a trace: a clear error names the file.
	var so, se bytes.Buffer
	pcap := filepath.Join(dir, "x.pcap")
	writeCapture(t, pcap, trafficgen.Config{Seed: 1, Sessions: 5})
	code := Main(context.Background(), []string{"model", "train", "--feature-set", "fileactivity/v1", "--benign", pcap, "--out", dir}, &so, &se)
	if code == 0 || !strings.Contains(se.String(), "x.pcap") || !strings.Contains(se.String(), "not a file-event trace") {
		t.Errorf("pcap as a trace: exit %d, %s", code, se.String())
	}
}

// TestModelPathErrors: every capture path given to model train and model
// eval must hold captures. An attack folder without any (or a symlink to
// nothing) used to evaluate as "0 of 0 attack captures detected"; a FIFO
// listed nothing. The paths are checked before the bundle is read, so no
// ONNX Runtime is needed here.
func TestModelPathErrors(t *testing.T) {
	dir := t.TempDir()
	capFile := filepath.Join(dir, "b.pcap")
	empty, emptyList, fifo := filepath.Join(dir, "empty"), filepath.Join(dir, "empty.txt"), filepath.Join(dir, "fifo")
	if err := os.WriteFile(capFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(emptyList, []byte("# nothing held out\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "no.vgb")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"eval attack folder without captures", []string{"model", "eval", "--bundle", missing, "--benign", capFile, "--attack", empty}, "--attack: list captures: folder " + empty + " holds no files"},
		{"eval attack FIFO", []string{"model", "eval", "--bundle", missing, "--benign", capFile, "--attack", fifo}, "is neither a regular file nor a folder"},
		{"eval attack missing", []string{"model", "eval", "--bundle", missing, "--benign", capFile, "--attack", filepath.Join(dir, "nope")}, "--attack: list captures: stat"},
		{"eval benign folder without captures", []string{"model", "eval", "--bundle", missing, "--benign", capFile, "--benign", empty, "--attack", capFile}, "--benign: list captures: folder"},
		{"eval empty capture list", []string{"model", "eval", "--bundle", missing, "--benign", "@" + emptyList, "--attack", capFile}, "names no captures"},
		{"eval negative chunk", []string{"model", "eval", "--bundle", missing, "--benign", capFile, "--attack", capFile, "--chunk", "-1"}, "--chunk -1"},
		{"train benign folder without captures", []string{"model", "train", "--feature-set", "nethost/v1", "--benign", capFile, "--benign", empty}, "--benign: list captures: folder"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := Main(context.Background(), c.args, &out, &errb); code == 0 || !strings.Contains(errb.String(), c.want) {
				t.Errorf("exit %d, stderr %q, want an error containing %q", code, errb.String(), c.want)
			}
		})
	}
}

// TestModelDynamicScoresAsSensor: an int8-dynamic model quantizes each run
// with the run's own scale, so sensors score it one row at a time
// (runtime.ConsistentRun). Its threshold must be calibrated, and its
// evaluation scored, on those single-row scores; in 16-row runs most
// held-out scores differed. It also trains on a capture named twice
// (folder and ./file: one file) and evaluates an attack folder given as a
// symlink.
func TestModelDynamicScoresAsSensor(t *testing.T) {
	if os.Getenv("ONNXRUNTIME_LIB") == "" {
		t.Skip("ONNXRUNTIME_LIB not set: model train and eval need ONNX Runtime")
	}
	dir := t.TempDir()
	t.Chdir(dir)
	benign := writeBenign(t, dir, 3, 400, 60, 20*time.Second)
	var res TrainResult
	js := runCtl(t, "model", "train", "--feature-set", "nethost/v6", "--benign", benign, "--benign", "./benign/b2.pcap",
		"--epochs", "1", "--quant", bundle.QuantInt8Dyn, "--out", filepath.Join(dir, "out"), "--created", "2026-01-01T00:00:00Z", "--json")
	if err := json.Unmarshal(js, &res); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	if res.TrainFiles+res.HoldoutFiles+len(res.SkippedFiles) != 3 || res.HoldoutSplit != "files" {
		t.Fatalf("%d training, %d held-out, %d skipped captures (split by %s), want 3 in all, split by files",
			res.TrainFiles, res.HoldoutFiles, len(res.SkippedFiles), res.HoldoutSplit)
	}

	// The held-out rows, scored as a sensor scores them: one row per run.
	b, err := bundle.Read(res.Bundle, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	fs, err := dataset.Lookup(b.Manifest.FeatureSet)
	if err != nil {
		t.Fatal(err)
	}
	holdFiles, err := listWithAt([]string{"@" + res.HoldoutList})
	if err != nil {
		t.Fatal(err)
	}
	var caps []*dataset.Capture
	for _, p := range holdFiles {
		c, err := dataset.Extract(t.Context(), p, []dataset.FeatureSet{fs}, 0)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
	}
	hold := dataset.Stack(caps, 0)
	sc, err := openScorer("", b.Model, fs.Dim, 256)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	single, err := train.Scores(sc, hold, 1)
	if err != nil {
		t.Fatal(err)
	}
	if runs, err := train.Scores(dataset.Chunked{Scorer: sc, Dim: fs.Dim, Chunk: dataset.ScoreChunk}, hold, 4096); err == nil {
		differ := 0
		for i := range runs {
			if runs[i] != single[i] {
				differ++
			}
		}
		t.Logf("%d of %d held-out scores differ between runs of %d rows and single rows", differ, len(runs), dataset.ScoreChunk)
	}
	thr, err := calib.Threshold(single, res.Metrics.TargetFPR)
	if err != nil {
		t.Fatal(err)
	}
	if res.Metrics.Threshold != thr || b.Manifest.Threshold != thr || res.Metrics.BenignN != len(single) {
		t.Errorf("threshold %v (manifest %v) on %d rows, want %v, the single-row scores' on %d",
			res.Metrics.Threshold, b.Manifest.Threshold, res.Metrics.BenignN, thr, len(single))
	}

	// model eval, by default, scores it the same way; the attack folder
	// is given through a symlink.
	attacks := filepath.Join(dir, "attacks")
	if err := os.Mkdir(attacks, 0o755); err != nil {
		t.Fatal(err)
	}
	writeCapture(t, filepath.Join(attacks, "scan.pcap"), trafficgen.Config{Seed: 9, Sessions: 60, Duration: 20 * time.Second, Scan: true})
	link := filepath.Join(dir, "attack-link")
	if err := os.Symlink(attacks, link); err != nil {
		t.Fatal(err)
	}
	var rep eval.Report
	js = runCtl(t, "model", "eval", "--bundle", res.Bundle, "--benign", "@"+res.HoldoutList, "--attack", link,
		"--out", filepath.Join(dir, "eval"), "--json")
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	if rep.Captures != 1 || len(rep.Attacks) != 1 || rep.Attacks[0].File != "scan.pcap" || rep.Attacks[0].Packets == 0 {
		t.Errorf("attack captures through a symlink: %d evaluated, %+v", rep.Captures, rep.Attacks)
	}
	p99, err := calib.Quantile(single, 0.99)
	if err != nil {
		t.Fatal(err)
	}
	if rep.BenignPackets != len(single) || rep.BenignMax != float64(slices.Max(single)) || rep.BenignP99 != p99 {
		t.Errorf("eval: %d benign rows, max %v, p99 %v; single-row scores: %d, max %v, p99 %v",
			rep.BenignPackets, rep.BenignMax, rep.BenignP99, len(single), slices.Max(single), p99)
	}
	if len(rep.Throughput) == 0 || rep.Throughput[0].Batch != 1 {
		t.Errorf("throughput %+v, want the scoring runs' size 1 first", rep.Throughput)
	}
}
