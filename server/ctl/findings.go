package ctl

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

func init() { Register(40, newFindingsCmd) }

type findingView struct {
	ID       int64     `json:"id"`
	AgentID  string    `json:"agent_id"`
	Entity   string    `json:"entity"`
	Detector string    `json:"detector"`
	Time     time.Time `json:"time"`
	Count    uint64    `json:"count"`
	Severity string    `json:"severity"`
	Score    float64   `json:"score"`
	Summary  string    `json:"summary"`
}

func newFindingsCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "findings", Short: "Findings reported by the agents"}
	var (
		entity, detector, agent, severity string
		since                             time.Duration
		limit                             int
		asJSON                            bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List findings, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 {
				return fmt.Errorf("--limit must be at least 1")
			}
			c, err := app.Client()
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"entity": entity, "detector": detector, "agent": agent, "severity": severity} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if since > 0 {
				q.Set("since", time.Now().Add(-since).UTC().Format(time.RFC3339Nano))
			}
			// Page through the API (at most 1000 per request) up to limit.
			var all []json.RawMessage
			for len(all) < limit {
				q.Set("limit", strconv.Itoa(min(1000, limit-len(all))))
				var resp struct {
					Findings   []json.RawMessage `json:"findings"`
					NextCursor string            `json:"next_cursor"`
				}
				if err := c.Do(cmd.Context(), http.MethodGet, "findings", q, nil, &resp); err != nil {
					return fmt.Errorf("list findings: %w", err)
				}
				all = append(all, resp.Findings...)
				if resp.NextCursor == "" || len(resp.Findings) == 0 {
					break
				}
				q.Set("cursor", resp.NextCursor)
			}
			if asJSON {
				return app.PrintJSON(nonNil(all))
			}
			t := newTable(app.Stdout, "ID", "TIME", "ENTITY", "AGENT", "DETECTOR", "SEVERITY", "SCORE", "COUNT", "SUMMARY")
			for _, raw := range all {
				var f findingView
				if err := json.Unmarshal(raw, &f); err != nil {
					return fmt.Errorf("decode finding: %w", err)
				}
				t.row(strconv.FormatInt(f.ID, 10), stamp(f.Time), f.Entity, f.AgentID, f.Detector, f.Severity,
					strconv.FormatFloat(f.Score, 'f', 3, 64), strconv.FormatUint(f.Count, 10), truncate(f.Summary, 80))
			}
			return t.flush()
		},
	}
	f := list.Flags()
	f.StringVar(&entity, "entity", "", "only this entity")
	f.StringVar(&agent, "agent", "", "only this agent")
	f.StringVar(&detector, "detector", "", "only this detector (netflow, fileactivity, ...)")
	f.StringVar(&severity, "severity", "", "minimum severity: low, medium, high or critical")
	f.DurationVar(&since, "since", 0, "only findings of the last DURATION (e.g. 1h)")
	f.IntVar(&limit, "limit", 100, "at most this many findings")
	f.BoolVar(&asJSON, "json", false, "print a JSON array (field names of DESIGN.md section 11)")
	cmd.AddCommand(list)
	return cmd
}
