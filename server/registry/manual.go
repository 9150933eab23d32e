package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/vigil-edge/vigil/server/store"
)

// Halting a rollout by hand (`vigilctl rollout halt ID [--reason TEXT]`, POST
// /api/v1/rollouts/{id}/halt, docs/rollouts.md). It does what the automatic shadow halt does
// (halt.go): the rollout's state becomes "halted" (reason, time and user kept; audited as
// "rollout.halt"), it is no longer offered, and its withdrawal (a ModelWithdrawal) reaches the
// connected agents it targets at once and the others at their next Hello:
//
//   - a shadow rollout: every targeted agent, which stops the shadow model (as the automatic
//     halt does);
//   - an ordinary rollout: the targeted agents that have not settled it yet (no report, or
//     offered, fetched, verified), which drop the offer. An agent that already activated the
//     model keeps it: a withdrawal never changes the active model. Reverting those agents is a
//     rollback rollout (`vigilctl model rollback`, `rollout create --rollback-instruction`).
//
// The newest rollout of a model name is the one offered (offersFor); a halted rollout is not a
// candidate any more, so an older rollout of the same model name that is still active is the
// one offered from then on, to the agents that have not settled it. Halt pushes it to the
// connected agents after the withdrawals (each agent's queue keeps that order).

// HaltResult is what Halt did.
type HaltResult struct {
	ID     string `json:"id"`
	State  string `json:"state"` // "halted"
	Reason string `json:"state_reason"`
	By     string `json:"state_changed_by"`
	// Withdrawn are the connected agents that were sent the withdrawal and got it now; the
	// others get it at their next Hello.
	Withdrawn []string `json:"withdrawn"`
}

// MaxHaltReason bounds the reason a user gives for halting a rollout by hand (bytes).
const MaxHaltReason = 1024

// ManualHaltPrefix starts the reason stored for a halt by hand ("halted automatically: ..."
// for the shadow halt rule).
const ManualHaltPrefix = "halted by hand"

// Halt halts rollout id by hand for actor, with an optional reason (at most
// MaxHaltReason bytes). An unknown rollout wraps store.ErrNotFound, one no longer active
// store.ErrConflict, a bad reason store.ErrInvalid.
func (r *Registry) Halt(ctx context.Context, id, actor, reason string) (HaltResult, error) {
	reason = strings.TrimSpace(reason)
	if len(reason) > MaxHaltReason {
		return HaltResult{}, fmt.Errorf("halt rollout %s: reason longer than %d bytes: %w", id, MaxHaltReason, store.ErrInvalid)
	}
	stored := ManualHaltPrefix
	if reason != "" {
		stored += ": " + reason
	}
	// A shadow rollout keeps the shadow reports it had at the halt (status shows them, as
	// after the automatic halt, when the agents then report "withdrawn").
	var final json.RawMessage
	if ro, err := r.cfg.DB.RolloutByID(ctx, id); err == nil && ro.Shadow && ro.State == "active" {
		reps, err := r.shadowReports(ctx, &ro)
		if err != nil {
			return HaltResult{}, fmt.Errorf("halt rollout %s: %w", id, err)
		}
		final, _ = json.Marshal(reps)
	}
	// As in CheckHalt: the halt and the queueing of its withdrawals happen under decideMu, so
	// that no offer decided before the halt is queued after the withdrawal.
	r.decideMu.Lock()
	if err := r.cfg.DB.HaltRolloutByUser(ctx, id, actor, stored, final); err != nil {
		r.decideMu.Unlock()
		return HaltResult{}, err
	}
	ro, err := r.cfg.DB.RolloutByID(ctx, id)
	if err != nil {
		r.decideMu.Unlock()
		return HaltResult{}, fmt.Errorf("halt rollout %s: read it back: %w", id, err)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PushWait)
	defer cancel()
	f, targeted := r.queueWithdrawals(wctx, ro)
	r.decideMu.Unlock()
	r.log.Warn("rollout halted by hand", "rollout", ro.ID, "model", ro.Model.Name, "version", ro.Model.Version, "shadow", ro.Shadow,
		"by", actor, "reason", stored, "withdrawals", targeted)
	res := HaltResult{ID: ro.ID, State: ro.State, Reason: ro.StateReason, By: ro.StateChangedBy, Withdrawn: []string{}}
	if f != nil {
		for a := range f.wait(wctx) {
			res.Withdrawn = append(res.Withdrawn, a)
		}
		slices.Sort(res.Withdrawn)
	}
	// An older rollout of the same model name, still active, is the newest candidate now:
	// offered to the connected agents that lack it, behind the withdrawals.
	r.PushPending(wctx)
	return res, nil
}

