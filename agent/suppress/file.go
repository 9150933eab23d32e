package suppress

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/internal/fsutil"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// FileName is the set's file in the agent's state directory.
const FileName = "suppressions.json"

// fileVersion is the format of the file.
const fileVersion = 1

// MaxFileSize bounds the file (MaxRules rules of paths up to 1 KiB fit).
const MaxFileSize = 16 << 20

// file is what suppressions.json holds.
type file struct {
	Version    int       `json:"version"`
	Generation uint64    `json:"generation"`
	Received   time.Time `json:"received,omitzero"`
	Rules      []Rule    `json:"rules"`
}

// Parse reads the file's contents. It refuses a file above MaxFileSize,
// another version, more than MaxRules rules, or anything but one JSON
// object.
func Parse(data []byte) (Set, error) {
	if len(data) > MaxFileSize {
		return Set{}, fmt.Errorf("parse suppressions: %d bytes, limit %d", len(data), MaxFileSize)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return Set{}, fmt.Errorf("parse suppressions: %w", err)
	}
	if f.Version != fileVersion {
		return Set{}, fmt.Errorf("parse suppressions: version %d, want %d", f.Version, fileVersion)
	}
	if len(f.Rules) > MaxRules {
		return Set{}, fmt.Errorf("parse suppressions: %d rules, limit %d", len(f.Rules), MaxRules)
	}
	if f.Rules == nil {
		f.Rules = []Rule{}
	}
	return Set{Generation: f.Generation, Rules: f.Rules}, nil
}

// Load reads the set from path; a missing file is the empty set. Only a
// regular file is read, never through a symbolic link (Save writes it by
// rename), at most MaxFileSize bytes: a named pipe in the state directory
// would otherwise hold the agent's start for good.
func Load(path string) (Set, error) {
	data, err := fsutil.ReadRegularNoFollow(path, MaxFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return Set{Rules: []Rule{}}, nil
	}
	if err != nil {
		return Set{}, fmt.Errorf("load suppressions: %w", err)
	}
	s, err := Parse(data)
	if err != nil {
		return Set{}, fmt.Errorf("load %s: %w", path, err)
	}
	return s, nil
}

// Save writes s to path atomically (a synced temporary file renamed over
// it, then the directory synced), mode 0600.
func Save(path string, s Set, now time.Time) (err error) {
	data, err := encode(s, now)
	if err != nil {
		return fmt.Errorf("save suppressions: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save suppressions: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("save suppressions: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("save suppressions: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("save suppressions: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save suppressions: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save suppressions: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save suppressions: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("save suppressions: sync dir: %w", err)
	}
	return nil
}

func encode(s Set, now time.Time) ([]byte, error) {
	rules := s.Rules
	if rules == nil {
		rules = []Rule{}
	}
	return json.Marshal(file{Version: fileVersion, Generation: s.Generation, Received: now.UTC(), Rules: rules})
}

// Keeper holds the agent's current set: the Filter that applies it, and
// its file.
type Keeper struct {
	*Filter
	path string
	log  *slog.Logger
	mu   sync.Mutex // orders file writes
}

// Open loads the set kept at path (a missing or unreadable file starts
// empty; the server sends the set again at the next connection) and returns
// the keeper with its filter in front of next.
func Open(path string, next pipeline.Sink, log *slog.Logger) *Keeper {
	s, err := Load(path)
	if err != nil {
		log.Warn("suppressions file unreadable; starting without suppressions until the server sends them", "err", err)
		s = Set{}
	}
	if len(s.Rules) > 0 {
		log.Info("suppressions loaded", "rules", len(s.Rules), "generation", s.Generation)
	}
	return &Keeper{Filter: NewFilter(next, s), path: path, log: log}
}

// Update makes the server's set the one that applies, at once, then keeps
// it in the file. It is the uplink's OnSuppressions callback.
func (k *Keeper) Update(m *wirev1.Suppressions) {
	s, truncated := FromWire(m)
	if truncated {
		k.log.Warn("suppressions above the limit left out", "received", len(m.GetItems()), "limit", MaxRules)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	prev, prevGen := k.Len(), k.Generation()
	k.Replace(s)
	if s.Generation < prevGen {
		k.log.Warn("server sent an older suppressions generation (database restored?); applying it", "generation", s.Generation, "previous", prevGen)
	}
	if s.Generation != prevGen || len(s.Rules) != prev {
		k.log.Info("suppressions updated", "rules", len(s.Rules), "generation", s.Generation, "previous_rules", prev)
	}
	if err := Save(k.path, s, time.Now()); err != nil {
		k.log.Error("keeping suppressions on disk", "err", err)
	}
}
