package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Shadow halt rule (docs/rollouts.md). A shadow rollout created with a halt factor F > 0 halts
// itself when its new model alerts too often compared with the model it would replace:
//
//	each agent's latest shadow report of the rollout, its counts cut to MaxShadowReportEvents;
//	  active rate = active anomalies / active events
//	  shadow rate = shadow anomalies / shadow events
//	  over        = shadow rate > F × max(active rate, RateFloor)   (RateFloor default 0.001)
//	judge only when the summed event counts are at least MinEvents (default 1000) each;
//	halt when the summed counts are over,
//	  or when half or more of the agents that have MinEvents events each are over on their own.
//
// The floor stands in for an active rate of zero (a quiet network on which the active model
// raised nothing): without it any single shadow anomaly would be "infinitely" worse. 0.001 is the
// false-positive rate the shipped models are calibrated to (models/baseline/REPORT.md), so with
// F = 3 a shadow model halts on a quiet network once it flags more than 0.3% of the events.
//
// The reports are outside input: one agent must not decide the verdict for the others. Its
// counts are cut to MaxShadowReportEvents (keeping its rates) and summed with saturation, so no
// report can overflow the sums; and since one agent claiming many quiet events can still
// outweigh the others in the sums, the agents are also judged one by one, each counting once.
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

// MaxShadowReportEvents bounds the events of each model that one agent's shadow report counts
// for. The agent's counts run from the start of its shadow model: 10^9 events is over 11,000
// events a second for a day, beyond what one sensor's detector scores. A report counting more is
// scaled down to it, its anomalies in proportion (its rates kept), so that a report claiming 2^64
// events neither overflows the sums nor buries the other agents' reports under 10^15 quiet events.
const MaxShadowReportEvents = 1_000_000_000

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
	// perAgent are the summed reports one by one (sumReports), which Judge also judges alone.
	perAgent []ShadowCounts
}

// Verdict is the halt rule's answer.
type Verdict struct {
	Judged     bool    `json:"judged"` // enough events to judge
	Halt       bool    `json:"halt"`   // the shadow model alerts too often
	ActiveRate float64 `json:"active_rate"`
	ShadowRate float64 `json:"shadow_rate"`
	Limit      float64 `json:"limit"` // Factor × max(active rate, floor)
	// AgentsJudged are the agents whose own reports have MinEvents events of each model;
	// AgentsOver those of them whose own shadow rate is over their own limit.
	AgentsJudged int    `json:"agents_judged"`
	AgentsOver   int    `json:"agents_over"`
	Reason       string `json:"reason"`
}

// rates returns c's active and shadow rates, the limit and whether the shadow rate is over it.
func (h HaltRule) rates(c ShadowCounts) (active, shadow, limit float64, over bool) {
	if c.ActiveEvents > 0 {
		active = float64(c.ActiveAnomalies) / float64(c.ActiveEvents)
	}
	if c.ShadowEvents > 0 {
		shadow = float64(c.ShadowAnomalies) / float64(c.ShadowEvents)
	}
	limit = h.Factor * max(active, h.RateFloor)
	return active, shadow, limit, shadow > limit
}

// Judge applies the rule to c: to its sums, and to each agent's report alone when c comes from
// sumReports (counts built by hand are judged on their sums only).
func (h HaltRule) Judge(c ShadowCounts) Verdict {
	if h.MinEvents == 0 {
		h.MinEvents = DefaultHaltMinEvents
	}
	if h.RateFloor <= 0 {
		h.RateFloor = DefaultHaltRateFloor
	}
	var v Verdict
	var over bool
	v.ActiveRate, v.ShadowRate, v.Limit, over = h.rates(c)
	switch {
	case h.Factor <= 0:
		v.Reason = "no halt factor"
	case c.ActiveEvents < h.MinEvents || c.ShadowEvents < h.MinEvents:
		v.Reason = fmt.Sprintf("not judged yet: %d active / %d shadow events, need %d each", c.ActiveEvents, c.ShadowEvents, h.MinEvents)
	default:
		v.Judged = true
		for _, a := range c.perAgent {
			if a.ActiveEvents < h.MinEvents || a.ShadowEvents < h.MinEvents {
				continue
			}
			v.AgentsJudged++
			if _, _, _, o := h.rates(a); o {
				v.AgentsOver++
			}
		}
		v.Halt = over || (v.AgentsOver > 0 && 2*v.AgentsOver >= v.AgentsJudged)
		cmp := "within"
		if over {
			cmp = "exceeds"
		}
		v.Reason = fmt.Sprintf("shadow alert rate %.4g (%d/%d events) %s %g x active rate %.4g (%d/%d events; floor %g) over %d agent(s)",
			v.ShadowRate, c.ShadowAnomalies, c.ShadowEvents, cmp, h.Factor, v.ActiveRate, c.ActiveAnomalies, c.ActiveEvents,
			h.RateFloor, c.Agents)
		if v.AgentsJudged > 0 {
			v.Reason += fmt.Sprintf("; judged alone, %d of %d agent(s) with %d+ events exceed %g x their own active rate",
				v.AgentsOver, v.AgentsJudged, h.MinEvents, h.Factor)
		}
	}
	return v
}

