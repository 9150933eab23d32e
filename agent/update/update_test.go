package update

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/rollback"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/models/trust"
	"github.com/vigil-edge/vigil/plugins/sdk"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// fakeLoader is a plugin: it parses bundles like a real one and can be told to misbehave.
type fakeLoader struct {
	mu      sync.Mutex
	info    sdk.Info
	active  string // loaded bundle path
	model   sdk.ModelInfo
	loads   []string
	loadErr error
	nan     bool // the probe scores NaN (a broken model)
}

func newFakeLoader() *fakeLoader {
	return &fakeLoader{info: sdk.Info{Name: "netflow", FeatureSets: []string{"netflow/v1", "nethost/v1"}, Dim: 4}}
}

func (f *fakeLoader) Info() sdk.Info { return f.info }
func (f *fakeLoader) LoadModel(_ context.Context, path string) (sdk.ModelInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads = append(f.loads, path)
	if f.loadErr != nil {
		return sdk.ModelInfo{}, f.loadErr
	}
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	f.active = path
	f.model = sdk.ModelInfo{Name: b.Manifest.Name, Version: b.Manifest.Version, FeatureSet: b.Manifest.FeatureSet}
	f.nan = bytes.Contains(b.Model, []byte("NaN"))
	return f.model, nil
}
func (f *fakeLoader) Health(context.Context) (sdk.Health, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sdk.Health{OK: true, Model: f.model}, nil
}
func (f *fakeLoader) Probe(context.Context) (sdk.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nan {
		return sdk.Result{Scores: []float32{1, float32(math.NaN())}}, nil
	}
	return sdk.Result{Scores: []float32{0.1, 0.2}, Stats: sdk.Stats{Count: 2, P50: 0.1, P90: 0.2, P99: 0.2, Max: 0.2}}, nil
}
func (f *fakeLoader) loaded() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active
}

