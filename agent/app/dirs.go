package app

import (
	"path/filepath"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/update"
)

// searchDirs are where the agent looks for detector plugins and model bundles after the directory
// of its binary (and <state>/models for bundles): the config's plugin_dirs and model_dirs, else
// the packaged locations (detect.DefaultPluginDirs, detect.DefaultModelDirs).
type searchDirs struct{ plugins, models []string }

func dirsOf(plugins, models []string) searchDirs {
	d := searchDirs{plugins: plugins, models: models}
	if len(d.plugins) == 0 {
		d.plugins = detect.DefaultPluginDirs
	}
	if len(d.models) == 0 {
		d.models = detect.DefaultModelDirs
	}
	return d
}

func envDirs(env pipeline.Env) searchDirs { return dirsOf(env.PluginDirs, env.ModelDirs) }

// search is the detector pipelines' search: plugins next to the binary, then d.plugins; bundles
// next to the binary, in <state>/models, then d.models.
func (d searchDirs) search(stateDir string) detect.Search {
	return detect.Search{PluginDirs: d.plugins, ModelDirs: append([]string{filepath.Join(stateDir, update.ModelsDir)}, d.models...)}
}

// pluginDirs is the updater's plugin search, in the pipelines' order: the binary's directory,
// then d.plugins.
func (d searchDirs) pluginDirs() []string { return update.ExeDirThen(d.plugins...) }
