package ctl

import (
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func init() { Register(10, newTokenCmd) }

func newTokenCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Enrollment tokens"}
	var (
		entity string
		ttl    time.Duration
		asJSON bool
	)
	create := &cobra.Command{
		Use:   "create --entity NAME [--ttl 24h]",
		Short: "Create a one-time enrollment token and print the ready `vigil-agent enroll` command",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := app.Client()
			if err != nil {
				return err
			}
			var resp struct {
				Token     string    `json:"token"`
				CAPin     string    `json:"ca_pin"`
				Command   string    `json:"command"`
				Entity    string    `json:"entity"`
				ExpiresAt time.Time `json:"expires_at"`
			}
			req := map[string]string{"entity": entity, "ttl": ttl.String()}
			if err := c.Do(cmd.Context(), http.MethodPost, "tokens", nil, req, &resp); err != nil {
				return fmt.Errorf("create token: %w", err)
			}
			if asJSON {
				return app.PrintJSON(map[string]string{"token": resp.Token, "ca_pin": resp.CAPin, "command": resp.Command,
					"entity": resp.Entity, "expires_at": resp.ExpiresAt.Format(time.RFC3339)})
			}
			fmt.Fprintf(app.Stderr, "One-time enrollment token for entity %s, valid until %s. Run on the sensor:\n",
				resp.Entity, stamp(resp.ExpiresAt))
			fmt.Fprintln(app.Stdout, resp.Command)
			return nil
		},
	}
	create.Flags().StringVar(&entity, "entity", "", "entity the agent will belong to (entity-admins: defaults to theirs)")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token stays valid")
	create.Flags().BoolVar(&asJSON, "json", false, `print {"token", "ca_pin", "command", ...} as JSON`)
	cmd.AddCommand(create)
	return cmd
}
