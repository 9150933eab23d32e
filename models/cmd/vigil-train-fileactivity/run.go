package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/watch"
	"github.com/vigil-edge/vigil/models/ae"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/calib"
	feat "github.com/vigil-edge/vigil/models/features/fileactivity"
	"github.com/vigil-edge/vigil/models/runtime"
	"github.com/vigil-edge/vigil/models/train"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
	"github.com/vigil-edge/vigil/test/filework"
)

// Config is the trainer's configuration.
type Config struct {
	Out, ORTLib, Save, Traces   string
	Seed, Version               uint64
	FPR                         float64
	Epochs                      int
	SnapEpochs                  int     // ae.Config.SnapEpochs: fine-tuning with the encoders' weights on their int8 grid
	OutMinRange                 float64 // ae.Config.OutMinRange: floor of the group RMSEs' spread
	TrainSessions, HoldSessions int
	Kind, Norm                  string
	MaxGroup                    int
	Hidden, MinRange            float64
	Created                     time.Time
	Validity                    time.Duration
	NoWrite                     bool
	SplitInput                  bool   // export with train.LayoutSplitInput
	Layout                      string // int8 layout by name (train.ParseLayout; "" = the default)
}

// Session is the event trace of one recorded run.
type Session struct {
	Name        string
	Kind        string // "train", "holdout" or "attack"
	Workloads   []string
	Events      []event.File      `json:"-"` // kept in the session's trace file
	AttackStart int64             // Unix ns; attacks only
	Targets     map[string]string // dropped file path -> what (drop sessions)
	Watch       watch.Stats
	Seconds     float64
}

