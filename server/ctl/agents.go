package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func init() { Register(20, newAgentsCmd) }

type agentView struct {
	ID           string    `json:"id"`
	Entity       string    `json:"entity"`
	Hostname     string    `json:"hostname"`
	Version      string    `json:"version"`
	LastSeen     time.Time `json:"last_seen"`
	CertNotAfter time.Time `json:"cert_not_after"`
	RevokedAt    time.Time `json:"revoked_at"`
	State        struct {
		Spool struct {
			Depth   uint64 `json:"depth"`
			Dropped uint64 `json:"dropped"`
		} `json:"spool"`
	} `json:"state"`
	Health struct {
		Calibration []struct {
			FeatureSet     string  `json:"feature_set"`
			Calibrated     bool    `json:"calibrated"`
			ModelThreshold float64 `json:"model_threshold"`
			Threshold      float64 `json:"threshold"`
		} `json:"calibration"`
	} `json:"health"`
}

// calibration summarises an agent's per-sensor calibration: per feature
// set, "observing", or the model's threshold and the active one.
func (a *agentView) calibration() string {
	var parts []string
	for _, c := range a.Health.Calibration {
		switch {
		case !c.Calibrated:
			parts = append(parts, c.FeatureSet+" observing")
		case c.Threshold > c.ModelThreshold:
			parts = append(parts, fmt.Sprintf("%s %.4g→%.4g", c.FeatureSet, c.ModelThreshold, c.Threshold))
		default:
			parts = append(parts, fmt.Sprintf("%s %.4g (kept)", c.FeatureSet, c.ModelThreshold))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func newAgentsCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "Enrolled agents"}
	var (
		asJSON bool
		entity string
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List agents (an entity-admin sees its entity's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			agents, err := getList(cmd.Context(), app, "agents", "agents", entityQuery(entity))
			if err != nil {
				return err
			}
			if asJSON {
				return app.PrintJSON(agents)
			}
			t := newTable(app.Stdout, "ID", "ENTITY", "HOSTNAME", "VERSION", "LAST SEEN", "SPOOL", "DROPPED", "CERT EXPIRES", "STATE", "CALIBRATION")
			for _, raw := range agents {
				var a agentView
				if err := json.Unmarshal(raw, &a); err != nil {
					return fmt.Errorf("decode agent: %w", err)
				}
				state := "active"
				if !a.RevokedAt.IsZero() {
					state = "revoked"
				} else if a.LastSeen.IsZero() {
					state = "never seen"
				}
				t.row(a.ID, a.Entity, a.Hostname, a.Version, ago(a.LastSeen), fmt.Sprint(a.State.Spool.Depth),
					fmt.Sprint(a.State.Spool.Dropped), stamp(a.CertNotAfter), state, a.calibration())
			}
			return t.flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	list.Flags().StringVar(&entity, "entity", "", "only this entity's agents")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an agent: the server refuses it from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := app.Client()
			if err != nil {
				return err
			}
			var a agentView
			if err := c.Do(cmd.Context(), http.MethodPost, "agents/"+url.PathEscape(args[0])+"/revoke", nil, nil, &a); err != nil {
				return fmt.Errorf("revoke agent %s: %w", args[0], err)
			}
			fmt.Fprintf(app.Stdout, "agent %s (entity %s) revoked at %s\n", safeText(a.ID), safeText(a.Entity), stamp(a.RevokedAt))
			return nil
		},
	}
	cmd.AddCommand(list, revoke)
	return cmd
}

// nonNil makes an empty list print as [] rather than null.
// getList GETs the API's path with q and returns the items of the answer's
// list under key (empty, not nil, when there are none): what the list
// commands print as JSON, whole, or decode for their tables.
func getList(ctx context.Context, app *App, path, key string, q url.Values) ([]json.RawMessage, error) {
	c, err := app.Client()
	if err != nil {
		return nil, err
	}
	var resp map[string]json.RawMessage
	if err := c.Do(ctx, http.MethodGet, path, q, nil, &resp); err != nil {
		return nil, fmt.Errorf("list %s: %w", path, err)
	}
	var items []json.RawMessage
	if raw, ok := resp[key]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fmt.Errorf("list %s: %s: %w", path, key, err)
		}
	}
	return nonNil(items), nil
}

// entityQuery is the query of a list narrowed to entity ("": all the caller may see).
func entityQuery(entity string) url.Values {
	q := url.Values{}
	if entity != "" {
		q.Set("entity", entity)
	}
	return q
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
