package filedetect

import (
	"errors"

	"github.com/vigil-edge/vigil/agent/detect"
)

// PluginName is the fileactivity detector plugin's binary name.
const PluginName = "vigil-detector-fileactivity"

// DetectorName is the detector name bundles and findings carry.
const DetectorName = "fileactivity"

// ErrNoBundle means no fileactivity model bundle was found or given.
var ErrNoBundle = errors.New("no fileactivity model bundle found (looked next to the agent binary in models/ and in the configured model directories)")

// Installation is what Discover found.
type Installation struct {
	Plugin  string            // plugin binary
	Bundle  detect.BundleInfo // newest fileactivity bundle (Path "" if none)
	ORTLib  string            // libonnxruntime.so, "" if not found (the plugin searches too)
	Skipped map[string]error  // bundles of this detector found but refused
}

// Discover finds the fileactivity plugin, its newest bundle and ONNX
// Runtime the way detect.Discover does for the netflow detector: next to the
// agent binary first (bin/vigil-detector-fileactivity, bin/models/*.vgb,
// bin/lib/libonnxruntime.so), then in the search's (or the default)
// directories. $ONNXRUNTIME_LIB wins for the library. Bundles of other
// detectors are ignored.
func Discover(s detect.Search) (*Installation, error) {
	found, err := detect.DiscoverFor(s, PluginName, DetectorName)
	if err != nil {
		return nil, err
	}
	in := &Installation{Plugin: found.Plugin, ORTLib: found.ORTLib, Skipped: found.Skipped}
	for _, b := range found.Bundles { // newest per feature set; fileactivity has one
		if in.Bundle.Path == "" || b.Version > in.Bundle.Version {
			in.Bundle = b
		}
	}
	return in, nil
}

// ReadBundleInfo reads a bundle's manifest strictly (no signature check: the
// update path verifies signatures before a bundle lands in a model dir) and
// checks that it is meant for the fileactivity detector.
func ReadBundleInfo(path string) (detect.BundleInfo, error) {
	return detect.ReadBundleInfoFor(path, DetectorName)
}
