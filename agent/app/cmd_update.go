package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/update"
	"github.com/vigil-edge/vigil/internal/fsutil"
	"github.com/vigil-edge/vigil/models/trust"
)

func init() { Register(newUpdateCommand) }

// updateReport is what `update --json` prints.
type updateReport struct {
	State    string `json:"state"` // active, rejected, rolled_back, trust_updated
	Reason   string `json:"reason,omitempty"`
	Name     string `json:"name,omitempty"`
	Version  uint64 `json:"version,omitempty"`
	Detector string `json:"detector,omitempty"`
	Digest   string `json:"digest,omitempty"`
	Path     string `json:"path,omitempty"`
	Already  bool   `json:"already_active,omitempty"`
	// Trust policy update.
	PolicyVersion uint64   `json:"policy_version,omitempty"`
	Keys          []string `json:"keys,omitempty"`
	Threshold     int      `json:"threshold,omitempty"`
}

func newUpdateCommand(g *Globals) *cobra.Command {
	var (
		configFile, stateDir, bundlePath, rollbackPath, trustPath string
		asJSON                                                    bool
	)
	cmd := &cobra.Command{
		Use:   "update (--bundle FILE [--rollback FILE] | --trust FILE) [--config FILE] [--state DIR] [--json]",
		Short: "Air-gapped model install (same verification and activation as a server rollout), or a signed trust policy update",
		Long: `update --bundle FILE installs a model bundle without a server: the bundle must carry the threshold of
signatures that <state>/trust.json requires (copied from the shipped policy, update.trust_seed,
default /etc/vigil/trust.json, when the state has none), must not be expired, must have a version greater than the
active one (unless --rollback gives a signed rollback instruction naming it), and its feature set must
be one the detector plugin accepts. The plugin (vigil-detector-<detector>, found next to this binary,
then in the configuration's plugin_dirs, else in /usr/lib/vigil) loads it and scores a probe batch; only then is it made active, atomically. A running
agent picks it up at its next start.

update --trust FILE replaces <state>/trust.json with the policy carried by a DSSE policy update signed
by the threshold of the current keys and of the new keys (key rotation).

The exit status is 0 when the model is active (or the policy updated), 1 otherwise, with the reason.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (bundlePath == "") == (trustPath == "") {
				return errors.New("give exactly one of --bundle FILE or --trust FILE")
			}
			cfg := config.Default()
			if configFile != "" {
				c, err := config.Load(configFile)
				if err != nil {
					return err
				}
				// The checks `run` makes: relative plugin_dirs or trust_seed
				// would be searched from the admin's working directory.
				if err := c.Validate(); err != nil {
					return fmt.Errorf("config: %w", err)
				}
				cfg = c
			}
			if stateDir == "" {
				stateDir = cfg.StateDir
			}
			print := func(r updateReport) {
				if asJSON {
					b, _ := json.MarshalIndent(r, "", "  ")
					fmt.Fprintln(g.Stdout, string(b))
					return
				}
				switch r.State {
				case "trust_updated":
					fmt.Fprintf(g.Stdout, "trust policy updated to version %d: %d keys, threshold %d\n", r.PolicyVersion, len(r.Keys), r.Threshold)
				case update.StateActive:
					if r.Already {
						fmt.Fprintf(g.Stdout, "%s version %d (%s) is already active\n", r.Name, r.Version, r.Detector)
					} else {
						fmt.Fprintf(g.Stdout, "%s version %d (%s) is active: %s\n", r.Name, r.Version, r.Detector, r.Path)
					}
				default:
					fmt.Fprintf(g.Stdout, "%s: %s\n", r.State, r.Reason)
				}
			}
			if trustPath != "" {
				r, err := updateTrust(stateDir, cfg.Update.TrustSeed, trustPath)
				if err != nil {
					return err
				}
				print(r)
				return nil
			}
			log := g.Logger()
			a, err := newUpdater(stateDir, cfg.Update.TrustSeed, dirsOf(cfg.PluginDirs, cfg.ModelDirs), nil, false, log.With("part", "update"))
			if err != nil {
				return err
			}
			req := update.Request{Path: bundlePath}
			if rollbackPath != "" {
				b, err := readSmall(rollbackPath, 64<<10)
				if err != nil {
					return err
				}
				req.Rollback = b
			}
			res, err := a.u.Install(cmd.Context(), req)
			r := updateReport{Name: res.Manifest.Name, Version: res.Manifest.Version, Detector: res.Manifest.Detector,
				Digest: res.Digest, Path: res.Path, Already: res.Already}
			var rej *update.Rejection
			switch {
			case errors.As(err, &rej):
				r.State, r.Reason = rej.State, rej.Reason
				print(r)
				return fmt.Errorf("model %s: %s", rej.State, rej.Reason)
			case err != nil:
				return err
			}
			r.State = res.State
			print(r)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "configuration file of the agent: its state_dir and plugin_dirs are used")
	f.StringVar(&stateDir, "state", "", "state directory (default: the configuration's, else "+config.DefaultStateDir+")")
	f.StringVar(&bundlePath, "bundle", "", "model bundle (.vgb) to verify and activate")
	f.StringVar(&rollbackPath, "rollback", "", "signed rollback instruction allowing a version not greater than the active one, the highest ever activated or the installed baseline")
	f.StringVar(&trustPath, "trust", "", "signed trust policy update (DSSE envelope) to apply to <state>/trust.json")
	f.BoolVar(&asJSON, "json", false, "print the outcome as one JSON document")
	return cmd
}

func readSmall(path string, max int64) ([]byte, error) {
	b, err := fsutil.ReadRegular(path, max)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// updateTrust applies a signed policy update to <state>/trust.json (installed first from
// seed, the shipped policy, when absent: the update must be signed by its keys).
func updateTrust(stateDir, seed, path string) (updateReport, error) {
	polPath := filepath.Join(stateDir, update.TrustFile)
	if _, err := update.SeedPolicy(stateDir, seed); err != nil {
		return updateReport{}, err
	}
	cur, err := trust.Load(polPath)
	if err != nil {
		return updateReport{}, err
	}
	env, err := readSmall(path, trust.MaxPolicySize)
	if err != nil {
		return updateReport{}, err
	}
	next, err := trust.ApplyUpdate(cur, env, time.Now())
	if err != nil {
		return updateReport{}, err
	}
	if err := next.WriteFile(polPath); err != nil {
		return updateReport{}, err
	}
	return updateReport{State: "trust_updated", PolicyVersion: next.Version, Keys: next.KeyIDs(), Threshold: next.Threshold}, nil
}
