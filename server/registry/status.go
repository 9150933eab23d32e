package registry

import (
	"context"
	"encoding/json"
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
	ID        string         `json:"id"`
	Model     store.ModelRef `json:"model"`
	Entity    string         `json:"entity,omitempty"`
	Agents    []string       `json:"target_agents,omitempty"`
	Percent   int            `json:"percent,omitempty"`
	Shadow    bool           `json:"shadow,omitempty"`
	State     string         `json:"state"`
	CreatedAt time.Time      `json:"created_at"`
	CreatedBy string         `json:"created_by"`
	Counts    map[string]int `json:"counts"`
	Status    []AgentStatus  `json:"agents"`
}

// Status reports every active rollout (or only id) per targeted agent; entity, when set, limits
// the agents to that entity (entity-admins).
func (r *Registry) Status(ctx context.Context, id, entity string) ([]RolloutStatus, error) {
	rollouts, err := r.cfg.DB.ActiveRollouts(ctx)
	if err != nil {
		return nil, err
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
		sts, err := r.cfg.DB.ModelStatuses(ctx, "", ro.Model.Digest)
		if err != nil {
			return nil, err
		}
		by := map[string]store.AgentModelStatus{}
		for _, s := range sts {
			by[s.AgentID] = s
		}
		rs := RolloutStatus{ID: ro.ID, Model: ro.Model, Entity: ro.Entity, Agents: ro.Agents, Percent: ro.Percent, Shadow: ro.Shadow,
			State: ro.State, CreatedAt: ro.CreatedAt, CreatedBy: ro.CreatedBy, Counts: map[string]int{}, Status: []AgentStatus{}}
		for _, a := range agents {
			if !a.RevokedAt.IsZero() || !Targets(ro, a.ID, a.Entity) {
				continue
			}
			as := AgentStatus{AgentID: a.ID, Entity: a.Entity, State: "pending"}
			if s, ok := by[a.ID]; ok {
				as.State, as.Reason, as.Time = s.State, s.Reason, s.Time
				if s.State == "shadow" && json.Valid([]byte(s.Reason)) {
					as.Shadow, as.Reason = json.RawMessage(s.Reason), ""
				}
			}
			rs.Counts[as.State]++
			rs.Status = append(rs.Status, as)
		}
		sort.Slice(rs.Status, func(i, j int) bool { return rs.Status[i].AgentID < rs.Status[j].AgentID })
		out = append(out, rs)
	}
	return out, nil
}