type env struct {
	t       *testing.T
	state   string
	src     string
	now     time.Time
	a, b    *sign.Signer
	loader  *fakeLoader
	reports []*wirev1.ModelStatus
	mu      sync.Mutex
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, state: t.TempDir(), src: t.TempDir(), now: time.Now(), loader: newFakeLoader()}
	e.a = signtest.NewSigner(t, sign.AlgEd25519)
	e.b = signtest.NewSigner(t, sign.AlgECDSAP256)
	pol := signtest.Policy(t, 1, e.a, e.b)
	if err := pol.WriteFile(filepath.Join(e.state, TrustFile)); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) updater(fp func(Step) error) *Updater {
	u, err := New(Config{StateDir: e.state, Loaders: LoaderMap{"netflow": e.loader}, Now: func() time.Time { return e.now },
		Failpoint: fp, RetryMin: time.Millisecond, RetryMax: 5 * time.Millisecond,
		Report: func(s *wirev1.ModelStatus) { e.mu.Lock(); e.reports = append(e.reports, s); e.mu.Unlock() }})
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

func (e *env) bundle(name string, ver uint64, edit func(*bundle.Manifest), model string, signers ...*sign.Signer) string {
	m := signtest.Manifest(name, ver, e.now)
	if edit != nil {
		edit(&m)
	}
	dir := filepath.Join(e.src, fmt.Sprint(time.Now().UnixNano()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if len(signers) == 0 {
		signers = []*sign.Signer{e.a}
	}
	return signtest.WriteBundle(e.t, dir, []byte(model), m, signers...)
}

func install(t *testing.T, u *Updater, path string) {
	t.Helper()
	res, err := u.Install(context.Background(), Request{Path: path})
	if err != nil || res.State != StateActive {
		t.Fatalf("install %s: %+v %v", path, res, err)
	}
}

// rewriteTar replaces a member of a bundle (tampering).
func rewriteTar(t *testing.T, path string, model []byte, env []byte) string {
	t.Helper()
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if model == nil {
		model = b.Model
	}
	if env == nil {
		env = b.EnvelopeJSON
	}
	var buf bytes.Buffer
	if err := bundle.PackEnvelope(&buf, model, env, b.Manifest.Created); err != nil {
		t.Fatal(err)
	}
	out := path + ".tampered.vgb"
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestInstallRejections(t *testing.T) {
	e := newEnv(t)
	u := e.updater(nil)
	v1 := e.bundle("nf", 1, nil, "model-1")
	install(t, u, v1)
	stranger := signtest.NewSigner(t, sign.AlgEd25519)

	alteredModel := rewriteTar(t, e.bundle("nf", 5, nil, "model-5"), []byte("model-X"), nil)
	var alteredManifest string
	{
		p := e.bundle("nf", 6, nil, "model-6")
		b, _ := bundle.Read(p, bundle.DefaultLimits())
		payload, _ := sign.DecodeBase64(b.Envelope.Payload)
		payload = bytes.Replace(payload, []byte(`"threshold":0.5`), []byte(`"threshold":9.5`), 1)
		env := b.Envelope
		env.Payload = encodeB64(payload)
		j, _ := json.Marshal(env)
		alteredManifest = rewriteTar(t, p, nil, j)
	}
	unsigned := func() string {
		m := signtest.Manifest("nf", 7, e.now)
		dir := t.TempDir()
		p, err := bundle.WriteFile(dir, []byte("model-7"), &m)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}()

	tests := []struct {
		name, path, want string
		setup            func()
	}{
		{"unsigned", unsigned, "signature check failed", nil},
		{"untrusted key", e.bundle("nf", 2, nil, "m", stranger), "signature check failed", nil},
		{"model altered", alteredModel, "malformed or tampered", nil},
		{"manifest altered", alteredManifest, "signature check failed", nil},
		{"equal version", e.bundle("nf", 1, nil, "model-1b"), "not greater than the active version 1", nil},
		{"expired", e.bundle("nf", 3, func(m *bundle.Manifest) {
			m.Created = e.now.Add(-48 * time.Hour).Truncate(time.Second)
			m.Expires = e.now.Add(-time.Hour).Truncate(time.Second)
		}, "m"), "expired", nil},
		{"wrong feature set", e.bundle("nf", 4, func(m *bundle.Manifest) { m.FeatureSet = "fileactivity/v1" }, "m"), "feature set fileactivity/v1 not supported", nil},
		{"wrong dim", e.bundle("nf", 4, func(m *bundle.Manifest) { m.Dim = 7 }, "m"), "dimension 7", nil},
		{"unknown detector", e.bundle("nf", 4, func(m *bundle.Manifest) { m.Detector = "dns" }, "m"), `no "dns" detector`, nil},
		{"plugin refuses", e.bundle("nf", 8, nil, "m"), "plugin refused", func() { e.loader.loadErr = errors.New("bad onnx") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.loader.loadErr = nil
			if tt.setup != nil {
				tt.setup()
			}
			loads := len(e.loader.loads)
			_, err := u.Install(context.Background(), Request{Path: tt.path})
			var rej *Rejection
			if !errors.As(err, &rej) || rej.State != StateRejected || !strings.Contains(rej.Reason, tt.want) {
				t.Fatalf("err = %v, want rejection containing %q", err, tt.want)
			}
			if tt.setup == nil && len(e.loader.loads) != loads {
				t.Fatal("a rejected bundle reached the plugin")
			}
			if a, ok := u.Active("netflow", "netflow/v1"); !ok || a.Manifest.Version != 1 {
				t.Fatalf("active = %+v %v, want version 1", a, ok)
			}
		})
	}
}

func encodeB64(b []byte) string {
	var buf bytes.Buffer
	w := newB64(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.String()
}

func TestThreshold(t *testing.T) {
	e := newEnv(t)
	pol := signtest.Policy(t, 2, e.a, e.b)
	if err := pol.WriteFile(filepath.Join(e.state, TrustFile)); err != nil {
		t.Fatal(err)
	}
	u := e.updater(nil)
	_, err := u.Install(context.Background(), Request{Path: e.bundle("nf", 1, nil, "m", e.a)})
	if !errors.Is(err, trust.ErrThreshold) {
		t.Fatalf("one of two signatures: %v", err)
	}
	install(t, u, e.bundle("nf", 1, nil, "m", e.a, e.b))
}

func TestHealthFailureRollsBack(t *testing.T) {
	e := newEnv(t)
	u := e.updater(nil)
	v1 := e.bundle("nf", 1, nil, "model-1")
	install(t, u, v1)
	_, err := u.Install(context.Background(), Request{Path: e.bundle("nf", 2, nil, "NaN model")})
	var rej *Rejection
	if !errors.As(err, &rej) || rej.State != StateRolledBack {
		t.Fatalf("err = %v, want rolled back", err)
	}
	a, ok := u.Active("netflow", "netflow/v1")
	if !ok || a.Manifest.Version != 1 {
		t.Fatalf("active = %+v", a)
	}
	if e.loader.loaded() != a.Path {
		t.Fatalf("plugin runs %s, want the previous %s", e.loader.loaded(), a.Path)
	}
}

func TestRollbackInstruction(t *testing.T) {
	e := newEnv(t)
	u := e.updater(nil)
	v1 := e.bundle("nf", 1, nil, "model-1")
	install(t, u, v1)
	install(t, u, e.bundle("nf", 2, nil, "model-2"))
	b1, _ := bundle.Read(v1, bundle.DefaultLimits())
	instr, err := rollback.Sign(rollback.For(&b1.Manifest, e.now, time.Hour, "v2 noisy"), e.a)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rollback.Sign(rollback.For(&b1.Manifest, e.now, time.Hour, ""), signtest.NewSigner(t, sign.AlgEd25519))
	if _, err := u.Install(context.Background(), Request{Path: v1, Rollback: other}); err == nil {
		t.Fatal("rollback with an untrusted instruction accepted")
	}
	res, err := u.Install(context.Background(), Request{Path: v1, Rollback: instr})
	if err != nil || res.State != StateActive {
		t.Fatalf("signed rollback: %+v %v", res, err)
	}
	if a, _ := u.Active("netflow", "netflow/v1"); a.Manifest.Version != 1 {
		t.Fatalf("active version %d after rollback", a.Manifest.Version)
	}
}

// TestCrashAtEveryStep injects a crash at each step and re-opens: the agent is on a valid model
// (old or new, never none), and a retried update completes.
func TestCrashAtEveryStep(t *testing.T) {
	for _, step := range []Step{StepVerified, StepStaged, StepLoaded, StepHealthy, StepPrevious, StepActivated} {
		t.Run(string(step), func(t *testing.T) {
			e := newEnv(t)
			install(t, e.updater(nil), e.bundle("nf", 1, nil, "model-1"))
			v2 := e.bundle("nf", 2, nil, "model-2")
			crash := errors.New("crash")
			_, err := e.updater(func(s Step) error {
				if s == step {
					return crash
				}
				return nil
			}).Install(context.Background(), Request{Path: v2})
			if !errors.Is(err, crash) {
				t.Fatalf("err = %v", err)
			}
			// Restart: a fresh updater and a fresh plugin.
			e.loader = newFakeLoader()
			u := e.updater(nil)
			act, err := u.Recover()
			if err != nil || len(act) != 1 {
				t.Fatalf("recover: %v %v", act, err)
			}
			v := act[0].Manifest.Version
			if v != 1 && v != 2 || (step == StepActivated && v != 2) || (step != StepActivated && v != 1) {
				t.Fatalf("after a crash at %s the active version is %d", step, v)
			}
			if _, err := e.loader.LoadModel(context.Background(), act[0].Path); err != nil {
				t.Fatalf("active bundle does not load: %v", err)
			}
			install(t, u, v2)
		})
	}
}

func TestRecoverDamagedActive(t *testing.T) {
	e := newEnv(t)
	u := e.updater(nil)
	install(t, u, e.bundle("nf", 1, nil, "model-1"))
	install(t, u, e.bundle("nf", 2, nil, "model-2"))
	a, _ := u.Active("netflow", "netflow/v1")
	if err := os.WriteFile(a.Path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	act, err := e.updater(nil).Recover()
	if err != nil || len(act) != 1 || act[0].Manifest.Version != 1 {
		t.Fatalf("recover: %+v %v", act, err)
	}
}

// fakeFetcher serves files by digest; failAt makes the first attempt break after that many bytes.
type fakeFetcher struct {
	mu      sync.Mutex
	files   map[string][]byte
	failAt  int
	offsets []uint64
}

func (f *fakeFetcher) Fetch(_ context.Context, digest string, off, max uint64, w io.Writer) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offsets = append(f.offsets, off)
	data, ok := f.files[digest]
	if !ok {
		return 0, ErrNotFound
	}
	rest := data[off:]
	if f.failAt > 0 && int(off)+len(rest) > f.failAt {
		n := f.failAt - int(off)
		f.failAt = 0
		if _, err := w.Write(rest[:n]); err != nil {
			return 0, err
		}
		return 0, errors.New("connection lost")
	}
	if _, err := w.Write(rest); err != nil {
		return 0, err
	}
	return uint64(len(data)), nil
}

func (e *env) offer(path, rollout string) (*wirev1.ModelOffer, []byte) {
	data, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	d, _ := FileDigest(path)
	return &wirev1.ModelOffer{RolloutId: rollout, Model: &wirev1.ModelRef{Name: "nf", Digest: d, Detector: "netflow"}, Size: uint64(len(data))}, data
}

func (e *env) lastState(rollout string) (string, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.reports) - 1; i >= 0; i-- {
		if e.reports[i].RolloutId == rollout {
			return e.reports[i].State, e.reports[i].Reason
		}
	}
	return "", ""
}

func TestOfferFetchResume(t *testing.T) {
	e := newEnv(t)
	ff := &fakeFetcher{files: map[string][]byte{}}
	u := e.updater(nil)
	u.cfg.Fetcher = ff
	install(t, u, e.bundle("nf", 1, nil, "model-1"))
	o, data := e.offer(e.bundle("nf", 2, nil, strings.Repeat("model-2", 500)), "r1")
	ff.files[o.Model.Digest] = data
	ff.failAt = len(data) / 2
	u.processOffer(context.Background(), o)
	if st, reason := e.lastState("r1"); st != StateActive {
		t.Fatalf("state %s %s", st, reason)
	}
	if len(ff.offsets) != 2 || ff.offsets[1] != uint64(len(data)/2) {
		t.Fatalf("fetch offsets %v, want a resume from %d", ff.offsets, len(data)/2)
	}
	// Offered again: reported active at once, nothing fetched.
	u.processOffer(context.Background(), o)
	if len(ff.offsets) != 2 {
		t.Fatal("an active bundle was fetched again")
	}

	// Wrong size in the offer (server sends more): rejected, never loaded.
	o3, data3 := e.offer(e.bundle("nf", 3, nil, "model-3"), "r3")
	ff.files[o3.Model.Digest] = append(data3, 0)
	u.processOffer(context.Background(), o3)
	if st, reason := e.lastState("r3"); st != StateRejected || !strings.Contains(reason, "download failed") {
		t.Fatalf("oversized: %s %s", st, reason)
	}
	// Truncated / different bytes under the right size: digest mismatch.
	o4, data4 := e.offer(e.bundle("nf", 4, nil, "model-4"), "r4")
	bad := bytes.Clone(data4)
	bad[len(bad)-1] ^= 1
	ff.files[o4.Model.Digest] = bad
	u.processOffer(context.Background(), o4)
	if st, reason := e.lastState("r4"); st != StateRejected || !strings.Contains(reason, "digest") {
		t.Fatalf("altered download: %s %s", st, reason)
	}
	if a, _ := u.Active("netflow", "netflow/v1"); a.Manifest.Version != 2 {
		t.Fatalf("active %d", a.Manifest.Version)
	}
}

func TestShadowReport(t *testing.T) {
	e := newEnv(t)
	u := e.updater(nil)
	install(t, u, e.bundle("nf", 1, nil, "model-1"))
	_, err := u.Install(context.Background(), Request{Path: e.bundle("nf", 2, nil, "model-2"), Shadow: true, RolloutID: "s"})
	var rej *Rejection
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "shadow mode is not supported") {
		t.Fatalf("shadow without support: %v", err)
	}
	sl := &shadowLoader{fakeLoader: e.loader}
	u.cfg.Loaders = LoaderMap{"netflow": sl}
	res, err := u.Install(context.Background(), Request{Path: e.bundle("nf", 2, nil, "model-2"), Shadow: true, RolloutID: "s"})
	if err != nil || res.State != StateShadow {
		t.Fatalf("shadow: %+v %v", res, err)
	}
	if a, _ := u.Active("netflow", "netflow/v1"); a.Manifest.Version != 1 {
		t.Fatal("shadow model activated")
	}
	u.ObserveShadow(sdk.Stats{Count: 100, Anomalies: 1, P99: 0.3}, sdk.Stats{Count: 100, Anomalies: 7, P99: 0.9})
	sum, ok := u.ShadowReport()
	if !ok || sum.Active.Anomalies != 1 || sum.Shadow.Anomalies != 7 || sum.Batches != 1 {
		t.Fatalf("summary %+v", sum)
	}
	if st, reason := e.lastState("s"); st != StateShadow || !strings.Contains(reason, `"anomalies":7`) {
		t.Fatalf("report %s %s", st, reason)
	}
	// The loader got the updater's observer: what the pipeline observes lands in the summary.
	sl.observe(sdk.Stats{Count: 50, Anomalies: 0, P50: 0.1, P90: 0.2, P99: 0.25, Max: 0.3}, sdk.Stats{Count: 50, Anomalies: 3, P50: 0.4, P90: 0.5, P99: 0.95, Max: 2})
	sum, _ = u.ShadowReport()
	if sum.Batches != 2 || sum.Active.Events != 150 || sum.Shadow.Anomalies != 10 || sum.Shadow.MaxP99 != 0.95 || sum.Shadow.Max != 2 || sum.Active.MaxP90 != 0.2 {
		t.Fatalf("summary after the loader's observation %+v", sum)
	}
	staged := sl.shadow
	if _, err := os.Stat(staged); err != nil {
		t.Fatalf("staged shadow bundle: %v", err)
	}

	// A withdrawal of another rollout changes nothing; of this one, stops the shadow model.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { _ = u.Run(ctx); close(done) }()
	// The same shadow rollout offered again (the agent's Hello did not list it: it was still
	// installing it) keeps the running shadow model and its summary: no download (this updater
	// has no fetcher, which would reject it), no restart, a fresh "shadow" report.
	rid, ref, on := u.ShadowRunning()
	if !on || rid != "s" {
		t.Fatalf("shadow running: %q %v", rid, on)
	}
	e.mu.Lock()
	e.reports = nil
	e.mu.Unlock()
	u.HandleOffer(&wirev1.ModelOffer{RolloutId: "s", Size: 10, Shadow: true, Model: ref})
	waitUntil(t, func() bool { st, _ := e.lastState("s"); return st != "" })
	if st, reason := e.lastState("s"); st != StateShadow || !strings.Contains(reason, `"batches":2`) {
		t.Fatalf("repeated offer of the running shadow rollout: %s %s", st, reason)
	}
	if sl.stopped != 0 || sl.shadow != staged {
		t.Fatalf("repeated offer restarted the shadow model: stopped %d, path %s", sl.stopped, sl.shadow)
	}
	u.HandleWithdrawal(&wirev1.ModelWithdrawal{RolloutId: "other", Reason: "x",
		Model: &wirev1.ModelRef{Name: "nf", Version: 9, Digest: "sha256:" + strings.Repeat("b", 64), Detector: "netflow"}})
	u.HandleWithdrawal(&wirev1.ModelWithdrawal{RolloutId: "s", Reason: "halted automatically: too many alerts"})
	waitUntil(t, func() bool { st, _ := e.lastState("s"); return st == StateWithdrawn })
	if st, reason := e.lastState("s"); !strings.Contains(reason, "too many alerts") {
		t.Fatalf("withdrawn %s %q", st, reason)
	}
	if st, _ := e.lastState("other"); st != StateWithdrawn {
		t.Fatalf("withdrawal of a rollout not running here: state %q, want it settled as withdrawn", st)
	}
	if sl.stopped != 1 {
		t.Fatalf("StopShadow called %d times", sl.stopped)
	}
	if _, ok := u.ShadowReport(); ok {
		t.Fatal("shadow summary still reported after the withdrawal")
	}
	if _, err := os.Stat(staged); !os.IsNotExist(err) {
		t.Fatalf("staged shadow bundle left behind: %v", err)
	}
	if a, _ := u.Active("netflow", "netflow/v1"); a.Manifest.Version != 1 {
		t.Fatal("withdrawal changed the active model")
	}
	// An offer of a withdrawn rollout is dropped before download.
	u.HandleOffer(&wirev1.ModelOffer{RolloutId: "s", Size: 10, Shadow: true,
		Model: &wirev1.ModelRef{Name: "nf", Version: 2, Digest: "sha256:" + strings.Repeat("c", 64), Detector: "netflow"}})
	waitUntil(t, func() bool {
		st, reason := e.lastState("s")
		return st == StateWithdrawn && strings.Contains(reason, "before it was installed")
	})
	cancel()
	<-done
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached in 5 s")
}

type shadowLoader struct {
	*fakeLoader
	shadow  string
	observe func(active, shadow sdk.Stats)
	stopped int
}

func (s *shadowLoader) LoadShadow(_ context.Context, path string, observe func(active, shadow sdk.Stats)) (sdk.ModelInfo, error) {
	s.shadow, s.observe = path, observe
	return sdk.ModelInfo{}, nil
}

func (s *shadowLoader) StopShadow(context.Context) error {
	s.stopped++
	return nil
}

func FuzzHandleOffer(f *testing.F) {
	f.Add("r1", "sha256:"+strings.Repeat("a", 64), uint64(100), "nf", false, false)
	f.Add("", "", uint64(0), "", true, true)
	f.Fuzz(func(t *testing.T, rid, digest string, size uint64, name string, shadow, rb bool) {
		u, err := New(Config{StateDir: t.TempDir(), Loaders: LoaderMap{}})
		if err != nil {
			t.Fatal(err)
		}
		o := &wirev1.ModelOffer{RolloutId: rid, Model: &wirev1.ModelRef{Name: name, Digest: digest}, Size: size, Shadow: shadow, Rollback: rb}
		u.HandleOffer(o)
		u.HandleOffer(nil)
		u.HandleOffer(&wirev1.ModelOffer{})
		if CheckOffer(o, u.cfg.MaxBundle) == nil && !digestRE.MatchString(digest) {
			t.Fatal("accepted a malformed digest")
		}
	})
}

// startingLoader is a plugin host whose plugin is not up until started is closed: until then
// it describes no feature set.
type startingLoader struct {
	*fakeLoader
	started chan struct{}
	waited  atomic.Bool
}

func (s *startingLoader) Info() sdk.Info {
	select {
	case <-s.started:
		return s.fakeLoader.Info()
	default:
		return sdk.Info{}
	}
}

func (s *startingLoader) WaitRunning(ctx context.Context) error {
	s.waited.Store(true)
	select {
	case <-s.started:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestInstallWaitsForPlugin: an offer that arrives while the pipeline's plugin is starting (the
// agent just started, and the server repeats pending offers at Hello) waits for it (StartWaiter)
// and is installed. Before, the updater read the plugin's description at once, found no feature
// set, and refused the model: "feature set ... not supported by the netflow plugin (it accepts )".
// A plugin that never comes up gets the offer refused with the reason.
func TestInstallWaitsForPlugin(t *testing.T) {
	e := newEnv(t)
	sl := &startingLoader{fakeLoader: e.loader, started: make(chan struct{})}
	u, err := New(Config{StateDir: e.state, Loaders: LoaderMap{"netflow": sl}, Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	p := e.bundle("nf", 1, nil, "m")
	time.AfterFunc(100*time.Millisecond, func() { close(sl.started) })
	res, err := u.Install(context.Background(), Request{Path: p})
	if err != nil || res.State != StateActive || !sl.waited.Load() {
		t.Fatalf("install while the plugin starts: %+v %v (waited %v)", res, err, sl.waited.Load())
	}

	never := &startingLoader{fakeLoader: newFakeLoader(), started: make(chan struct{})}
	u2, err := New(Config{StateDir: t.TempDir(), Loaders: LoaderMap{"netflow": never}, Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := signtest.Policy(t, 1, e.a).WriteFile(filepath.Join(u2.cfg.StateDir, TrustFile)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = u2.Install(ctx, Request{Path: p})
	var rej *Rejection
	if !errors.As(err, &rej) || !strings.Contains(rej.Reason, "plugin is not running") {
		t.Fatalf("plugin never up: %v", err)
	}
}

// TestMinAgentVersionRefused: a bundle whose min_agent_version is newer than the agent is
// refused with both versions named, and the active model stays; an agent at that version or
// later installs it; a development build cannot compare and installs it (with a warning).
func TestMinAgentVersionRefused(t *testing.T) {
	e := newEnv(t)
	u := e.updater(nil)
	install(t, u, e.bundle("nf", 1, nil, "model-1"))
	needs := func(m *bundle.Manifest) { m.MinAgentVersion = "1.4.0" }

	u.cfg.AgentVersion = "v1.3.2-7-g1a2b3c4"
	_, err := u.Install(context.Background(), Request{Path: e.bundle("nf", 2, needs, "model-2")})
	var rej *Rejection
	if !errors.As(err, &rej) || rej.State != StateRejected || !strings.Contains(rej.Reason, "needs agent version 1.4.0 or later; this agent is v1.3.2-7-g1a2b3c4") {
		t.Fatalf("bundle for a newer agent: %v", err)
	}
	if a, _ := u.Active("netflow", "netflow/v1"); a.Manifest.Version != 1 {
		t.Fatalf("active version %d after the refusal, want 1", a.Manifest.Version)
	}
	u.cfg.AgentVersion = "1.4.0"
	install(t, u, e.bundle("nf", 2, needs, "model-2"))
	u.cfg.AgentVersion = "dev"
	install(t, u, e.bundle("nf", 3, needs, "model-3"))
}

// cancellingLoader cancels the updater's context while it loads a model, as an agent shutting
// down stops its pipelines, and fails the load.
type cancellingLoader struct {
	*fakeLoader
	cancel context.CancelFunc
}

func (c *cancellingLoader) LoadModel(ctx context.Context, path string) (sdk.ModelInfo, error) {
	c.cancel()
	return sdk.ModelInfo{}, errors.New("plugin host closed")
}

// TestOfferInterruptedByShutdown: an install that fails because the agent is stopping is not
// reported rejected (final: the server would never offer the rollout again); the last report
// stays "verified", the previous model stays active, and the next offer installs it.
func TestOfferInterruptedByShutdown(t *testing.T) {
	e := newEnv(t)
	ff := &fakeFetcher{files: map[string][]byte{}}
	u := e.updater(nil)
	u.cfg.Fetcher = ff
	install(t, u, e.bundle("nf", 1, nil, "model-1"))
	o, data := e.offer(e.bundle("nf", 2, nil, "model-2"), "r1")
	ff.files[o.Model.Digest] = data
	ctx, cancel := context.WithCancel(context.Background())
	u.cfg.Loaders = LoaderMap{"netflow": &cancellingLoader{fakeLoader: e.loader, cancel: cancel}}
	u.processOffer(ctx, o)
	if st, reason := e.lastState("r1"); st != StateVerified {
		t.Fatalf("install interrupted by shutdown reported %s %q, want the last report verified (not final)", st, reason)
	}
	if a, _ := u.Active("netflow", "netflow/v1"); a.Manifest.Version != 1 {
		t.Fatalf("active version %d, want 1", a.Manifest.Version)
	}
	u.cfg.Loaders = LoaderMap{"netflow": e.loader}
	u.processOffer(context.Background(), o)
	if st, reason := e.lastState("r1"); st != StateActive {
		t.Fatalf("offered again after the restart: %s %q", st, reason)
	}
}
