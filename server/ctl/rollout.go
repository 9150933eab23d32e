package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigil-edge/vigil/models/rollback"
)

func init() { Register(61, newRolloutCmd) }

func newRolloutCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "rollout", Short: "Roll models out to agents and follow their progress"}
	cmd.AddCommand(rolloutCreate(app), rolloutStatus(app))
	return cmd
}

func rolloutCreate(app *App) *cobra.Command {
	var (
		model, entity string
		agents        []string
		percent       int
		shadow        bool
		halt          float64
		rollbackFile  string
		asJSON        bool
	)
	c := &cobra.Command{
		Use:   "create --model NAME@VERSION (--entity NAME | --agents ID,... | --percent N) [--shadow [--halt-factor F]] [--rollback-instruction FILE] [--json]",
		Short: "Offer a published model to agents; connected agents get it at once, the others when they connect",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if model == "" {
				return errors.New("--model NAME@VERSION is required")
			}
			if entity == "" && len(agents) == 0 && percent == 0 {
				return errors.New("give --entity, --agents or --percent")
			}
			if halt > 0 && !shadow {
				return errors.New("--halt-factor needs --shadow")
			}
			req := map[string]any{"model": model, "entity": entity, "agents": agents, "percent": percent, "shadow": shadow, "halt_factor": halt}
			if rollbackFile != "" {
				instr, err := readLimited(rollbackFile, rollback.MaxSize)
				if err != nil {
					return fmt.Errorf("--rollback-instruction: %w", err)
				}
				req["rollback_instruction"] = instr // []byte: base64 in JSON
			}
			cl, err := app.Client()
			if err != nil {
				return err
			}
			var res struct {
				ID      string   `json:"id"`
				Reached []string `json:"reached"`
			}
			if err := cl.Do(cmd.Context(), http.MethodPost, "rollouts", nil, req, &res); err != nil {
				return fmt.Errorf("create rollout: %w", err)
			}
			if asJSON {
				return app.PrintJSON(res)
			}
			fmt.Fprintf(app.Stdout, "rollout %s created; offered now to %d connected agent(s)\n", safeText(res.ID), len(res.Reached))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&model, "model", "", "NAME@VERSION of a published model")
	f.StringVar(&entity, "entity", "", "every agent of this entity")
	f.StringSliceVar(&agents, "agents", nil, "these agent ids")
	f.IntVar(&percent, "percent", 0, "a stable N% of the (entity's) agents: hash(agent id, model name)")
	f.BoolVar(&shadow, "shadow", false, "run beside the active model without findings and report both models' statistics")
	f.Float64Var(&halt, "halt-factor", 0, "shadow: halt the rollout when the new model's alert rate exceeds F x the active model's (docs/rollouts.md)")
	f.StringVar(&rollbackFile, "rollback-instruction", "", "signed rollback instruction (vigilctl model rollback) letting agents go back to this older version")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

type rolloutStatusView struct {
	ID    string `json:"id"`
	Model struct {
		Name    string `json:"name"`
		Version uint64 `json:"version"`
	} `json:"model"`
	State        string  `json:"state"`
	StateReason  string  `json:"state_reason"`
	Shadow       bool    `json:"shadow"`
	Rollback     bool    `json:"rollback"`
	HaltFactor   float64 `json:"halt_factor"`
	ShadowTotals *struct {
		ActiveEvents    uint64 `json:"active_events"`
		ActiveAnomalies uint64 `json:"active_anomalies"`
		ShadowEvents    uint64 `json:"shadow_events"`
		ShadowAnomalies uint64 `json:"shadow_anomalies"`
		Agents          int    `json:"agents"`
		Verdict         struct {
			Reason string `json:"reason"`
		} `json:"verdict"`
	} `json:"shadow_totals"`
	Counts map[string]int `json:"counts"`
	Agents []struct {
		AgentID string          `json:"agent_id"`
		Entity  string          `json:"entity"`
		State   string          `json:"state"`
		Reason  string          `json:"reason"`
		Shadow  json.RawMessage `json:"shadow"`
	} `json:"agents"`
}

func rolloutStatus(app *App) *cobra.Command {
	var (
		id     string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "status [--id ROLLOUT] [--json]",
		Short: "Per-agent progress of the active rollouts: pending, offered, fetched, verified, active, rejected (with reason), rolled_back, shadow",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := app.Client()
			if err != nil {
				return err
			}
			q := url.Values{}
			if id != "" {
				q.Set("id", id)
			}
			var raw json.RawMessage
			if err := cl.Do(cmd.Context(), http.MethodGet, "rollouts/status", q, nil, &raw); err != nil {
				return fmt.Errorf("rollout status: %w", err)
			}
			if asJSON {
				return app.PrintJSON(raw)
			}
			var rs []rolloutStatusView
			if err := json.Unmarshal(raw, &rs); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			for _, r := range rs {
				var counts []string
				for k, v := range r.Counts {
					counts = append(counts, fmt.Sprintf("%s=%d", k, v))
				}
				sort.Strings(counts)
				mode := ""
				switch {
				case r.Shadow && r.HaltFactor > 0:
					mode = fmt.Sprintf(" (shadow, halt factor %g)", r.HaltFactor)
				case r.Shadow:
					mode = " (shadow)"
				case r.Rollback:
					mode = " (rollback)"
				}
				// Agents report the states counted and the reasons shown: safeText.
				fmt.Fprintf(app.Stdout, "rollout %s  %s@%d%s  %s  %s\n", safeText(r.ID), safeText(r.Model.Name), r.Model.Version, mode,
					safeText(r.State), safeText(strings.Join(counts, " ")))
				if r.StateReason != "" {
					fmt.Fprintf(app.Stdout, "  %s: %s\n", safeText(r.State), safeText(r.StateReason))
				}
				if t := r.ShadowTotals; t != nil {
					fmt.Fprintf(app.Stdout, "  shadow totals over %d agent(s): active %d/%d anomalies/events, shadow %d/%d; %s\n",
						t.Agents, t.ActiveAnomalies, t.ActiveEvents, t.ShadowAnomalies, t.ShadowEvents, safeText(t.Verdict.Reason))
				}
				t := newTable(app.Stdout, "  AGENT", "ENTITY", "STATE", "REASON")
				for _, a := range r.Agents {
					reason := a.Reason
					if len(a.Shadow) > 0 {
						reason = string(a.Shadow)
					}
					t.row("  "+a.AgentID, a.Entity, a.State, reason)
				}
				t.flush()
			}
			return nil
		},
	}
	c.Flags().StringVar(&id, "id", "", "only this rollout")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// readLimited reads a small file, refusing one larger than limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, limit)
	}
	return b, nil
}
