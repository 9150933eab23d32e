package registry

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// AgentStatus is one targeted agent's progress in a rollout.
type AgentStatus struct {
	AgentID string    `json:"agent_id"`
	Entity  string    `json:"entity"`
	State   string    `json:"state"` // pending (not yet reported), offered, fetched, verified, active, rejected, rolled_back, shadow
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time,omitzero"`
	// Shadow is the parsed shadow summary when State is "shadow".
	Shadow json.RawMessage `json:"shadow,omitempty"`
}

// RolloutStatus is a rollout and its agents.
type RolloutStatus struct {
	ID      string         `json:"id"`
	Model   store.ModelRef `json:"model"`
	Entity  string         `json:"entity,omitempty"`
	Agents  []string       `json:"target_agents,omitempty"`
	Percent int            `json:"percent,omitempty"`
	Shadow  bool           `json:"shadow,omitempty"`
	State   string         `json:"state"` // active, halted
	// StateReason says why the rollout left "active" (halted by hand: "halted by hand: REASON";
	// by the shadow halt rule: the verdict).
	StateReason    string    `json:"state_reason,omitempty"`
	StateChangedAt time.Time `json:"state_changed_at,omitzero"`
	// StateChangedBy is who halted it: a user (`vigilctl rollout halt`) or "system" (the halt rule).
	StateChangedBy string `json:"state_changed_by,omitempty"`
	Rollback       bool   `json:"rollback,omitempty"`
	// HaltFactor and ShadowTotals: a shadow rollout's halt rule and the counts it judges.
	HaltFactor   float64        `json:"halt_factor,omitempty"`
	ShadowTotals *ShadowTotals  `json:"shadow_totals,omitempty"`
	CreatedAt    time.Time      `json:"created_at"`
	CreatedBy    string         `json:"created_by"`
	Counts       map[string]int `json:"counts"`
	Status       []AgentStatus  `json:"agents"`
}

// ShadowTotals are a shadow rollout's summed agent reports and the halt rule's current verdict.
type ShadowTotals struct {
	ShadowCounts
	Verdict Verdict `json:"verdict"`
}

// Status reports every active or halted rollout (or only id, in any state) per targeted agent.
// entity, when set, is the caller's scope (an entity-admin), as for GET /api/v1/rollouts
// (server/api listRollouts): only that entity's rollouts and the deployment-wide ones, the agents
// of that entity only, and a deployment-wide rollout without what may name or summarise other
// entities' agents: its target (agent list and halt factor), its creator and its shadow totals.
func (r *Registry) Status(ctx context.Context, id, entity string) ([]RolloutStatus, error) {
	var rollouts []store.RolloutRecord
	if id != "" {
		ro, err := r.cfg.DB.RolloutByID(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return []RolloutStatus{}, nil
		}
		if err != nil {
			return nil, err
		}
		rollouts = append(rollouts, ro)
	} else {
		var err error
		if rollouts, err = r.cfg.DB.RolloutsInStates(ctx, "active", "halted"); err != nil {
			return nil, err
		}
	}
	agents, err := r.cfg.DB.ListAgents(ctx, store.AgentFilter{Entity: entity})
	if err != nil {
		return nil, err
	}
	out := []RolloutStatus{}
	for i := len(rollouts) - 1; i >= 0; i-- {
		ro := &rollouts[i]
		if id != "" && ro.ID != id {
			continue
		}
		if entity != "" && ro.Entity != "" && ro.Entity != entity {
			continue // another entity's rollout
		}
		foreign := entity != "" && ro.Entity != entity // deployment-wide, seen by an entity-admin
		by, err := r.statusesOf(ctx, ro)
		if err != nil {
			return nil, err
		}
		rs := RolloutStatus{ID: ro.ID, Model: ro.Model, Entity: ro.Entity, Agents: ro.Agents, Percent: ro.Percent, Shadow: ro.Shadow,
			State: ro.State, StateReason: ro.StateReason, Rollback: len(ro.RollbackInstruction) > 0,
			CreatedAt: ro.CreatedAt, CreatedBy: ro.CreatedBy, Counts: map[string]int{}, Status: []AgentStatus{}}
		if ro.State != "active" {
			rs.StateChangedAt, rs.StateChangedBy = ro.StateChangedAt, ro.StateChangedBy
		}
		var reps map[string]json.RawMessage
		if ro.Shadow {
			rs.HaltFactor = ro.Halt
			if reps, err = r.shadowReports(ctx, ro); err != nil {
				return nil, err
			}
			c := sumReports(reps)
			rs.ShadowTotals = &ShadowTotals{ShadowCounts: c, Verdict: r.HaltRuleFor(ro).Judge(c)}
		}
		if foreign {
			rs.Agents, rs.HaltFactor, rs.CreatedBy, rs.StateChangedBy, rs.ShadowTotals = nil, 0, "", "", nil
		}
		for _, a := range agents {
			if !a.RevokedAt.IsZero() || !Targets(ro, a.ID, a.Entity) {
				continue
			}
			as := AgentStatus{AgentID: a.ID, Entity: a.Entity, State: "pending"}
			// The agent's last report about this bundle under this rollout (a report under another
			// rollout of the same bundle leaves this one pending until offered).
			if s, ok := by[a.ID]; ok {
				as.State, as.Reason, as.Time = s.State, s.Reason, s.Time
				if s.State == "shadow" && json.Valid([]byte(s.Reason)) {
					as.Shadow, as.Reason = json.RawMessage(s.Reason), ""
				}
			}
			if as.Shadow == nil && reps[a.ID] != nil {
				as.Shadow = reps[a.ID] // a halted rollout: the report that counted
			}
			rs.Counts[as.State]++
			rs.Status = append(rs.Status, as)
		}
		sort.Slice(rs.Status, func(i, j int) bool { return rs.Status[i].AgentID < rs.Status[j].AgentID })
		out = append(out, rs)
	}
	return out, nil
}
