package update

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/pluginhost"
	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
)

// HostLoader adapts a running plugin host (agent/pluginhost) to ModelLoader. The detector
// pipeline that owns the host hands it to the updater, so an activated model is the one the
// live pipeline scores with:
//
//	updater.Config.Loaders = update.LoaderMap{"netflow": update.HostLoader{Host: pipelineHost}}
//
// A plugin started by root runs as nobody and cannot read the agent's state directory, and a
// plugin's sandbox (pluginhost.Sandbox) lets it read only the paths fixed at its start; when
// StageDir is set (a directory the plugin can read, in its Sandbox.ReadOnly), LoadModel first
// copies the bundle (public, signed data) there, world-readable.
type HostLoader struct {
	Host     *pluginhost.Host
	StageDir string
}

var _ ModelLoader = HostLoader{}

// Info implements ModelLoader.
func (h HostLoader) Info() sdk.Info { return h.Host.Info().Info }

// WaitRunning implements StartWaiter: it waits, at most the host's
// StartTimeout, for a plugin instance to be up.
func (h HostLoader) WaitRunning(ctx context.Context) error { return h.Host.WaitStarted(ctx) }

// LoadModel implements ModelLoader (the host reloads it into restarted plugin instances).
func (h HostLoader) LoadModel(ctx context.Context, path string) (sdk.ModelInfo, error) {
	path, err := StageForPlugin(h.StageDir, path, "")
	if err != nil {
		return sdk.ModelInfo{}, err
	}
	return h.Host.LoadModel(ctx, path)
}

// StartShadowPlugin starts the plugin host of a pipeline's shadow instance
// (a ShadowLoader) and loads the shadow bundle into it. hc configures the
// instance. The bundle at path is staged in stageDir (StageForPlugin, as
// shadow-<bundle>), added to the sandbox's readable paths, loaded with
// LoadModel once the instance runs (the host reloads it into a restarted
// one: a bundle the plugin cannot load fails here, instead of leaving an
// instance that runs without it) and checked as the updater checks a model
// (CheckLoaded). On error nothing runs: closeHost has closed the host and
// the staged copy is gone. staged is the copy to remove when the shadow
// stops ("" when the plugin reads path itself).
func StartShadowPlugin(ctx context.Context, hc pluginhost.Config, stageDir, path string, m *bundle.Manifest,
	closeHost func(*pluginhost.Host)) (h *pluginhost.Host, staged string, err error) {
	plugPath, err := StageForPlugin(stageDir, path, "shadow-")
	if err != nil {
		return nil, "", err
	}
	if plugPath != path {
		staged = plugPath
	}
	fail := func(err error) (*pluginhost.Host, string, error) {
		if staged != "" {
			_ = os.Remove(staged)
		}
		return nil, "", err
	}
	hc.Sandbox.ReadOnly = append(slices.Clone(hc.Sandbox.ReadOnly), plugPath)
	if h, err = pluginhost.New(hc); err != nil {
		return fail(fmt.Errorf("shadow plugin: %w", err))
	}
	if err := h.Start(ctx); err != nil {
		closeHost(h)
		return fail(fmt.Errorf("start shadow plugin: %w", err))
	}
	if _, err := h.LoadModel(ctx, plugPath); err != nil {
		closeHost(h)
		return fail(fmt.Errorf("shadow plugin refused the model: %w", err))
	}
	if err := CheckLoaded(ctx, HostLoader{Host: h}, m); err != nil {
		closeHost(h)
		return fail(fmt.Errorf("shadow plugin: %w", err))
	}
	return h, staged, nil
}

// StageForPlugin copies the bundle at path into dir, a directory the plugin's
// sandbox lets it read, world-readable (bundles are public, signed data), as
// prefix + its base name, and returns the copy's path; with dir "" it returns
// path. Only a regular file is copied (a symbolic link to one is followed), at most the bundle
// size limit: a named pipe would otherwise hold the caller for good.
func StageForPlugin(dir, path, prefix string) (string, error) {
	if dir == "" {
		return path, nil
	}
	b, err := fsutil.ReadRegular(path, bundle.DefaultLimits().MaxTotal)
	if err != nil {
		return "", fmt.Errorf("stage for the plugin: %w", err)
	}
	out := filepath.Join(dir, prefix+filepath.Base(path))
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return "", fmt.Errorf("stage for the plugin: %w", err)
	}
	return out, nil
}

// Health implements ModelLoader.
func (h HostLoader) Health(ctx context.Context) (sdk.Health, error) { return h.Host.Health(ctx) }

