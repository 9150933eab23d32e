package app

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/plugins/sdk"
)

// modelPlugin is a detector plugin that loads bundles and scores NaN with a model containing "NaN".
type modelPlugin struct {
	mu     sync.Mutex
	active string
	model  sdk.ModelInfo
	nan    bool
}

func (p *modelPlugin) Info() sdk.Info {
	return sdk.Info{Name: "netflow", FeatureSets: []string{"netflow/v1"}, Dim: 4}
}

func (p *modelPlugin) LoadModel(_ context.Context, path string) (sdk.ModelInfo, error) {
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.active, p.nan = path, bytes.Contains(b.Model, []byte("NaN"))
	p.model = sdk.ModelInfo{Name: b.Manifest.Name, Version: b.Manifest.Version, FeatureSet: b.Manifest.FeatureSet}
	return p.model, nil
}

func (p *modelPlugin) Health(context.Context) (sdk.Health, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return sdk.Health{OK: true, Model: p.model}, nil
}

func (p *modelPlugin) Probe(context.Context) (sdk.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.nan {
		return sdk.Result{Scores: []float32{float32(math.NaN())}}, nil
	}
	return sdk.Result{Scores: []float32{0.1}, Stats: sdk.Stats{Count: 1, P50: 0.1, P90: 0.1, P99: 0.1, Max: 0.1}}, nil
}

// loaderSource is a running pipeline serving the netflow detector with plugin.
type loaderSource struct{ plugin *modelPlugin }

func (s loaderSource) Name() string                             { return "netflow" }
func (s loaderSource) Run(context.Context, pipeline.Sink) error { return nil }
func (s loaderSource) ModelLoaders() update.LoaderMap           { return update.LoaderMap{"netflow": s.plugin} }

// TestUpdaterRestoresInstalledBaseline: on an agent whose pipeline runs its installed baseline, a
// model failing its health check is replaced in the pipeline's plugin by that baseline: the
// rejected model is not left loaded.
func TestUpdaterRestoresInstalledBaseline(t *testing.T) {
	state := t.TempDir()
	signer := signtest.NewSigner(t, sign.AlgEd25519)
	if err := signtest.Policy(t, 1, signer).WriteFile(filepath.Join(state, update.TrustFile)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	installed := filepath.Join(state, update.ModelsDir) // a directory the pipeline takes baselines from
	if err := os.MkdirAll(installed, 0o750); err != nil {
		t.Fatal(err)
	}
	signtest.WriteBundle(t, installed, []byte("baseline 1"), signtest.Manifest("base", 1, now), signer)
	base := signtest.WriteBundle(t, installed, []byte("baseline 2"), signtest.Manifest("base", 2, now), signer)
	plugin := &modelPlugin{}
	if _, err := plugin.LoadModel(context.Background(), base); err != nil { // the pipeline runs it
		t.Fatal(err)
	}
	a, err := newUpdater(state, "", dirsOf(nil, nil), []pipeline.Source{loaderSource{plugin}}, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	bad := signtest.WriteBundle(t, t.TempDir(), []byte("NaN model"), signtest.Manifest("nf", 3, now), signer)
	_, err = a.u.Install(context.Background(), update.Request{Path: bad})
	var rej *update.Rejection
	if !errors.As(err, &rej) || rej.State != update.StateRolledBack {
		t.Fatalf("err = %v, want rolled back", err)
	}
	if plugin.active != base {
		t.Fatalf("the pipeline's plugin runs %s, want its baseline %s", plugin.active, base)
	}
	// The same baseline, and floor, for an updater with no running pipeline (vigil-agent update):
	// TestUpdateCommandKeepsBaselineFloor.
	if p := installedBaseline(baselineDirs(state, dirsOf(nil, nil)))("netflow", "netflow/v1"); p != base {
		t.Fatalf("baseline %q without a running pipeline, want %s", p, base)
	}
}
