package filedetect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/models/bundle"
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
	exe := s.ExeDir
	if exe == "" {
		if p, err := os.Executable(); err == nil {
			if r, err := filepath.EvalSymlinks(p); err == nil {
				p = r
			}
			exe = filepath.Dir(p)
		}
	}
	pdirs, mdirs, ldirs := s.PluginDirs, s.ModelDirs, s.LibDirs
	if pdirs == nil {
		pdirs = detect.DefaultPluginDirs
	}
	if mdirs == nil {
		mdirs = detect.DefaultModelDirs
	}
	if ldirs == nil {
		ldirs = detect.DefaultLibDirs
	}
	if exe != "" {
		pdirs = append([]string{exe}, pdirs...)
		mdirs = append([]string{filepath.Join(exe, "models")}, mdirs...)
		ldirs = append([]string{filepath.Join(exe, "lib"), filepath.Join(exe, "..", "lib")}, ldirs...)
	}
	in := &Installation{Skipped: map[string]error{}}
	for _, d := range pdirs {
		p := filepath.Join(d, PluginName)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			in.Plugin = p
			break
		}
	}
	if in.Plugin == "" {
		return nil, fmt.Errorf("detector plugin %s not found in %v", PluginName, pdirs)
	}
	if v := os.Getenv("ONNXRUNTIME_LIB"); v != "" {
		in.ORTLib = v
	} else {
		for _, d := range ldirs {
			p := filepath.Join(d, "libonnxruntime.so")
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				in.ORTLib = p
				break
			}
		}
	}
	for _, d := range mdirs {
		files, _ := filepath.Glob(filepath.Join(d, "*"+bundle.Extension))
		sort.Strings(files)
		for _, f := range files {
			b, err := bundle.Read(f, bundle.DefaultLimits())
			if err != nil {
				continue // not ours to judge: the netflow discovery reports broken bundles
			}
			if b.Manifest.Detector != DetectorName {
				continue
			}
			bi, err := ReadBundleInfo(f)
			if err != nil {
				in.Skipped[f] = err
				continue
			}
			if in.Bundle.Path == "" || bi.Version > in.Bundle.Version {
				in.Bundle = bi
			}
		}
	}
	return in, nil
}

// ReadBundleInfo reads a bundle's manifest strictly (no signature check: the
// update path verifies signatures before a bundle lands in a model dir) and
// checks that it is meant for the fileactivity detector.
func ReadBundleInfo(path string) (detect.BundleInfo, error) {
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		return detect.BundleInfo{}, fmt.Errorf("read bundle: %w", err)
	}
	if b.Manifest.Detector != DetectorName {
		return detect.BundleInfo{}, fmt.Errorf("bundle %s is for detector %q, not %q", path, b.Manifest.Detector, DetectorName)
	}
	dg, err := bundle.Digest(path)
	if err != nil {
		return detect.BundleInfo{}, fmt.Errorf("read bundle: %w", err)
	}
	return detect.BundleInfo{Path: path, Name: b.Manifest.Name, Version: b.Manifest.Version, FeatureSet: b.Manifest.FeatureSet, Digest: dg}, nil
}