// record runs setup (not watched), then watches a fresh tree while work runs,
// and returns the events the agent's watcher produced.
func record(ctx context.Context, log *slog.Logger, s *Session, setup func(root string) error,
	work func(ctx context.Context, root string, s *Session) error) error {
	dir, err := os.MkdirTemp("", "vigil-train-fa-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "tree")
	if err := os.Mkdir(root, 0o755); err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	if setup != nil {
		if err := setup(root); err != nil {
			return err
		}
	}
	w, err := watch.New(watch.Config{Roots: []string{root}}, log.With("session", s.Name))
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	out := make(chan []event.File, 4096)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := w.Run(wctx, out); err != nil {
			log.Warn("watcher", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		for b := range out {
			s.Events = append(s.Events, b...)
		}
	}()
	t0 := time.Now()
	werr := work(ctx, root, s)
	// Let the debounce and batch windows close.
	time.Sleep(1500 * time.Millisecond)
	cancel()
	wg.Wait()
	s.Seconds = time.Since(t0).Seconds()
	s.Watch = w.Stats()
	if s.Watch.Dropped > 0 || s.Watch.Overflows > 0 {
		log.Warn("events lost while recording", "session", s.Name, "dropped", s.Watch.Dropped, "overflows", s.Watch.Overflows)
	}
	log.Info("session recorded", "session", s.Name, "events", len(s.Events), "seconds", s.Seconds)
	return werr
}

// benignSession runs every benign workload in a seed-shuffled order with
// pauses in between, in one tree.
func benignSession(ctx context.Context, log *slog.Logger, name, kind string, seed uint64) (*Session, error) {
	s := &Session{Name: name, Kind: kind}
	r := rand.New(rand.NewPCG(seed, 7))
	wls := filework.Benign()
	r.Shuffle(len(wls), func(i, j int) { wls[i], wls[j] = wls[j], wls[i] })
	err := record(ctx, log, s, nil, func(ctx context.Context, root string, s *Session) error {
		for k, wl := range wls {
			s.Workloads = append(s.Workloads, wl.Name)
			if err := wl.Run(ctx, root, seed*16+uint64(k)); err != nil {
				return fmt.Errorf("workload %s: %w", wl.Name, err)
			}
			time.Sleep(time.Duration(300+r.IntN(1200)) * time.Millisecond)
		}
		return nil
	})
	return s, err
}

// attackSessions records the attacks evaluated in the report.
func attackSessions(ctx context.Context, log *slog.Logger, seed uint64) ([]*Session, error) {
	var out []*Session
	tree := func(root string) error {
		if _, err := filework.CopySourceTree(filepath.Join(root, "share"), seed+11, 400); err != nil {
			return err
		}
		return nil
	}
	mark := func(s *Session) { s.AttackStart = time.Now().UnixNano() }
	// treeAttack records an attack on a copy of a source tree (share/), one
	// second after the watcher started.
	treeAttack := func(name string, attack func(ctx context.Context, share string) error) error {
		s := &Session{Name: name, Kind: "attack"}
		if err := record(ctx, log, s, tree, func(ctx context.Context, root string, s *Session) error {
			time.Sleep(time.Second)
			mark(s)
			return attack(ctx, filepath.Join(root, "share"))
		}); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	}
	if err := treeAttack("ransomware (AES-CTR in place + rename to .locked, ~400 files)", func(ctx context.Context, share string) error {
		_, err := filework.Ransomware(ctx, share, ".locked", seed)
		return err
	}); err != nil {
		return nil, err
	}
	if err := treeAttack("mass deletion (rm -rf-like: delete ~400 files, then the folders)", func(ctx context.Context, share string) error {
		_, err := filework.Wiper(ctx, share)
		return err
	}); err != nil {
		return nil, err
	}
	ds := &Session{Name: "dropped files among office documents", Kind: "attack", Targets: map[string]string{}}
	if err := record(ctx, log, ds, nil, func(ctx context.Context, root string, s *Session) error {
		if err := filework.Office(ctx, root, seed+5); err != nil {
			return err
		}
		time.Sleep(time.Second)
		mark(s)
		elfs := filework.ELFs()
		if len(elfs) == 0 {
			return errors.New("no ELF executables on this system")
		}
		dir := filepath.Join(root, "share")
		_ = os.MkdirAll(dir, 0o755)
		drop := func(name, what string, b []byte) error {
			p := filepath.Join(dir, name)
			s.Targets[p] = what
			if err := os.WriteFile(p, b, 0o755); err != nil {
				return fmt.Errorf("drop: %w", err)
			}
			time.Sleep(700 * time.Millisecond)
			return nil
		}
		packed, err := filework.PackedELF(elfs[0], seed)
		if err != nil {
			return err
		}
		if err := drop("update-helper", "packed ELF (.text encrypted)", packed); err != nil {
			return err
		}
		if err := drop("install.sh", "base64-obfuscated script", filework.Base64Script(seed)); err != nil {
			return err
		}
		orig, err := os.ReadFile(elfs[1%len(elfs)])
		if err != nil {
			return fmt.Errorf("read elf: %w", err)
		}
		if err := drop("tool", "ordinary ELF (control)", orig); err != nil {
			return err
		}
		gz := filepath.Join(dir, "backup-agent")
		s.Targets[gz] = "gzexe-compressed ELF (self-extracting script)"
		if err := filework.Gzexe(ctx, elfs[2%len(elfs)], gz); err != nil {
			return err
		}
		time.Sleep(700 * time.Millisecond)
		return nil
	}); err != nil {
		return nil, err
	}
	out = append(out, ds)
	if err := treeAttack("wiper (overwrite ~400 files with zeros in place: CaddyWiper's method)", func(ctx context.Context, share string) error {
		_, err := filework.OverwriteWiper(ctx, share)
		return err
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// features turns a session into vectors with a fresh extractor (the plugin
// keeps one extractor whose state is per watched tree).
func features(s *Session) []float32 {
	x := feat.NewExtractor()
	out := make([]float32, len(s.Events)*feat.Dim)
	for i := range s.Events {
		x.Extract(&s.Events[i], out[i*feat.Dim:(i+1)*feat.Dim])
	}
	return out
}

func matrix(ss []*Session) ae.Matrix {
	m := ae.Matrix{Cols: feat.Dim}
	for _, s := range ss {
		m.Data = append(m.Data, features(s)...)
		m.Rows += len(s.Events)
	}
	return m
}

func sample(m ae.Matrix, n int) ae.Matrix {
	if m.Rows <= n {
		return m
	}
	out := ae.Matrix{Data: make([]float32, 0, n*m.Cols), Rows: n, Cols: m.Cols}
	for i := range n {
		out.Data = append(out.Data, m.Row(i*m.Rows/n)...)
	}
	return out
}

var nEvent = func() int {
	for i, n := range feat.Names() {
		if strings.HasPrefix(n, "rate") {
			return i
		}
	}
	return feat.Dim
}()

// scored is a session's per-event scores.
type scored struct {
	ratio []float64 // score / threshold
	burst []bool    // most of the error from the rate features (or a remove)
	top   [][]string
}

func scoreSession(sc *runtime.Scorer, s *Session, thr float64) (scored, error) {
	v := features(s)
	var out scored
	names := feat.Names()
	for off := 0; off < len(s.Events); off += 1024 {
		n := min(1024, len(s.Events)-off)
		scores, contrib, err := sc.Score(v[off*feat.Dim:(off+n)*feat.Dim], n)
		if err != nil {
			return out, fmt.Errorf("score: %w", err)
		}
		for i := range n {
			out.ratio = append(out.ratio, float64(scores[i])/thr)
			c := contrib[i*feat.Dim : (i+1)*feat.Dim]
			var all, rate float64
			for j, x := range c {
				all += float64(x)
				if j >= nEvent {
					rate += float64(x)
				}
			}
			out.burst = append(out.burst, (all > 0 && rate/all >= 0.5) || s.Events[off+i].Op == event.FileRemove)
			idx := make([]int, feat.Dim)
			for j := range idx {
				idx[j] = j
			}
			sort.Slice(idx, func(a, b int) bool { return c[idx[a]] > c[idx[b]] })
			var top []string
			for _, j := range idx[:3] {
				top = append(top, names[j])
			}
			out.top = append(out.top, top)
		}
	}
	return out, nil
}

// Run records (or loads) the sessions, trains, calibrates, evaluates and
// writes the bundle and the report.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := runtime.Init(cfg.ORTLib); err != nil {
		return fmt.Errorf("onnx runtime: %w", err)
	}
	var sessions []*Session
	if cfg.Traces != "" {
		var err error
		if sessions, err = loadTraces(cfg.Traces); err != nil {
			return err
		}
	} else {
		for i := range cfg.TrainSessions + cfg.HoldSessions {
			kind := "train"
			if i >= cfg.TrainSessions {
				kind = "holdout"
			}
			s, err := benignSession(ctx, log, fmt.Sprintf("benign-%02d", i), kind, cfg.Seed*1000+uint64(i))
			if err != nil {
				return err
			}
			sessions = append(sessions, s)
		}
		att, err := attackSessions(ctx, log, cfg.Seed*1000+999)
		if err != nil {
			return err
		}
		sessions = append(sessions, att...)
		if cfg.Save != "" {
			if err := saveTraces(cfg.Save, sessions); err != nil {
				return err
			}
		}
	}
	var trainS, holdS, attS []*Session
	for _, s := range sessions {
		switch s.Kind {
		case "train":
			trainS = append(trainS, s)
		case "holdout":
			holdS = append(holdS, s)
		default:
			attS = append(attS, s)
		}
	}
	if len(trainS) == 0 || len(holdS) == 0 {
		return errors.New("need training and held-out sessions")
	}
	data, hold := matrix(trainS), matrix(holdS)
	log.Info("benign events", "train", data.Rows, "holdout", hold.Rows)

	mc := ae.Config{Kind: cfg.Kind, MaxGroup: cfg.MaxGroup, Norm: cfg.Norm, HiddenRatio: cfg.Hidden, MinRange: cfg.MinRange,
		Train: ae.TrainConfig{Epochs: cfg.Epochs, Seed: cfg.Seed}, SnapEpochs: cfg.SnapEpochs, OutMinRange: cfg.OutMinRange}
	t0 := time.Now()
	m, err := ae.Fit(ctx, data, mc)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	trainDur := time.Since(t0)
	// Static QDQ int8: fixed activation scales, so an event's score does not
	// depend on the other events of its batch.
	layout, err := train.ParseLayout(cfg.Layout)
	if err != nil {
		return err
	}
	if cfg.SplitInput {
		layout = train.LayoutSplitInput
	}
	model, err := train.ExportLayout(m, bundle.QuantInt8Static, sample(data, 20000), layout)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	floatModel, err := train.Export(m, bundle.QuantNone, ae.Matrix{})
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	sc, err := runtime.OpenWith("", model, feat.Dim, 4096, runtime.Options{})
	if err != nil {
		return fmt.Errorf("open model: %w", err)
	}
	defer sc.Close()
	met, err := train.Calibrate(sc, hold, ae.Matrix{}, cfg.FPR)
	if err != nil {
		return fmt.Errorf("calibrate: %w", err)
	}
	fsc, err := runtime.OpenWith("", floatModel, feat.Dim, 4096, runtime.Options{})
	if err != nil {
		return fmt.Errorf("open float model: %w", err)
	}
	defer fsc.Close()
	// The float model, calibrated on its own held-out scores at the same
	// FPR: what quantization changes in the ranking and in detection.
	fmet, err := train.Calibrate(fsc, hold, ae.Matrix{}, cfg.FPR)
	if err != nil {
		return fmt.Errorf("calibrate float model: %w", err)
	}
	a, err := train.Scores(sc, hold, 4096)
	if err != nil {
		return fmt.Errorf("score held-out events (int8): %w", err)
	}
	b, err := train.Scores(fsc, hold, 4096)
	if err != nil {
		return fmt.Errorf("score held-out events (float): %w", err)
	}
	q := compareScores(a, b, fmet.Threshold)
	speeds, err := train.SideBySide(sc, fsc, hold)
	if err != nil {
		return err
	}
	log.Info("calibrated", "threshold", met.Threshold, "fpr", met.FPR, "int8_bytes", len(model), "spearman", fmtRho(q.All))

	rep := &Report{
		Created: cfg.Created, Seed: cfg.Seed, FPR: cfg.FPR, Kind: m.Kind, Dim: feat.Dim, Recipe: recipe(cfg),
		TrainRows: data.Rows, HoldoutRows: hold.Rows, TrainSeconds: trainDur.Seconds(),
		Int8Bytes: len(model), FloatBytes: len(floatModel), Threshold: met.Threshold, Metrics: met,
		SpearmanInt8Float: q.All, Spearman: q, FloatThreshold: fmet.Threshold, FloatFPR: fmet.FPR, Speeds: speeds,
	}
	for _, s := range append(append([]*Session{}, trainS...), holdS...) {
		r, err := scoreSession(sc, s, met.Threshold)
		if err != nil {
			return err
		}
		rep.Sessions = append(rep.Sessions, benignReport(s, r))
	}
	for _, s := range attS {
		r, err := scoreSession(sc, s, met.Threshold)
		if err != nil {
			return err
		}
		fr, err := scoreSession(fsc, s, fmet.Threshold)
		if err != nil {
			return err
		}
		ars, fars := attackReport(s, r), attackReport(s, fr)
		for i := range ars {
			ars[i].FloatAnomalous = fars[i].Anomalous
		}
		rep.Attacks = append(rep.Attacks, ars...)
	}
	if cfg.NoWrite {
		return rep.write(os.Stdout)
	}
	// The report is encoded after the bundle is written (it names it):
	// check now that it can be, so that a failure leaves nothing behind.
	if _, err := json.Marshal(rep); err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", cfg.Out, err)
	}
	man := bundle.Manifest{
		Name: "fileactivity", Detector: "fileactivity", Version: cfg.Version, FeatureSet: feat.Name, Dim: feat.Dim,
		Created: cfg.Created, Expires: cfg.Created.Add(cfg.Validity), Quantization: bundle.QuantInt8Static,
	}
	path, err := train.Build(cfg.Out, model, man, met)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	rep.Bundle = filepath.Base(path)
	rep.Digest, _ = bundle.Digest(path)
	log.Info("bundle written", "path", path, "digest", rep.Digest)
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "fileactivity-report.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	md, err := os.Create(filepath.Join(cfg.Out, "fileactivity-REPORT.md"))
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	defer md.Close()
	return rep.write(md)
}

// maxInWindow is the most anomalous events of one tree within any window.
func maxInWindow(evs []event.File, flagged []bool, window time.Duration) int {
	var ts []int64
	for i, f := range flagged {
		if f {
			ts = append(ts, evs[i].TimeNs)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi]-ts[lo] > int64(window) {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

func benignReport(s *Session, r scored) SessionReport {
	sr := SessionReport{Name: s.Name, Kind: s.Kind, Workloads: strings.Join(s.Workloads, ","), Events: len(s.Events),
		Seconds: s.Seconds, Dropped: s.Watch.Dropped}
	fl := make([]bool, len(r.ratio))
	bfl := make([]bool, len(r.ratio))
	for i, x := range r.ratio {
		sr.MaxRatio = math.Max(sr.MaxRatio, x)
		if x > 1 {
			fl[i] = true
			sr.Anomalous++
			if r.burst[i] {
				bfl[i] = true
				sr.BurstAnomalous++
			} else if x > sr.MaxFileRatio {
				sr.MaxFileRatio = x
				sr.MaxFileEvent = fmt.Sprintf("%s %s (%s)", s.Events[i].Op, filepath.Base(s.Events[i].Path), strings.Join(r.top[i], ","))
			}
		}
	}
	sr.MaxBurst10s = maxInWindow(s.Events, bfl, 10*time.Second)
	return sr
}

func attackReport(s *Session, r scored) []AttackReport {
	if len(s.Targets) > 0 {
		var out []AttackReport
		keys := make([]string, 0, len(s.Targets))
		for k := range s.Targets {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, p := range keys {
			ar := AttackReport{Name: s.Targets[p], File: filepath.Base(p)}
			for i := range s.Events {
				if s.Events[i].Path == p && s.Events[i].TimeNs >= s.AttackStart {
					ar.Events++
					if r.ratio[i] > ar.MaxRatio {
						ar.MaxRatio = r.ratio[i]
						ar.Top = strings.Join(r.top[i], ", ")
					}
					if r.ratio[i] > 1 {
						ar.Anomalous++
					}
				}
			}
			ar.Detected = ar.Anomalous > 0
			out = append(out, ar)
		}
		// Benign part of the session (before the drops).
		var pre AttackReport
		pre.Name, pre.File = "office documents before the drops (benign)", "-"
		for i := range s.Events {
			if s.Events[i].TimeNs < s.AttackStart {
				pre.Events++
				if r.ratio[i] > 1 {
					pre.Anomalous++
				}
				pre.MaxRatio = math.Max(pre.MaxRatio, r.ratio[i])
			}
		}
		return append(out, pre)
	}
	ar := AttackReport{Name: s.Name, File: "-"}
	var first int64 = -1
	for i := range s.Events {
		if s.Events[i].TimeNs < s.AttackStart {
			continue
		}
		ar.Events++
		if r.ratio[i] > 1 {
			ar.Anomalous++
			if r.burst[i] {
				ar.BurstAnomalous++
			}
			if first < 0 {
				first = s.Events[i].TimeNs
			}
		}
		if r.ratio[i] > ar.MaxRatio {
			ar.MaxRatio = r.ratio[i]
			ar.Top = strings.Join(r.top[i], ", ")
		}
	}
	ar.Detected = ar.Anomalous > 0
	if first >= 0 {
		d := float64(first-s.AttackStart) / 1e9
		ar.FirstAnomalySeconds = &d
	}
	return []AttackReport{ar}
}

// compareScores is the rank agreement of int8 and float scores of the same
// held-out events: over all of them, over those whose float score is at
// least a tenth of the float threshold (where a decision can change), and
// over the top 5% by float score. A coefficient that is not defined (fewer
// than two events, constant scores on either side, a NaN score) is nil, so
// the report (JSON null, "n/a") is always encodable: a NaN used to fail
// encoding the report after the bundle was written.
func compareScores(int8s, floats []float32, floatThr float64) SpearmanReport {
	var r SpearmanReport
	rho := func(a, b []float32) *float64 {
		v, err := calib.Spearman(a, b)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return &v
	}
	pick := func(keep func(i int) bool) *float64 {
		var a, b []float32
		for i := range floats {
			if i < len(int8s) && keep(i) {
				a, b = append(a, int8s[i]), append(b, floats[i])
			}
		}
		return rho(a, b)
	}
	r.All = rho(int8s, floats)
	r.Near = pick(func(i int) bool { return float64(floats[i]) >= floatThr/10 })
	sorted := slices.Clone(floats)
	slices.Sort(sorted)
	if len(sorted) > 0 {
		cut := sorted[len(sorted)*95/100]
		r.Top5 = pick(func(i int) bool { return floats[i] >= cut })
	}
	return r
}

// recipe describes the training configuration for the report.
func recipe(cfg Config) string {
	shape := fmt.Sprintf("single autoencoder, hidden ratio %g", cfg.Hidden)
	if cfg.Kind != ae.KindSingle {
		shape = fmt.Sprintf("KitNET, at most %d features per autoencoder, hidden ratio %g", cfg.MaxGroup, cfg.Hidden)
	}
	norm := fmt.Sprintf("%s normalisation (spread floor %g)", cfg.Norm, cfg.MinRange)
	if cfg.Kind != ae.KindSingle && cfg.OutMinRange > 0 {
		norm += fmt.Sprintf(", output normalisation of the group RMSEs with spread floor %g", cfg.OutMinRange)
	}
	epochs := fmt.Sprintf("%d epochs", cfg.Epochs)
	if cfg.SnapEpochs > 0 {
		epochs += fmt.Sprintf(" and %d with the encoders' weights on their int8 grid", cfg.SnapEpochs)
	}
	return fmt.Sprintf("%s, %s, %s, seed %d, static int8 QDQ (int8 encoder, float decoder, AMX-safe widths)",
		shape, norm, epochs, cfg.Seed)
}
