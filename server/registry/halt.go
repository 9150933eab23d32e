package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Shadow halt rule (docs/rollouts.md). A shadow rollout created with a halt factor F > 0 halts
// itself when its new model alerts too often compared with the model it would replace:
//
//	summed over every targeted agent's latest shadow report of the rollout,
//	  active rate = active anomalies / active events
//	  shadow rate = shadow anomalies / shadow events
//	judge only when both event counts are at least MinEvents (default 1000);
//	halt when shadow rate > F × max(active rate, RateFloor)   (RateFloor default 0.001)
//
// The floor stands in for an active rate of zero (a quiet network on which the active model
// raised nothing): without it any single shadow anomaly would be "infinitely" worse. 0.001 is the
// false-positive rate the shipped models are calibrated to (models/baseline/REPORT.md), so with
// F = 3 a shadow model halts on a quiet network once it flags more than 0.3% of the events.
// Halting sets the rollout's state to "halted" with the verdict as its reason, audits
// "rollout.halted" by actor "system", stops offering the rollout, and sends a ModelWithdrawal to
// the targeted agents (connected ones at once, the others at their next Hello), which stop the
// shadow model.

// Halt rule defaults.
const (
	DefaultHaltMinEvents = 1000
	DefaultHaltRateFloor = 0.001
	// HaltActor is the audit actor of automatic halts.
	HaltActor = "system"
)

// HaltRule is the shadow halt rule.
type HaltRule struct {
	Factor    float64 // halt when shadow rate > Factor × max(active rate, RateFloor); <= 0: never
	MinEvents uint64  // both models must have scored at least this many events
	RateFloor float64 // the active rate used when it is below this
}

// ShadowCounts are the event and anomaly counts of the two models of a shadow rollout.
type ShadowCounts struct {
	ActiveEvents    uint64 `json:"active_events"`
	ActiveAnomalies uint64 `json:"active_anomalies"`
	ShadowEvents    uint64 `json:"shadow_events"`
	ShadowAnomalies uint64 `json:"shadow_anomalies"`
	Agents          int    `json:"agents"` // agents whose reports are summed
}

// Verdict is the halt rule's answer.
type Verdict struct {
	Judged     bool    `json:"judged"` // enough events to judge
	Halt       bool    `json:"halt"`   // the shadow model alerts too often
	ActiveRate float64 `json:"active_rate"`
	ShadowRate float64 `json:"shadow_rate"`
	Limit      float64 `json:"limit"` // Factor × max(active rate, floor)
	Reason     string  `json:"reason"`
}

// Judge applies the rule to c.
func (h HaltRule) Judge(c ShadowCounts) Verdict {
	if h.MinEvents == 0 {
		h.MinEvents = DefaultHaltMinEvents
	}
	if h.RateFloor <= 0 {
		h.RateFloor = DefaultHaltRateFloor
	}
	var v Verdict
	if c.ActiveEvents > 0 {
		v.ActiveRate = float64(c.ActiveAnomalies) / float64(c.ActiveEvents)
	}
	if c.ShadowEvents > 0 {
		v.ShadowRate = float64(c.ShadowAnomalies) / float64(c.ShadowEvents)
	}
	v.Limit = h.Factor * max(v.ActiveRate, h.RateFloor)
	switch {
	case h.Factor <= 0:
		v.Reason = "no halt factor"
	case c.ActiveEvents < h.MinEvents || c.ShadowEvents < h.MinEvents:
		v.Reason = fmt.Sprintf("not judged yet: %d active / %d shadow events, need %d each", c.ActiveEvents, c.ShadowEvents, h.MinEvents)
	default:
		v.Judged = true
		v.Halt = v.ShadowRate > v.Limit
		cmp := "within"
		if v.Halt {
			cmp = "exceeds"
		}
		v.Reason = fmt.Sprintf("shadow alert rate %.4g (%d/%d events) %s %g x active rate %.4g (%d/%d events; floor %g) over %d agent(s)",
			v.ShadowRate, c.ShadowAnomalies, c.ShadowEvents, cmp, h.Factor, v.ActiveRate, c.ActiveAnomalies, c.ActiveEvents,
			h.RateFloor, c.Agents)
	}
	return v
}

// shadowReport is the part of the agent's shadow summary (agent/update.ShadowSummary, sent as the
// Reason of a "shadow" ModelStatus) that the rule reads.
type shadowReport struct {
	Active struct {
		Events    uint64 `json:"events"`
		Anomalies uint64 `json:"anomalies"`
	} `json:"active"`
	Shadow struct {
		Events    uint64 `json:"events"`
		Anomalies uint64 `json:"anomalies"`
	} `json:"shadow"`
}

// parseShadowReport reads a shadow summary (outside input: bounded by the store's reason limit).
func parseShadowReport(s string) (shadowReport, bool) {
	var r shadowReport
	if len(s) == 0 || len(s) > 4096 || json.Unmarshal([]byte(s), &r) != nil {
		return r, false
	}
	if r.Active.Anomalies > r.Active.Events || r.Shadow.Anomalies > r.Shadow.Events {
		return r, false
	}
	return r, true
}

