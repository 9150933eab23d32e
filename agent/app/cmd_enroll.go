package app

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/agent/enroll"
	"github.com/vigil-edge/vigil/agent/state"
)

// TokenEnv is an alternative to --token that keeps the secret out of the
// process list.
const TokenEnv = "VIGIL_ENROLL_TOKEN"

func init() { Register(newEnrollCommand) }

func newEnrollCommand(g *Globals) *cobra.Command {
	var o enroll.Options
	var dir string
	cmd := &cobra.Command{
		Use:   "enroll --server HOST:PORT --token TOKEN --ca-pin sha256:HEX [--state DIR]",
		Short: "Enroll this agent with a server (one-time token, CA pin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Token == "" {
				o.Token = strings.TrimSpace(os.Getenv(TokenEnv))
			}
			if o.Server == "" || o.Token == "" || o.Pin == "" {
				return errors.New("enroll: --server, --token (or $" + TokenEnv + ") and --ca-pin are required")
			}
			o.StateDir = state.Dir(dir)
			id, err := enroll.Enroll(cmd.Context(), o, g.Logger())
			if err != nil {
				return err
			}
			fmt.Fprintf(g.Stdout, "enrolled: agent %s of entity %s (trust domain %s), state in %s\n", id.AgentID, id.Entity, id.TrustDomain, dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Server, "server", "", "server QUIC address HOST:PORT")
	f.StringVar(&o.Token, "token", "", "one-time enrollment token (or $"+TokenEnv+")")
	f.StringVar(&o.Pin, "ca-pin", "", "SHA-256 pin of the server's root CA: sha256:HEX")
	f.StringVar(&dir, "state", state.DefaultDir, "state directory")
	f.BoolVar(&o.Force, "force", false, "replace an existing identity")
	return cmd
}
