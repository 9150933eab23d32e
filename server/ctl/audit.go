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

func init() { Register(50, newAuditCmd) }

func newAuditCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The audit log of every change"}
	var (
		limit  int
		asJSON bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit entries, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 1000 {
				return fmt.Errorf("--limit must be 1..1000")
			}
			entries, err := getList(cmd.Context(), app, "audit", "entries", url.Values{"limit": {strconv.Itoa(limit)}})
			if err != nil {
				return err
			}
			if asJSON {
				return app.PrintJSON(entries)
			}
			t := newTable(app.Stdout, "ID", "TIME", "ACTOR", "ACTION", "TARGET", "ENTITY", "REMOTE", "DETAIL")
			for _, raw := range entries {
				var e struct {
					ID                                            int64
					Time                                          time.Time
					Actor, Action, Target, Entity, Remote, Detail string
				}
				if err := json.Unmarshal(raw, &e); err != nil {
					return fmt.Errorf("decode audit entry: %w", err)
				}
				t.row(strconv.FormatInt(e.ID, 10), stamp(e.Time), e.Actor, e.Action, e.Target, e.Entity, e.Remote, truncate(e.Detail, 60))
			}
			return t.flush()
		},
	}
	list.Flags().IntVar(&limit, "limit", 100, "at most this many entries (1..1000)")
	list.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	cmd.AddCommand(list)

	var verifyJSON bool
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the audit log's hash chain (exit status 1 if it is broken)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := app.Client()
			if err != nil {
				return err
			}
			var resp struct {
				OK      bool   `json:"ok"`
				Checked int    `json:"checked"`
				Error   string `json:"error,omitempty"`
			}
			if err := c.Do(cmd.Context(), http.MethodGet, "audit/verify", nil, nil, &resp); err != nil {
				return fmt.Errorf("verify audit: %w", err)
			}
			if verifyJSON {
				if err := app.PrintJSON(resp); err != nil {
					return err
				}
			} else if resp.OK {
				fmt.Fprintf(app.Stdout, "audit log intact: %d entries, hash chain verified\n", resp.Checked)
			}
			if !resp.OK {
				return fmt.Errorf("audit log chain BROKEN after %d good entries: %s", resp.Checked, resp.Error)
			}
			return nil
		},
	}
	verify.Flags().BoolVar(&verifyJSON, "json", false, "print {ok, checked, error}")
	cmd.AddCommand(verify)
	return cmd
}
