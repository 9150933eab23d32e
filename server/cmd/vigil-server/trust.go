package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/models/trust"
	"github.com/vigil-edge/vigil/server/registry"
)

// newTrustCmd: the server's copy of the release-key trust policy, <data>/trust.json, against
// which `vigilctl model publish` verifies bundles. Use the same policy as the agents'
// /etc/vigil/trust.json.
func newTrustCmd(_ *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "trust", Short: "The release-key trust policy the server verifies published bundles with"}
	var (
		dir, policy string
		pubs        []string
		threshold   int
	)
	set := &cobra.Command{
		Use:   "set --data DIR (--pub KEY.pub... [--threshold K] | --policy trust.json)",
		Short: "Write DIR/trust.json from public keys, or install an existing policy file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--data is required")
			}
			var p trust.Policy
			var err error
			switch {
			case policy != "" && len(pubs) == 0:
				p, err = trust.Load(policy)
			case policy == "" && len(pubs) > 0:
				var pems [][]byte
				for _, f := range pubs {
					b, err := os.ReadFile(f)
					if err != nil {
						return fmt.Errorf("read %s: %w", f, err)
					}
					pems = append(pems, b)
				}
				p, err = trust.NewPolicy(threshold, pems...)
			default:
				return errors.New("give --pub KEY.pub (repeatable) or --policy FILE")
			}
			if err != nil {
				return err
			}
			out := filepath.Join(dir, registry.TrustFile)
			if err := p.WriteFile(out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: version %d, %d keys, threshold %d\n", out, p.Version, len(p.Keys), p.Threshold)
			return nil
		},
	}
	set.Flags().StringVar(&dir, "data", "", "server data directory")
	set.Flags().StringArrayVar(&pubs, "pub", nil, "trusted release public key (PEM; repeatable)")
	set.Flags().IntVar(&threshold, "threshold", 1, "signatures required")
	set.Flags().StringVar(&policy, "policy", "", "an existing trust.json to install (e.g. the agents' /etc/vigil/trust.json)")
	cmd.AddCommand(set)
	return cmd
}
