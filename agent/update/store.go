package update

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/bundle"
	"github.com/vigil-edge/vigil/plugins/sdk"
)

// Directory layout under the state directory:
//
//	<state>/trust.json                          the trust policy (installer; `update --trust`)
//	<state>/models/.lock                        flock(2) of every process changing models/ (see lockState)
//	<state>/models/<detector>/<name>-<ver>-<sha12>.vgb   staged bundles (write, fsync, rename)
//	<state>/models/<detector>/active-<slot>     pointer: the file name of the active bundle
//	<state>/models/<detector>/previous-<slot>   pointer: the bundle active before it
//	<state>/models/<detector>/floor-<slot>      "<version> <digest>": the highest version ever activated
//	<state>/models/<detector>/replay-<name>     JSON replayState of a feature-set name (nethost): when its
//	                                            model was last updated, the last rollback instruction applied
//	<state>/models/<detector>/shadow/<name>-<ver>-<sha12>.vgb   the running shadow model's bundle
//	<state>/update/<sha256hex>.part             a download in progress (resumed from its size)
//
// A slot is a feature set with "/" replaced by "-" (a detector may serve several feature sets,
// e.g. netflow/v1 and nethost/v1, each with its own active model). The versions of one
// feature-set name (nethost/v6, nethost/v7) share the plugin's model: activating one retires the
// others' pointers (retireFamily), and the anti-rollback check spans their floors (familyFloor).
//
// Pointers only ever name staged bundles of <detector>/ itself, never a shadow bundle (pointers
// cannot name a file in a subdirectory), so a staged bundle is removed only by gc, which keeps
// every bundle a pointer names.
const (
	ModelsDir   = "models"
	DownloadDir = "update"
	TrustFile   = "trust.json"

	activePrefix   = "active-"
	previousPrefix = "previous-"
	floorPrefix    = "floor-"
	replayPrefix   = "replay-"
	shadowDir      = "shadow"
	lockFile       = ".lock"
	maxPointer     = 256 // bytes of a pointer or floor file
)

// SlotName is the pointer suffix of a feature set ("netflow/v1" -> "netflow-v1").
func SlotName(featureSet string) string { return strings.ReplaceAll(featureSet, "/", "-") }

// Active is a model an agent runs: the pointer of one slot resolved.
type Active struct {
	Detector   string
	FeatureSet string
	Path       string // the staged bundle
	Manifest   bundle.Manifest
	Digest     string // "sha256:<hex>" of the bundle file
}

func (u *Updater) detectorDir(detector string) string {
	return filepath.Join(u.cfg.StateDir, ModelsDir, detector)
}

// readPointer returns the bundle path a pointer names, "" if the pointer does not exist. Only a
// regular file is read, never through a symbolic link (the updater writes pointers itself, by
// rename), at most maxPointer bytes: a named pipe there would otherwise hold the agent's start
// and `vigil-agent update` for good.
func readPointer(dir, name string) (string, error) {
	b, err := fsutil.ReadRegularNoFollow(filepath.Join(dir, name), maxPointer)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read pointer %s: %w", name, err)
	}
	v := string(bytes.TrimSpace(b))
	if v == "" || strings.ContainsAny(v, "/\\") || v == "." || v == ".." || !strings.HasSuffix(v, bundle.Extension) {
		return "", fmt.Errorf("read pointer %s: malformed", name)
	}
	return filepath.Join(dir, v), nil
}

// writeFileAtomic writes data to path atomically (fsutil.WriteFile): after a crash, path holds
// either the old or the new content. Its temporary files start with fsutil.TempPrefix (gc).
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return fsutil.WriteFile(path, data, mode)
}

// loadActive resolves a slot's pointer: the bundle must exist and parse strictly. ok is false when
// the slot has no usable bundle.
func loadActive(dir, pointer string) (Active, bool) {
	p, err := readPointer(dir, pointer)
	if err != nil || p == "" {
		return Active{}, false
	}
	b, err := bundle.Read(p, bundle.DefaultLimits())
	if err != nil {
		return Active{}, false
	}
	d, err := bundle.Digest(p)
	if err != nil {
		return Active{}, false
	}
	return Active{Detector: b.Manifest.Detector, FeatureSet: b.Manifest.FeatureSet, Path: p, Manifest: b.Manifest, Digest: d}, true
}

// ActiveModels lists the active bundle of every slot under stateDir/models, after repairing
// pointers (see Recover). It is what the detector pipeline loads at start.
func ActiveModels(stateDir string) ([]Active, error) {
	root := filepath.Join(stateDir, ModelsDir)
	dets, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	var out []Active
	for _, d := range dets {
		if !d.IsDir() {
			continue
		}
		dir := filepath.Join(root, d.Name())
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("list models: %w", err)
		}
		for _, e := range ents {
			slot, ok := strings.CutPrefix(e.Name(), activePrefix)
			if !ok {
				continue
			}
			a, ok := loadActive(dir, activePrefix+slot)
			if !ok {
				a, ok = loadActive(dir, previousPrefix+slot)
			}
			if ok && a.Detector == d.Name() {
				out = append(out, a)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Detector+"/"+out[i].FeatureSet < out[j].Detector+"/"+out[j].FeatureSet
	})
	return out, nil
}