// Probe implements ModelLoader: it scores sdk.ProbePackets (or sdk.ProbeFiles for a file detector) with
// one unary call, outside the ring.
func (h HostLoader) Probe(ctx context.Context) (sdk.Result, error) {
	if h.Host.Info().EventKind == sdk.EventFile {
		return h.Host.ScoreFiles(ctx, sdk.ProbeFiles())
	}
	return h.Host.Score(ctx, sdk.ProbePackets())
}

// PluginLoaders starts the detector's plugin binary, vigil-detector-<detector>, just for the
// duration of an update (air-gapped `vigil-agent update`, or an agent whose running pipeline does
// not serve that detector). The check is the same: the real plugin, confined as usual, loads the
// bundle (copied into a stage directory first) and scores the probe batch.
type PluginLoaders struct {
	// Dirs are searched in order for vigil-detector-<detector>.
	Dirs []string
	// Env is the plugin's environment (e.g. ONNXRUNTIME_LIB=...).
	Env []string
	// Running, when set, is consulted first (the running pipeline's hosts).
	Running LoaderMap
	Logger  *slog.Logger
}

// DefaultPluginDirs: next to the agent binary, then the packaged locations.
func DefaultPluginDirs() []string {
	return ExeDirThen("/usr/lib/vigil", "/usr/lib/vigil/plugins")
}

// ExeDir is the directory of the running binary, links resolved ("" if unknown): where `make`
// puts the plugins, bin/models and bin/lib beside the agent.
func ExeDir() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Dir(exe)
}

// ExeDirThen is ExeDir (when known) followed by dirs.
func ExeDirThen(dirs ...string) []string {
	if d := ExeDir(); d != "" {
		return append([]string{d}, dirs...)
	}
	return append([]string(nil), dirs...)
}

// Loader implements Loaders.
func (p *PluginLoaders) Loader(ctx context.Context, detector string) (ModelLoader, func(), error) {
	if l, ok := p.Running[detector]; ok {
		return l, func() {}, nil
	}
	name := "vigil-detector-" + detector
	var path string
	for _, d := range p.Dirs {
		c := filepath.Join(d, name)
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			path = c
			break
		}
	}
	if path == "" {
		return nil, nil, fmt.Errorf("no %s plugin found (looked in %v)", name, p.Dirs)
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The bundles to check are copied into a stage directory that exists
	// before the plugin starts: its sandbox (pluginhost.Sandbox) lets it
	// read that directory and nothing else of the agent's, and a plugin
	// running as nobody (pluginhost.SwitchesUser) could not read the
	// private state directory anyway.
	stage, err := os.MkdirTemp("", "vigil-update-")
	if err == nil {
		err = os.Chmod(stage, 0o755)
	}
	if err != nil {
		_ = os.RemoveAll(stage)
		return nil, nil, fmt.Errorf("stage directory: %w", err)
	}
	h, err := pluginhost.New(pluginhost.Config{Path: path, Env: pluginEnvFor(p.Env, path), Logger: log.With("plugin", name),
		RingSlots: 1024, MaxBatch: 256, Sandbox: pluginhost.Sandbox{ReadOnly: []string{stage}}})
	if err != nil {
		_ = os.RemoveAll(stage)
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	if err := h.Start(ctx); err != nil {
		_ = h.Close(context.Background())
		_ = os.RemoveAll(stage)
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	release := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.Close(cctx)
		_ = os.RemoveAll(stage)
	}
	return HostLoader{Host: h, StageDir: stage}, release, nil
}

// pluginEnvFor is env with ONNXRUNTIME_LIB set to the ONNX Runtime library
// next to the plugin (../lib or lib beside it: bin/lib for a build tree,
// /usr/lib/vigil/lib for the packages), unless env sets it. The plugin
// would find that library itself, but its sandbox lets it read only what
// the host allows, and the host allows the directory of ONNXRUNTIME_LIB:
// without it, `vigil-agent update` from a build tree failed with
// "libonnxruntime.so: permission denied".
func pluginEnvFor(env []string, plugin string) []string {
	for _, e := range env {
		if strings.HasPrefix(e, "ONNXRUNTIME_LIB=") {
			return env
		}
	}
	if r, err := filepath.EvalSymlinks(plugin); err == nil {
		plugin = r
	}
	dir := filepath.Dir(plugin)
	for _, lib := range []string{filepath.Join(dir, "..", "lib", "libonnxruntime.so"), filepath.Join(dir, "lib", "libonnxruntime.so")} {
		if st, err := os.Stat(lib); err == nil && st.Mode().IsRegular() {
			return append(slices.Clone(env), "ONNXRUNTIME_LIB="+filepath.Clean(lib))
		}
	}
	return env
}
