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
	cmd.AddCommand(list, newTriageCmd(app), newExportCmd(app))
	return cmd
}

func newTriageCmd(app *App) *cobra.Command {
	var (
		status, assignee, comment string
		asJSON                    bool
	)
	c := &cobra.Command{
		Use:   "triage ID",
		Short: "Set a finding's status (new, acknowledged, false_positive, resolved), assignee or comment",
		Long: "Triage a finding. --status false_positive also creates a suppression for the finding's entity:\n" +
			"its agents stop raising findings of the same detector and context.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id < 1 {
				return fmt.Errorf("finding id %q: want a positive number", args[0])
			}
			body := map[string]string{}
			if cmd.Flags().Changed("status") {
				body["status"] = status
			}
			if cmd.Flags().Changed("assignee") {
				body["assignee"] = assignee
			}
			if comment != "" {
				body["comment"] = comment
			}
			if len(body) == 0 {
				return fmt.Errorf("nothing to change: give --status, --assignee or --comment")
			}
			cl, err := app.Client()
			if err != nil {
				return err
			}
			var out json.RawMessage
			if err := cl.Do(cmd.Context(), http.MethodPost, fmt.Sprintf("findings/%d/triage", id), nil, body, &out); err != nil {
				return fmt.Errorf("triage finding %d: %w", id, err)
			}
			if asJSON {
				return app.PrintJSON(out)
			}
			var f struct{ Status, Assignee string }
			_ = json.Unmarshal(out, &f)
			fmt.Fprintf(app.Stdout, "finding %d: %s %s\n", id, safeText(f.Status), safeText(f.Assignee))
			return nil
		},
	}
	c.Flags().StringVar(&status, "status", "", "new, acknowledged, false_positive or resolved")
	c.Flags().StringVar(&assignee, "assignee", "", "who handles it (empty to clear)")
	c.Flags().StringVar(&comment, "comment", "", "a note for the finding's history")
	c.Flags().BoolVar(&asJSON, "json", false, "print the finding as JSON")
	return c
}

func newExportCmd(app *App) *cobra.Command {
	var (
		entity, detector, agent, severity, format string
		since                                     time.Duration
	)
	c := &cobra.Command{
		Use:   "export",
		Short: "Write findings as JSON lines to stdout, oldest first (--format jsonl or ocsf)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "jsonl" && format != "ocsf" {
				return fmt.Errorf("--format must be jsonl or ocsf")
			}
			cl, err := app.Client()
			if err != nil {
				return err
			}
			q := url.Values{"format": {format}}
			for k, v := range map[string]string{"entity": entity, "detector": detector, "agent": agent, "severity": severity} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if since > 0 {
				q.Set("since", time.Now().Add(-since).UTC().Format(time.RFC3339Nano))
			}
			// Sensor text reaches stdout, often a terminal: no raw DEL, C1
			// or bidi control (the lines decode to the same findings).
			out := &jsonControlWriter{w: app.Stdout}
			if err := cl.Stream(cmd.Context(), "findings/export", q, out); err != nil {
				return fmt.Errorf("export findings: %w", err)
			}
			if err := out.Flush(); err != nil {
				return fmt.Errorf("export findings: %w", err)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&format, "format", "jsonl", "jsonl (the API's finding JSON) or ocsf (OCSF Detection Finding, class 2004)")
	f.StringVar(&entity, "entity", "", "only this entity")
	f.StringVar(&detector, "detector", "", "only this detector")
	f.StringVar(&agent, "agent", "", "only this agent")
	f.StringVar(&severity, "severity", "", "minimum severity: low, medium, high, critical")
	f.DurationVar(&since, "since", 0, "only findings newer than this (e.g. 24h)")
	return c
}