// versionFloor is the anti-rollback floor of a slot: the highest version ever activated in it and
// the digest of that bundle. It survives the loss of the active bundle (a deleted or damaged file,
// a pointer Recover removed), so an older signed bundle still needs a signed rollback instruction.
type versionFloor struct {
	Version uint64
	Digest  string
}

// readFloor reads the floor of a slot; the zero floor when the slot never had one. Like a pointer,
// only a regular file is read (raiseFloor writes it by rename: a symbolic link is never followed),
// at most maxPointer bytes (a well-formed floor is under 100).
func readFloor(dir, slot string) (versionFloor, error) {
	name := filepath.Join(dir, floorPrefix+slot)
	b, err := fsutil.ReadRegularNoFollow(name, maxPointer)
	if errors.Is(err, fs.ErrNotExist) {
		return versionFloor{}, nil
	}
	if err != nil {
		return versionFloor{}, fmt.Errorf("read version floor: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 || !digestRE.MatchString(f[1]) {
		return versionFloor{}, fmt.Errorf("read version floor %s: malformed (want \"<version> sha256:<hex>\")", name)
	}
	v, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil || v == 0 {
		return versionFloor{}, fmt.Errorf("read version floor %s: malformed version %q", name, f[0])
	}
	return versionFloor{Version: v, Digest: f[1]}, nil
}

// raiseFloor records that version (digest) was activated in slot: the floor is rewritten atomically
// (temporary file, fsync, rename) when version is above it, and left alone otherwise (a signed
// rollback never lowers it).
func raiseFloor(dir, slot string, version uint64, digest string) error {
	cur, err := readFloor(dir, slot)
	if err != nil {
		return err
	}
	if version <= cur.Version {
		return nil
	}
	line := strconv.FormatUint(version, 10) + " " + digest + "\n"
	if err := writeFileAtomic(filepath.Join(dir, floorPrefix+slot), []byte(line), 0o644); err != nil {
		return fmt.Errorf("raise version floor: %w", err)
	}
	return nil
}

// familyFloor is the highest version activated in the other slots of featureSet's name: the
// other versions of the feature set ("nethost/v6" for "nethost/v7"). A plugin runs one model per
// feature-set name (the netflow plugin has one nethost slot for nethost/v1 to v7), so a bundle
// of another version of the name replaces the model running there, and the anti-rollback check
// spans them. It returns the version and the feature set that holds it (0, "" when none).
func familyFloor(dir, featureSet string) (uint64, string, error) {
	own := SlotName(featureSet)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("read version floors: %w", err)
	}
	var top uint64
	var at string
	for _, e := range ents {
		n := e.Name()
		var prefix string
		switch {
		case strings.HasPrefix(n, floorPrefix):
			prefix = floorPrefix
		case strings.HasPrefix(n, activePrefix):
			prefix = activePrefix
		default:
			continue
		}
		slot := n[len(prefix):]
		fset := slotFeatureSet(slot)
		if slot == own || sdk.FeatureFamily(fset) != sdk.FeatureFamily(featureSet) {
			continue
		}
		var v uint64
		if prefix == floorPrefix {
			f, err := readFloor(dir, slot)
			if err != nil {
				return 0, "", err
			}
			v = f.Version
		} else if a, ok := loadActive(dir, n); ok {
			v = a.Manifest.Version
		}
		if v > top {
			top, at = v, fset
		}
	}
	return top, at, nil
}

// familyActive is the active model of another version of featureSet's name (the newest, should
// there be several), which the plugin ran before a model of featureSet was loaded.
func familyActive(dir, featureSet string) (Active, bool) {
	own := SlotName(featureSet)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return Active{}, false
	}
	var best Active
	found := false
	for _, e := range ents {
		slot, ok := strings.CutPrefix(e.Name(), activePrefix)
		if !ok || slot == own || sdk.FeatureFamily(slotFeatureSet(slot)) != sdk.FeatureFamily(featureSet) {
			continue
		}
		if a, ok := loadActive(dir, e.Name()); ok && (!found || a.Manifest.Version > best.Manifest.Version) {
			best, found = a, true
		}
	}
	return best, found
}

// retireFamily removes the active and previous pointers of the other versions of featureSet's
// name (see familyFloor), once featureSet's own model is active: the plugin runs one model for
// all of them. Their floors stay. gc then removes the bundles no pointer names.
func retireFamily(dir, featureSet string) error {
	own := SlotName(featureSet)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("retire other versions of %s: %w", featureSet, err)
	}
	removed := false
	for _, e := range ents {
		n := e.Name()
		slot, ok := strings.CutPrefix(n, activePrefix)
		if !ok {
			if slot, ok = strings.CutPrefix(n, previousPrefix); !ok {
				continue
			}
		}
		if slot == own || sdk.FeatureFamily(slotFeatureSet(slot)) != sdk.FeatureFamily(featureSet) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("retire other versions of %s: %w", featureSet, err)
		}
		removed = true
	}
	if removed {
		return fsutil.SyncDir(dir)
	}
	return nil
}

// slotFeatureSet inverts SlotName for a slot of a feature set "name/vN" ("" when slot is not
// one).
func slotFeatureSet(slot string) string {
	i := strings.LastIndex(slot, "-v")
	if i <= 0 {
		return ""
	}
	ver := slot[i+2:]
	if ver == "" || len(ver) > 4 || strings.Trim(ver, "0123456789") != "" {
		return ""
	}
	return slot[:i] + "/v" + ver
}
