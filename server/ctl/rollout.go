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
	cmd := &cobra.Command{Use: "rollout", Short: "Roll models out to agents, follow their progress, halt them"}
	cmd.AddCommand(rolloutCreate(app), rolloutStatus(app), rolloutList(app), rolloutHalt(app))
	return cmd
}

// maxHaltReason is the server's bound on a halt reason (registry.MaxHaltReason).
const maxHaltReason = 1024

func rolloutHalt(app *App) *cobra.Command {
	var (
		reason string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "halt ROLLOUT [--reason TEXT] [--json]",
		Short: "Stop a rollout: no agent is offered it any more; agents that have not activated it drop it",
		Long: `Halt a rollout by hand (the CERT roles that create rollouts: admin).

The rollout's state becomes "halted" (the reason, the time and who halted it are kept and
audited as rollout.halt). It is no longer offered to any agent. Connected agents it targets get
a withdrawal at once, the others at their next connection:

  - a shadow rollout: the agents stop its shadow model (as the automatic halt does);
  - an ordinary rollout: agents that have not activated the model yet drop the offer.
    Agents that ALREADY ACTIVATED it KEEP it: halting never changes an active model.
    To put them back on the previous model, create a rollback rollout:
      vigilctl model rollback --key release.key --ttl 24h --reason "..." --out rb.json OLD.vgb
      vigilctl rollout create --model NAME@OLD --agents ... --rollback-instruction rb.json

An older rollout of the same model name that is still active is then the one offered (the
newest active rollout of a model name wins). See docs/rollouts.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(reason) > maxHaltReason {
				return fmt.Errorf("--reason: at most %d bytes", maxHaltReason)
			}
			cl, err := app.Client()
			if err != nil {
				return err
			}
			var req any // no body without a reason
			if reason != "" {
				req = map[string]string{"reason": reason}
			}
			var res struct {
				ID        string   `json:"id"`
				State     string   `json:"state"`
				Reason    string   `json:"state_reason"`
				By        string   `json:"state_changed_by"`
				Withdrawn []string `json:"withdrawn"`
			}
			if err := cl.Do(cmd.Context(), http.MethodPost, "rollouts/"+url.PathEscape(args[0])+"/halt", nil, req, &res); err != nil {
				return fmt.Errorf("halt rollout: %w", err)
			}
			if asJSON {
				return app.PrintJSON(res)
			}
			fmt.Fprintf(app.Stdout, "rollout %s %s by %s: %s\n", safeText(res.ID), safeText(res.State), safeText(res.By), safeText(res.Reason))
			fmt.Fprintf(app.Stdout, "withdrawn now from %d connected agent(s); the others at their next connection. "+
				"Agents that already activated the model keep it (revert them with a rollback rollout).\n", len(res.Withdrawn))
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", fmt.Sprintf("why (at most %d bytes; stored, audited and sent to the agents)", maxHaltReason))
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func rolloutList(app *App) *cobra.Command {
	var (
		entity string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "list [--entity NAME] [--json]",
		Short: "Rollouts, newest first, with their state (active, halted: why and by whom) and progress",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rollouts, err := getList(cmd.Context(), app, "rollouts", "rollouts", entityQuery(entity))
			if err != nil {
				return err
			}
			if asJSON {
				return app.PrintJSON(rollouts)
			}
			t := newTable(app.Stdout, "ID", "MODEL", "ENTITY", "STATE", "PROGRESS", "CREATED", "REASON")
			for _, raw := range rollouts {
				var r struct {
					ID    string `json:"id"`
					Model struct {
						Name    string `json:"name"`
						Version uint64 `json:"version"`
					} `json:"model"`
					Entity         string         `json:"entity"`
					Percent        int            `json:"percent"`
					Shadow         bool           `json:"shadow"`
					State          string         `json:"state"`
					StateReason    string         `json:"state_reason"`
					StateChangedBy string         `json:"state_changed_by"`
					CreatedAt      string         `json:"created_at"`
					Progress       map[string]int `json:"progress"`
				}
				if err := json.Unmarshal(raw, &r); err != nil {
					return fmt.Errorf("decode rollout: %w", err)
				}
				var prog []string
				for k, v := range r.Progress {
					prog = append(prog, fmt.Sprintf("%s=%d", k, v))
				}
				sort.Strings(prog)
				model := fmt.Sprintf("%s@%d", r.Model.Name, r.Model.Version)
				if r.Shadow {
					model += " (shadow)"
				}
				ent := r.Entity
				if ent == "" {
					ent = "*"
				}
				if r.Percent > 0 {
					ent += fmt.Sprintf(" %d%%", r.Percent)
				}
				reason := r.StateReason
				if r.StateChangedBy != "" {
					reason = "by " + r.StateChangedBy + ": " + reason
				}
				// Sensor- and user-controlled text: every column goes through safeText (table.row).
				t.row(r.ID, model, ent, r.State, strings.Join(prog, " "), r.CreatedAt, reason)
			}
			return t.flush()
		},
	}
	c.Flags().StringVar(&entity, "entity", "", "only this entity's rollouts and the deployment-wide ones")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
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
	State          string  `json:"state"`
	StateReason    string  `json:"state_reason"`
	StateChangedBy string  `json:"state_changed_by"`
	StateChangedAt string  `json:"state_changed_at"`
	Shadow         bool    `json:"shadow"`
	Rollback       bool    `json:"rollback"`
	HaltFactor     float64 `json:"halt_factor"`
	ShadowTotals   *struct {
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
		Short: "Per-agent progress of the active and halted rollouts: pending, offered, fetched, verified, active, rejected (with reason), rolled_back, shadow, withdrawn",
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
				if r.StateChangedBy != "" || r.StateChangedAt != "" {
					by := r.StateChangedBy
					if by == "" {
						by = "?"
					}
					fmt.Fprintf(app.Stdout, "  %s by %s at %s\n", safeText(r.State), safeText(by), safeText(r.StateChangedAt))
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
