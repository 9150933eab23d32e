package update

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vigil-edge/vigil/models/trust"
)

// DefaultTrustSeed is where the agent packages install the trust policy
// of the release keys (a configuration file, /etc/vigil/trust.json).
const DefaultTrustSeed = "/etc/vigil/trust.json"

// SeedPolicy installs <stateDir>/trust.json from seed when the state
// directory has none: the packages ship the policy as a configuration file,
// and the agent keeps its own copy in the state directory because signed
// policy updates (`vigil-agent update --trust`, key rotation) replace it
// there. An existing state policy is never replaced (it may be a rotated
// one, newer than the shipped file). seed "" or absent: nothing is done.
// The seed must be a valid policy. It reports whether it installed one.
func SeedPolicy(stateDir, seed string) (bool, error) {
	dst := filepath.Join(stateDir, TrustFile)
	if seed == "" {
		return false, nil
	}
	if _, err := os.Lstat(dst); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return false, nil // present (or unreadable: Load says why)
	}
	if _, err := os.Stat(seed); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	p, err := trust.Load(seed)
	if err != nil {
		return false, fmt.Errorf("seed trust policy: %w", err)
	}
	b, err := p.Marshal()
	if err != nil {
		return false, fmt.Errorf("seed trust policy from %s: %w", seed, err)
	}
	f, err := os.CreateTemp(stateDir, "."+TrustFile+".seed-*")
	if err != nil {
		return false, fmt.Errorf("seed trust policy: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(b); err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("seed trust policy: %w", err)
	}
	// A link never replaces: a policy that appeared meanwhile (another
	// process seeded it, or installed a rotated one) stays.
	if err := os.Link(tmp, dst); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("seed trust policy: %w", err)
	}
	if d, err := os.Open(stateDir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return true, nil
}
