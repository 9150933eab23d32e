package ctl

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
)

func init() { Register(30, newUserCmd) }

func newUserCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "API users"}
	var (
		name, role, entity string
		asJSON             bool
	)
	create := &cobra.Command{
		Use:   "create --name NAME --role admin|analyst|entity-admin [--entity NAME]",
		Short: "Create an API user and print its token (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := app.Client()
			if err != nil {
				return err
			}
			req := map[string]string{"name": name, "role": role}
			if entity != "" {
				req["entity"] = entity
			}
			var resp struct {
				Name   string `json:"name"`
				Role   string `json:"role"`
				Entity string `json:"entity,omitempty"`
				Token  string `json:"token"`
			}
			if err := c.Do(cmd.Context(), http.MethodPost, "users", nil, req, &resp); err != nil {
				return fmt.Errorf("create user: %w", err)
			}
			if asJSON {
				return app.PrintJSON(resp)
			}
			fmt.Fprintf(app.Stderr, "User %s (%s) created. Its API token, shown only now:\n", resp.Name, resp.Role)
			fmt.Fprintln(app.Stdout, resp.Token)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&name, "name", "", "user name (unique)")
	f.StringVar(&role, "role", "", "admin, analyst or entity-admin")
	f.StringVar(&entity, "entity", "", "the entity of an entity-admin")
	f.BoolVar(&asJSON, "json", false, `print {"name", "role", "entity", "token"} as JSON`)
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("role")
	cmd.AddCommand(create)
	return cmd
}
