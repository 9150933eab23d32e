package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// Pushes to agents run concurrently: each agent has its own FIFO queue, drained by one goroutine
// while it holds messages, so two pushes to the same agent (an offer and its withdrawal) keep the
// order in which they were queued, while an agent that stops reading holds back only its own
// queue until its write deadline (the endpoint's, per frame). At most PushWorkers pushes are in
// flight at once, and at most maxQueuedPushes messages wait for one agent: beyond that a push
// fails at once with ErrPushQueueFull (the agent gets the offers it lacks at its next Hello).
// No lock is held while a push writes.

// Push fan-out defaults.
const (
	// DefaultPushWorkers bounds the pushes in flight at once.
	DefaultPushWorkers = 32
	// DefaultPushWait bounds how long PushPending (and so `rollout create`) waits for the
	// pushes it queued: a little more than the endpoint's 30 s write deadline. A push still
	// running then goes on and is logged, but its agent is not counted as reached.
	DefaultPushWait = 35 * time.Second
	// maxQueuedPushes bounds the messages waiting for one agent.
	maxQueuedPushes = 64
)

// ErrPushQueueFull is the error of a push refused because too many messages wait for the agent.
var ErrPushQueueFull = errors.New("push queue of the agent is full")

// pushJob is one message queued for an agent; done gets the push's result.
type pushJob struct {
	p    Pusher
	msg  *wirev1.ServerControl
	done func(error)
}

// agentQueue is the queue of an agent whose sender goroutine runs.
type agentQueue struct {
	jobs []pushJob
}

// pushQueue holds the per-agent queues and the bound on pushes in flight.
type pushQueue struct {
	sem chan struct{}
	// guard, when set, checks each message right before it is written: a message it refuses is
	// not sent and its result is guard's error (Registry.guardOffer: offers that no longer
	// verify against the server trust policy).
	guard func(agentID string, m *wirev1.ServerControl) error

	mu     sync.Mutex
	agents map[string]*agentQueue // present while the agent's sender runs
}

func newPushQueue(workers int) *pushQueue {
	if workers <= 0 {
		workers = DefaultPushWorkers
	}
	return &pushQueue{sem: make(chan struct{}, workers), agents: map[string]*agentQueue{}}
}

// send queues msgs for agentID through p, in order, behind what already waits for it. done is
// called once per message with its index and result, from the agent's sender goroutine (or at
// once, with ErrPushQueueFull, for the messages that do not fit in the queue).
func (q *pushQueue) send(p Pusher, agentID string, msgs []*wirev1.ServerControl, done func(i int, err error)) {
	q.mu.Lock()
	aq, running := q.agents[agentID]
	if !running {
		aq = &agentQueue{}
		q.agents[agentID] = aq
	}
	var refused []int
	for i, m := range msgs {
		if len(aq.jobs) >= maxQueuedPushes {
			refused = append(refused, i)
			continue
		}
		aq.jobs = append(aq.jobs, pushJob{p: p, msg: m, done: func(err error) { done(i, err) }})
	}
	if !running && len(aq.jobs) == 0 {
		delete(q.agents, agentID)
		running = true // nothing to send
	}
	q.mu.Unlock()
	for _, i := range refused {
		done(i, fmt.Errorf("push to %s: %w (%d waiting)", agentID, ErrPushQueueFull, maxQueuedPushes))
	}
	if !running {
		go q.run(agentID, aq)
	}
}

// run is agentID's sender: it sends the agent's queued messages one at a time, in order, and
// ends when the queue is empty.
func (q *pushQueue) run(agentID string, aq *agentQueue) {
	for {
		q.mu.Lock()
		if len(aq.jobs) == 0 {
			delete(q.agents, agentID)
			q.mu.Unlock()
			return
		}
		j := aq.jobs[0]
		aq.jobs[0] = pushJob{}
		aq.jobs = aq.jobs[1:]
		q.mu.Unlock()
		if q.guard != nil {
			if err := q.guard(agentID, j.msg); err != nil {
				j.done(err)
				continue
			}
		}
		q.sem <- struct{}{}
		err := j.p.Push(agentID, j.msg)
		<-q.sem
		j.done(err)
	}
}

// pushResult is the result of one message of a fan-out.
type pushResult struct {
	agentID string
	err     error
}

// fanOut is a set of queued pushes whose results can be waited for.
type fanOut struct {
	r       *Registry
	total   int
	results chan pushResult
}

// enqueue queues each agent's messages (withdrawals and offers, in the order given); logf logs
// each result (also of the pushes still running when nobody waits for them any more).
func (r *Registry) enqueue(p Pusher, msgs map[string][]*wirev1.ServerControl, logf func(agentID string, m *wirev1.ServerControl, err error)) *fanOut {
	f := &fanOut{r: r}
	for _, ms := range msgs {
		f.total += len(ms)
	}
	f.results = make(chan pushResult, f.total) // never blocks a sender, even after we stop waiting
	for id, ms := range msgs {
		r.pq.send(p, id, ms, func(i int, err error) {
			logf(id, ms[i], err)
			f.results <- pushResult{id, err}
		})
	}
	return f
}

// wait waits, at most the registry's push wait and while ctx lasts, for the results of the
// pushes. It returns the agents for which at least one message was sent.
func (f *fanOut) wait(ctx context.Context) map[string]bool {
	reached := map[string]bool{}
	if f.total == 0 {
		return reached
	}
	timer := time.NewTimer(f.r.cfg.PushWait)
	defer timer.Stop()
	for range f.total {
		select {
		case res := <-f.results:
			if res.err == nil {
				reached[res.agentID] = true
			}
		case <-timer.C:
			f.r.log.Warn("pushes still running: not waiting for them", "after", f.r.cfg.PushWait)
			return reached
		case <-ctx.Done():
			return reached
		}
	}
	return reached
}

// logPush logs the result of a push of an offer or a withdrawal.
func (r *Registry) logPush(agentID string, m *wirev1.ServerControl, err error) {
	switch {
	case m.GetModelOffer() != nil:
		o := m.GetModelOffer()
		if err != nil {
			r.log.Debug("push offer", "agent", agentID, "rollout", o.RolloutId, "err", err)
			return
		}
		r.log.Info("model offered", "agent", agentID, "rollout", o.RolloutId, "model", o.GetModel().GetName(), "version", o.GetModel().GetVersion())
	case m.GetModelWithdrawal() != nil:
		if err != nil {
			r.log.Debug("push withdrawal", "agent", agentID, "rollout", m.GetModelWithdrawal().RolloutId, "err", err)
		}
	}
}

// offerMsgs wraps offers as control messages.
func offerMsgs(offers []*wirev1.ModelOffer) []*wirev1.ServerControl {
	out := make([]*wirev1.ServerControl, 0, len(offers))
	for _, o := range offers {
		out = append(out, &wirev1.ServerControl{Msg: &wirev1.ServerControl_ModelOffer{ModelOffer: o}})
	}
	return out
}