// shadowReports returns the latest shadow report of each of a rollout's agents: for a halted
// rollout the ones that made it halt (kept with it), otherwise the agents' current ones.
func (r *Registry) shadowReports(ctx context.Context, ro *store.RolloutRecord) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	if len(ro.ShadowFinal) > 0 {
		if err := json.Unmarshal(ro.ShadowFinal, &out); err == nil {
			return out, nil
		}
	}
	sts, err := r.cfg.DB.ModelStatuses(ctx, "", ro.Model.Digest)
	if err != nil {
		return nil, err
	}
	for _, s := range sts {
		if s.State != "shadow" || (s.RolloutID != "" && s.RolloutID != ro.ID) {
			continue
		}
		if _, ok := parseShadowReport(s.Reason); ok {
			out[s.AgentID] = json.RawMessage(s.Reason)
		}
	}
	return out, nil
}

// sumReports adds up shadow reports.
func sumReports(reps map[string]json.RawMessage) ShadowCounts {
	var c ShadowCounts
	for _, raw := range reps {
		rep, ok := parseShadowReport(string(raw))
		if !ok {
			continue
		}
		c.ActiveEvents += rep.Active.Events
		c.ActiveAnomalies += rep.Active.Anomalies
		c.ShadowEvents += rep.Shadow.Events
		c.ShadowAnomalies += rep.Shadow.Anomalies
		c.Agents++
	}
	return c
}

// HaltRuleFor returns the rule of a rollout (its halt factor, the default minimum and floor).
func (r *Registry) HaltRuleFor(ro *store.RolloutRecord) HaltRule {
	return HaltRule{Factor: ro.Halt, MinEvents: r.cfg.HaltMinEvents, RateFloor: r.cfg.HaltRateFloor}
}

// OnModelStatus is called by the endpoint after it recorded an agent's ModelStatus: a "shadow"
// report of an active shadow rollout with a halt factor re-judges the rollout and halts it when
// the rule says so.
func (r *Registry) OnModelStatus(ctx context.Context, agentID string, st *wirev1.ModelStatus) {
	if st.GetState() != "shadow" || st.GetRolloutId() == "" {
		return
	}
	ro, err := r.cfg.DB.RolloutByID(ctx, st.RolloutId)
	if err != nil {
		r.log.Debug("shadow report of an unknown rollout", "agent", agentID, "rollout", st.RolloutId, "err", err)
		return
	}
	if ro.State != "active" || !ro.Shadow || ro.Halt <= 0 {
		return
	}
	if _, err := r.CheckHalt(ctx, &ro); err != nil {
		r.log.Error("shadow halt check", "rollout", ro.ID, "err", err)
	}
}

// CheckHalt judges a shadow rollout and halts it when the rule says so; it returns the verdict.
func (r *Registry) CheckHalt(ctx context.Context, ro *store.RolloutRecord) (Verdict, error) {
	reps, err := r.shadowReports(ctx, ro)
	if err != nil {
		return Verdict{}, err
	}
	v := r.HaltRuleFor(ro).Judge(sumReports(reps))
	if !v.Halt {
		return v, nil
	}
	reason := "halted automatically: " + v.Reason
	final, _ := json.Marshal(reps)
	halted, err := r.cfg.DB.HaltRollout(ctx, ro.ID, HaltActor, reason, final)
	if err != nil {
		return v, err
	}
	if halted {
		r.log.Warn("shadow rollout halted", "rollout", ro.ID, "model", ro.Model.Name, "version", ro.Model.Version, "reason", reason)
		ro.State, ro.StateReason, ro.ShadowFinal = "halted", reason, final
		go r.withdrawConnected(*ro)
	}
	return v, nil
}

// withdrawal is the ModelWithdrawal of a halted rollout.
func withdrawal(ro *store.RolloutRecord) *wirev1.ServerControl {
	return &wirev1.ServerControl{Msg: &wirev1.ServerControl_ModelWithdrawal{ModelWithdrawal: &wirev1.ModelWithdrawal{
		RolloutId: ro.ID, Reason: truncate(ro.StateReason, 1024),
		Model: &wirev1.ModelRef{Name: ro.Model.Name, Version: ro.Model.Version, Digest: ro.Model.Digest, Detector: ro.Detector},
	}}}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// withdrawConnected sends the withdrawal of a halted rollout to its connected agents.
func (r *Registry) withdrawConnected(ro store.RolloutRecord) {
	p := r.getPusher()
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agents, err := r.cfg.DB.ListAgents(ctx, store.AgentFilter{})
	if err != nil {
		r.log.Error("list agents", "err", err)
		return
	}
	entity := map[string]string{}
	for _, a := range agents {
		entity[a.ID] = a.Entity
	}
	n := 0
	for _, id := range p.Connected() {
		if !Targets(&ro, id, entity[id]) {
			continue
		}
		if err := p.Push(id, withdrawal(&ro)); err != nil {
			r.log.Debug("push withdrawal", "agent", id, "rollout", ro.ID, "err", err)
			continue
		}
		n++
	}
	r.log.Info("rollout withdrawn from connected agents", "rollout", ro.ID, "agents", n)
}

// withdrawalsFor returns the withdrawals an agent that just connected needs: halted shadow
// rollouts targeting it that it last reported running (or still fetching).
func withdrawalsFor(halted []store.RolloutRecord, agentID, entity string, statuses map[string]store.AgentModelStatus) []*wirev1.ServerControl {
	var out []*wirev1.ServerControl
	for i := range halted {
		ro := &halted[i]
		if !ro.Shadow || !Targets(ro, agentID, entity) {
			continue
		}
		st, ok := statuses[ro.Model.Digest]
		if !ok || (st.RolloutID != ro.ID && st.RolloutID != "") {
			continue
		}
		switch st.State {
		case "shadow", "offered", "fetched", "verified":
			out = append(out, withdrawal(ro))
		}
	}
	return out
}