// shadowReport is the part of the agent's shadow summary (agent/update.ShadowSummary, sent as the
// Reason of a "shadow" ModelStatus) that the rule reads.
type shadowReport struct {
	Active modelCounts `json:"active"`
	Shadow modelCounts `json:"shadow"`
}

type modelCounts struct {
	Events    uint64 `json:"events"`
	Anomalies uint64 `json:"anomalies"`
}

// capped returns c cut to MaxShadowReportEvents events, the anomalies in proportion.
func (c modelCounts) capped() modelCounts {
	if c.Events <= MaxShadowReportEvents {
		return c
	}
	a := uint64(float64(c.Anomalies) / float64(c.Events) * MaxShadowReportEvents)
	return modelCounts{Events: MaxShadowReportEvents, Anomalies: min(a, MaxShadowReportEvents)}
}

// parseShadowReport reads a shadow summary (outside input: bounded by the store's reason limit),
// its counts cut to MaxShadowReportEvents. The summary must be a JSON object: encoding/json
// reads "null" into a struct without error, and a report of nothing must not count as an agent.
func parseShadowReport(s string) (shadowReport, bool) {
	var r shadowReport
	if len(s) == 0 || len(s) > 4096 || !strings.HasPrefix(strings.TrimLeft(s, " \t\r\n"), "{") ||
		json.Unmarshal([]byte(s), &r) != nil {
		return r, false
	}
	if r.Active.Anomalies > r.Active.Events || r.Shadow.Anomalies > r.Shadow.Events {
		return r, false
	}
	r.Active, r.Shadow = r.Active.capped(), r.Shadow.capped()
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
	by, err := r.statusesOf(ctx, ro)
	if err != nil {
		return nil, err
	}
	for agent, s := range by {
		if s.State != "shadow" {
			continue
		}
		if _, ok := parseShadowReport(s.Reason); ok {
			out[agent] = json.RawMessage(s.Reason)
		}
	}
	return out, nil
}

// statusesOf returns each agent's last report about rollout ro (statusIndex.of), by agent id:
// of the agents ro targets and that are not revoked only. Any agent may report about a
// published bundle (a report naming no rollout stands for every rollout of it), so the reports
// of other agents must not count for ro (in its halt rule and its shadow totals).
func (r *Registry) statusesOf(ctx context.Context, ro *store.RolloutRecord) (map[string]store.AgentModelStatus, error) {
	sts, err := r.cfg.DB.ModelStatuses(ctx, "", ro.Model.Digest)
	if err != nil {
		return nil, err
	}
	revoked, err := r.cfg.DB.RevokedAgents(ctx)
	if err != nil {
		return nil, err
	}
	byAgent := map[string]statusIndex{}
	for _, s := range sts {
		if revoked[s.AgentID] || !Targets(ro, s.AgentID, s.Entity) {
			continue
		}
		if byAgent[s.AgentID] == nil {
			byAgent[s.AgentID] = statusIndex{}
		}
		byAgent[s.AgentID].add(s)
	}
	out := make(map[string]store.AgentModelStatus, len(byAgent))
	for agent, ix := range byAgent {
		if s, ok := ix.of(ro); ok {
			out[agent] = s
		}
	}
	return out, nil
}

// sumReports adds up shadow reports (saturating, although capped reports cannot overflow) and
// keeps each one for Judge's per-agent verdicts.
func sumReports(reps map[string]json.RawMessage) ShadowCounts {
	var c ShadowCounts
	for _, raw := range reps {
		rep, ok := parseShadowReport(string(raw))
		if !ok {
			continue
		}
		a := ShadowCounts{ActiveEvents: rep.Active.Events, ActiveAnomalies: rep.Active.Anomalies,
			ShadowEvents: rep.Shadow.Events, ShadowAnomalies: rep.Shadow.Anomalies, Agents: 1}
		c.ActiveEvents = addSat(c.ActiveEvents, a.ActiveEvents)
		c.ActiveAnomalies = addSat(c.ActiveAnomalies, a.ActiveAnomalies)
		c.ShadowEvents = addSat(c.ShadowEvents, a.ShadowEvents)
		c.ShadowAnomalies = addSat(c.ShadowAnomalies, a.ShadowAnomalies)
		c.Agents++
		c.perAgent = append(c.perAgent, a)
	}
	return c
}