// settled reports whether an agent's report about an ordinary rollout ends it for the agent: a
// withdrawal then has nothing to drop (and must not record "withdrawn" over its "active").
func settled(st store.AgentModelStatus, ok bool) bool {
	return ok && store.IsTerminalModelState(st.State)
}

// withdrawTargets returns, of the connected agents a halted rollout targets (entity by agent
// id), those that get its withdrawal: all of them for a shadow rollout, for an ordinary one those
// that have not settled it (by: their last reports about it, statusesOf).
func withdrawTargets(ro *store.RolloutRecord, connected []string, entity map[string]string, by map[string]store.AgentModelStatus) []string {
	var out []string
	for _, id := range connected {
		if !Targets(ro, id, entity[id]) {
			continue
		}
		if !ro.Shadow {
			st, ok := by[id]
			if settled(st, ok) {
				continue
			}
		}
		out = append(out, id)
	}
	return out
}

// checkTargets refuses (store.ErrInvalid) a rollout that would reach nobody where the CERT
// meant it to: an entity that does not exist, agent ids that are unknown or revoked, or, with
// both an entity and agent ids, agents of another entity. The names are listed (at most 10 of
// each kind).
func (r *Registry) checkTargets(ctx context.Context, req RolloutRequest) error {
	var problems []string
	if req.Entity != "" {
		ents, err := r.cfg.DB.ListEntities(ctx)
		if err != nil {
			return fmt.Errorf("rollout: check the entity: %w", err)
		}
		if !slices.Contains(ents, req.Entity) {
			problems = append(problems, "entity "+req.Entity+" does not exist (no agent or enrollment token of it)")
		}
	}
	if len(req.Agents) > 0 {
		all, err := r.cfg.DB.ListAgents(ctx, store.AgentFilter{})
		if err != nil {
			return fmt.Errorf("rollout: check the agents: %w", err)
		}
		byID := make(map[string]store.Agent, len(all))
		for _, a := range all {
			byID[a.ID] = a
		}
		var unknown, revoked, elsewhere []string
		seen := map[string]bool{}
		for _, id := range req.Agents {
			if seen[id] {
				continue
			}
			seen[id] = true
			a, ok := byID[id]
			switch {
			case !ok:
				unknown = append(unknown, id)
			case a.Revoked():
				revoked = append(revoked, id)
			case req.Entity != "" && a.Entity != req.Entity:
				elsewhere = append(elsewhere, id+" ("+a.Entity+")")
			}
		}
		if len(unknown) > 0 {
			problems = append(problems, "unknown agent id(s) "+nameList(unknown))
		}
		if len(revoked) > 0 {
			problems = append(problems, "revoked agent(s) "+nameList(revoked)+" (a revoked agent never connects again)")
		}
		if len(elsewhere) > 0 {
			problems = append(problems, "agent(s) "+nameList(elsewhere)+" not in entity "+req.Entity)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("rollout: %s; it would reach nobody there: %w", strings.Join(problems, "; "), store.ErrInvalid)
	}
	return nil
}

// nameList joins names, at most 10 of them and how many more.
func nameList(names []string) string {
	const show = 10
	if len(names) <= show {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:show], ", "), len(names)-show)
}

// withdrawalForHello is used by withdrawalsFor: whether an agent that just connected needs the
// withdrawal of halted ordinary rollout ro, given its last report about it: only when it had
// not settled it (offered, fetched, verified: an offer it may still be working on).
func withdrawalForHello(st store.AgentModelStatus, ok bool) bool {
	if !ok {
		return false
	}
	switch st.State {
	case "offered", "fetched", "verified":
		return true
	}
	return false
}
