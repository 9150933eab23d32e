package ctl

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
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
				ID        string    `json:"id"`
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
				return app.PrintJSON(map[string]string{"token": resp.Token, "id": resp.ID, "ca_pin": resp.CAPin, "command": resp.Command,
					"entity": resp.Entity, "expires_at": resp.ExpiresAt.Format(time.RFC3339)})
			}
			fmt.Fprintf(app.Stderr, "One-time enrollment token for entity %s (id %s, `vigilctl token revoke %s` if it leaks), valid until %s. Run on the sensor:\n",
				safeText(resp.Entity), safeText(resp.ID), safeText(resp.ID), stamp(resp.ExpiresAt))
			fmt.Fprintln(app.Stdout, resp.Command)
			return nil
		},
	}
	create.Flags().StringVar(&entity, "entity", "", "entity the agent will belong to (entity-admins: defaults to theirs)")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token stays valid")
	create.Flags().BoolVar(&asJSON, "json", false, `print {"token", "ca_pin", "command", ...} as JSON`)

	var listEntity string
	var listJSON bool
	list := &cobra.Command{
		Use:   "list [--entity NAME]",
		Short: "List enrollment tokens (an entity-admin sees its entity's): id, state, expiry, who used or revoked it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tokens, err := getList(cmd.Context(), app, "tokens", "tokens", entityQuery(listEntity))
			if err != nil {
				return err
			}
			if listJSON {
				return app.PrintJSON(tokens)
			}
			t := newTable(app.Stdout, "ID", "ENTITY", "STATE", "EXPIRES", "CREATED BY", "USED BY", "REVOKED BY")
			now := time.Now()
			for _, raw := range tokens {
				var tk enrollToken
				if err := json.Unmarshal(raw, &tk); err != nil {
					return fmt.Errorf("decode token: %w", err)
				}
				t.row(tk.ID, tk.Entity, tk.state(now), stamp(tk.ExpiresAt), tk.CreatedBy, tk.UsedBy, tk.RevokedBy)
			}
			return t.flush()
		},
	}
	list.Flags().StringVar(&listEntity, "entity", "", "only this entity's tokens")
	list.Flags().BoolVar(&listJSON, "json", false, "print a JSON array")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an unused enrollment token (ID, or the leaked token itself): the server refuses it from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := app.Client()
			if err != nil {
				return err
			}
			id := tokenArgID(args[0])
			if err := c.Do(cmd.Context(), http.MethodDelete, "tokens/"+url.PathEscape(id), nil, nil, nil); err != nil {
				return fmt.Errorf("revoke token %s: %w", safeText(id), err)
			}
			fmt.Fprintf(app.Stdout, "token %s revoked\n", safeText(id))
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// enrollToken is a token as `token list` shows it.
type enrollToken struct {
	ID        string    `json:"id"`
	Entity    string    `json:"entity"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at"`
	UsedBy    string    `json:"used_by"`
	CreatedBy string    `json:"created_by"`
	RevokedAt time.Time `json:"revoked_at"`
	RevokedBy string    `json:"revoked_by"`
}

// state is "used", "revoked", "expired" or "unused".
func (t *enrollToken) state(now time.Time) string {
	switch {
	case !t.UsedAt.IsZero():
		return "used"
	case !t.RevokedAt.IsZero():
		return "revoked"
	case !now.Before(t.ExpiresAt):
		return "expired"
	}
	return "unused"
}

// tokenArgID is the token id an argument names: the id itself, or the id
// part of a whole token ("vge_ID.SECRET") pasted from where it leaked.
func tokenArgID(arg string) string {
	if rest, ok := strings.CutPrefix(arg, "vge_"); ok {
		id, _, _ := strings.Cut(rest, ".")
		return id
	}
	return arg
}
