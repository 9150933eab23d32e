package detect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
)

// PluginName is the netflow detector plugin's binary name.
const PluginName = "vigil-detector-netflow"

// DetectorName is the detector name bundles must name.
const DetectorName = "netflow"

// Default directories consulted after the ones next to the agent binary.
var (
	DefaultPluginDirs = []string{"/usr/lib/vigil", "/usr/lib/vigil/plugins"}
	DefaultModelDirs  = []string{"/usr/share/vigil/models", "/usr/lib/vigil/models", "/var/lib/vigil/models"}
	DefaultLibDirs    = []string{"/usr/lib/vigil/lib"}
)

// Installation is what Discover found.
type Installation struct {
	Plugin  string           // plugin binary
	Bundles []BundleInfo     // newest bundle per feature-set family (OnePerFamily)
	ORTLib  string           // libonnxruntime.so, "" if not found (the plugin searches too)
	Skipped map[string]error // bundles found but refused
}

// BundleInfo is a bundle file and its manifest's identity.
type BundleInfo struct {
	Path       string
	Name       string
	Version    uint64
	FeatureSet string
	Digest     string
}

// Search lists where Discover looks; empty fields take the defaults.
type Search struct {
	// ExeDir is the agent binary's directory (default: os.Executable's).
	ExeDir string
	// PluginDirs, ModelDirs and LibDirs are consulted after ExeDir (and
	// ExeDir/models, ExeDir/lib); nil takes the Default* lists.
	PluginDirs, ModelDirs, LibDirs []string
}

func (s Search) exeDir() string {
	if s.ExeDir != "" {
		return s.ExeDir
	}
	return update.ExeDir()
}

// Discover finds the netflow plugin, the newest baseline bundle of each
// feature set and ONNX Runtime: first next to the agent binary (bin/ of
// `make`: bin/vigil-detector-netflow, bin/models/*.vgb, bin/lib/
// libonnxruntime.so), then in the configured directories. $ONNXRUNTIME_LIB
// wins for the library. Bundles of another detector or that fail to parse
// are skipped (reported in Skipped).
func Discover(s Search) (*Installation, error) {
	return DiscoverFor(s, PluginName, DetectorName)
}

// DiscoverFor is Discover for any detector: its plugin binary's name and the
// detector name its bundles carry (the file detector uses it too).
func DiscoverFor(s Search, pluginName, detector string) (*Installation, error) {
	exe := s.exeDir()
	pdirs, mdirs, ldirs := s.PluginDirs, s.ModelDirs, s.LibDirs
	if pdirs == nil {
		pdirs = DefaultPluginDirs
	}
	if mdirs == nil {
		mdirs = DefaultModelDirs
	}
	if ldirs == nil {
		ldirs = DefaultLibDirs
	}
	if exe != "" {
		pdirs = append([]string{exe}, pdirs...)
		mdirs = append([]string{filepath.Join(exe, "models")}, mdirs...)
		ldirs = append([]string{filepath.Join(exe, "lib"), filepath.Join(exe, "..", "lib")}, ldirs...)
	}
	in := &Installation{Skipped: map[string]error{}}
	for _, d := range pdirs {
		p := filepath.Join(d, pluginName)
		if isExec(p) {
			in.Plugin = p
			break
		}
	}
	if in.Plugin == "" {
		return nil, fmt.Errorf("detector plugin %s not found in %v", pluginName, pdirs)
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
	best := map[string]BundleInfo{}
	for _, d := range mdirs {
		files, _ := filepath.Glob(filepath.Join(d, "*"+bundle.Extension))
		sort.Strings(files)
		for _, f := range files {
			bi, err := ReadBundleInfoFor(f, detector)
			if errors.Is(err, errOtherDetector) {
				continue // another detector's bundle
			}
			if err != nil {
				in.Skipped[f] = err
				continue
			}
			if cur, ok := best[bi.FeatureSet]; !ok || bi.Version > cur.Version {
				best[bi.FeatureSet] = bi
			}
		}
	}
	for _, b := range best {
		in.Bundles = append(in.Bundles, b)
	}
	in.Bundles = OnePerFamily(in.Bundles)
	return in, nil
}

// OnePerFamily keeps, of each feature-set family (sdk.FeatureFamily), the
// bundle of the newest feature-set version, then of the highest version, and
// sorts them by feature set, descending. The plugin runs one model per
// family: given a nethost/v6 and a nethost/v7 bundle it ran the one loaded
// last, while the agent reported both as active.
func OnePerFamily(bs []BundleInfo) []BundleInfo {
	best := map[string]BundleInfo{}
	for _, b := range bs {
		fam := sdk.FeatureFamily(b.FeatureSet)
		cur, ok := best[fam]
		if !ok || newerBundle(b, cur) {
			best[fam] = b
		}
	}
	out := make([]BundleInfo, 0, len(best))
	for _, b := range best {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].FeatureSet > out[j].FeatureSet })
	return out
}

// newerBundle orders the bundles of one family: feature-set version, then
// bundle version, then path (deterministic).
func newerBundle(a, b BundleInfo) bool {
	if va, vb := sdk.FeatureVersion(a.FeatureSet), sdk.FeatureVersion(b.FeatureSet); va != vb {
		return va > vb
	}
	if a.Version != b.Version {
		return a.Version > b.Version
	}
	return a.Path < b.Path
}

// ReadBundleInfo reads a bundle's manifest strictly (no signature check: the
// update path verifies signatures before a bundle lands in a model dir) and
// checks that it is meant for the netflow detector.
func ReadBundleInfo(path string) (BundleInfo, error) {
	return ReadBundleInfoFor(path, DetectorName)
}

// ReadBundleInfoFor is ReadBundleInfo for the bundles of detector.
func ReadBundleInfoFor(path, detector string) (BundleInfo, error) {
	b, err := bundle.Read(path, bundle.DefaultLimits())
	if err != nil {
		return BundleInfo{}, fmt.Errorf("read bundle: %w", err)
	}
	if b.Manifest.Detector != detector {
		return BundleInfo{}, fmt.Errorf("bundle %s is for detector %q, not %q: %w", path, b.Manifest.Detector, detector, errOtherDetector)
	}
	dg, err := bundle.Digest(path)
	if err != nil {
		return BundleInfo{}, fmt.Errorf("read bundle: %w", err)
	}
	return BundleInfo{Path: path, Name: b.Manifest.Name, Version: b.Manifest.Version, FeatureSet: b.Manifest.FeatureSet, Digest: dg}, nil
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

var errOtherDetector = errors.New("bundle of another detector")

// ErrNoBundle means no model bundle was found or given.
var ErrNoBundle = errors.New("no netflow model bundle found (looked next to the agent binary in models/ and in the configured model directories)")