// addSat is a + b, or the largest uint64 when that overflows.
func addSat(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
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
	if ro.State == "halted" && ro.Shadow {
		r.withdrawFrom(agentID, &ro)
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
	// The halt and the queueing of its withdrawals happen under decideMu, so that no offer
	// decided before the halt is queued after the withdrawal (see Registry.decideMu).
	r.decideMu.Lock()
	halted, err := r.cfg.DB.HaltRollout(ctx, ro.ID, HaltActor, reason, final)
	if err != nil {
		r.decideMu.Unlock()
		return v, err
	}
	if !halted {
		r.decideMu.Unlock()
		return v, nil
	}
	r.log.Warn("shadow rollout halted", "rollout", ro.ID, "model", ro.Model.Name, "version", ro.Model.Version, "reason", reason)
	ro.State, ro.StateReason, ro.ShadowFinal = "halted", reason, final
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	f, targeted := r.queueWithdrawals(wctx, *ro)
	r.decideMu.Unlock()
	id := ro.ID
	go func() { // the withdrawals are queued; their results are logged in the background
		defer cancel()
		if f != nil {
			n := len(f.wait(wctx))
			r.log.Info("rollout withdrawn from connected agents", "rollout", id, "agents", n, "targeted", targeted)
		}
	}()
	return v, nil
}

// withdrawFrom queues the withdrawal of halted shadow rollout ro for agentID, whose shadow report
// says it still runs it (its withdrawal at the halt failed, or it was not connected then and its
// Hello did not list it). A halted rollout is never offered again, so no offer can follow it.
func (r *Registry) withdrawFrom(agentID string, ro *store.RolloutRecord) {
	p := r.getPusher()
	if p == nil {
		return
	}
	r.log.Info("shadow report of a halted rollout: withdrawing it again", "agent", agentID, "rollout", ro.ID)
	r.enqueue(p, map[string][]*wirev1.ServerControl{agentID: {withdrawal(ro)}}, r.logPush)
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

// queueWithdrawals queues the withdrawal of a halted rollout for its connected agents (of an
// ordinary rollout halted by hand, those that have not settled it: withdrawTargets); it returns
// the pushes and how many agents they target. The caller holds decideMu.
func (r *Registry) queueWithdrawals(ctx context.Context, ro store.RolloutRecord) (*fanOut, int) {
	p := r.getPusher()
	if p == nil {
		return nil, 0
	}
	agents, err := r.cfg.DB.ListAgents(ctx, store.AgentFilter{})
	if err != nil {
		r.log.Error("list agents", "err", err)
		return nil, 0
	}
	entity := map[string]string{}
	for _, a := range agents {
		entity[a.ID] = a.Entity
	}
	var by map[string]store.AgentModelStatus
	if !ro.Shadow { // an ordinary rollout: not the agents that settled it (activated it, ...)
		if by, err = r.statusesOf(ctx, &ro); err != nil {
			r.log.Error("rollout statuses", "rollout", ro.ID, "err", err)
			return nil, 0
		}
	}
	msgs := map[string][]*wirev1.ServerControl{}
	for _, id := range withdrawTargets(&ro, p.Connected(), entity, by) {
		msgs[id] = []*wirev1.ServerControl{withdrawal(&ro)}
	}
	return r.enqueue(p, msgs, r.logPush), len(msgs)
}

// withdrawalsFor returns the withdrawals an agent that just connected needs: halted shadow
// rollouts targeting it that its Hello lists as running (running), or that it last reported
// running (or still fetching), and halted ordinary rollouts (halted by hand) it last reported
// still installing (offered, fetched, verified). Its reports may have been lost (the endpoint's rate limit, a
// broken link), so what the Hello lists counts whatever the stored report says.
func withdrawalsFor(halted []store.RolloutRecord, agentID, entity string, statuses statusIndex, running map[string]bool) []*wirev1.ServerControl {
	var out []*wirev1.ServerControl
	for i := range halted {
		ro := &halted[i]
		if !Targets(ro, agentID, entity) {
			continue
		}
		if !ro.Shadow { // halted by hand: only an offer the agent has not settled
			if st, ok := statuses.of(ro); withdrawalForHello(st, ok) {
				out = append(out, withdrawal(ro))
			}
			continue
		}
		if running[ro.ID] {
			out = append(out, withdrawal(ro))
			continue
		}
		st, ok := statuses.of(ro)
		if !ok {
			continue
		}
		switch st.State {
		case "shadow", "offered", "fetched", "verified":
			out = append(out, withdrawal(ro))
		}
	}
	return out
}
