package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// errDeadline stands for the endpoint's write deadline expiring on an agent that stopped reading.
var errDeadline = errors.New("write deadline exceeded")

// stallPusher is a Pusher whose stalled agents never read: a push to one blocks until its
// (short, per push) write deadline or until release is closed, then fails. The other agents
// take delay per push. It records what each agent got, in order, and when.
type stallPusher struct {
	connected []string
	stalled   map[string]bool
	deadline  time.Duration
	delay     time.Duration
	release   chan struct{}

	mu       sync.Mutex
	sent     map[string][]*wirev1.ServerControl
	inFlight int
	maxIn    int
	changed  chan struct{} // closed and replaced at every delivery
}

func newStallPusher(deadline time.Duration, connected []string, stalled ...string) *stallPusher {
	p := &stallPusher{connected: connected, stalled: map[string]bool{}, deadline: deadline,
		release: make(chan struct{}), sent: map[string][]*wirev1.ServerControl{}, changed: make(chan struct{})}
	for _, s := range stalled {
		p.stalled[s] = true
	}
	return p
}

func (p *stallPusher) Push(id string, m *wirev1.ServerControl) error {
	p.mu.Lock()
	p.inFlight++
	p.maxIn = max(p.maxIn, p.inFlight)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inFlight--
		p.mu.Unlock()
	}()
	if p.stalled[id] {
		t := time.NewTimer(p.deadline)
		defer t.Stop()
		select {
		case <-t.C:
		case <-p.release:
		}
		return fmt.Errorf("push to %s: %w", id, errDeadline)
	}
	if p.delay > 0 {
		time.Sleep(p.delay)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent[id] = append(p.sent[id], m)
	close(p.changed)
	p.changed = make(chan struct{})
	return nil
}

func (p *stallPusher) Connected() []string { return p.connected }

// waitFor waits until every agent in ids got at least n messages, or until d passed.
func (p *stallPusher) waitFor(ids []string, n int, d time.Duration) error {
	timeout := time.After(d)
	for {
		p.mu.Lock()
		var missing []string
		for _, id := range ids {
			if len(p.sent[id]) < n {
				missing = append(missing, id)
			}
		}
		ch := p.changed
		p.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-timeout:
			return fmt.Errorf("agents %v got fewer than %d message(s) within %v", missing, n, d)
		}
	}
}

func (p *stallPusher) kinds(id string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.sent[id] {
		switch {
		case m.GetModelOffer() != nil:
			out = append(out, "offer:"+m.GetModelOffer().RolloutId)
		case m.GetModelWithdrawal() != nil:
			out = append(out, "withdrawal:"+m.GetModelWithdrawal().RolloutId)
		default:
			out = append(out, "other")
		}
	}
	return out
}

// TestStalledAgentDelaysOnlyItself: an agent that never reads (first in the connected list)
// must not hold back the offers of the others until its write deadline; the rollout's answer
// still counts only the agents reached, and the stalled push is accounted as failed.
func TestStalledAgentDelaysOnlyItself(t *testing.T) {
	e := newRegEnv(t)
	const deadline = 20 * time.Second // the stalled agent's (simulated) write deadline
	others := []string{"a-2", "a-3"}
	p := newStallPusher(deadline, []string{"a-1", "a-2", "a-3"}, "a-1")
	defer func() {
		select {
		case <-p.release:
		default:
			close(p.release)
		}
	}()
	e.reg.SetPusher(p)
	e.publish("nf", 2)

	type created struct {
		reached []string
		err     error
	}
	done := make(chan created, 1)
	start := time.Now()
	go func() {
		_, reached, err := e.reg.CreateRollout(context.Background(), RolloutRequest{Model: "nf@2", Entity: "alpha"}, "x")
		done <- created{reached, err}
	}()
	// Generous bound, far below the stalled agent's deadline.
	if err := p.waitFor(others, 1, deadline/4); err != nil {
		t.Fatalf("while a-1 stalls: %v (after %v)", err, time.Since(start).Round(time.Millisecond))
	}
	close(p.release) // a-1's deadline expires now
	select {
	case c := <-done:
		if c.err != nil {
			t.Fatal(c.err)
		}
		if !slices.Equal(c.reached, others) {
			t.Fatalf("reached %v, want %v (a-1's push failed)", c.reached, others)
		}
	case <-time.After(deadline / 4):
		t.Fatal("CreateRollout did not return after the stalled push failed")
	}
}

// TestPushQueue: pushes to one agent keep their order however they are queued, at most
// PushWorkers run at once, and a full queue refuses at once (the refusal is reported).
func TestPushQueue(t *testing.T) {
	msg := func(i int) *wirev1.ServerControl {
		return &wirev1.ServerControl{Msg: &wirev1.ServerControl_ModelOffer{ModelOffer: &wirev1.ModelOffer{RolloutId: fmt.Sprint(i)}}}
	}
	t.Run("order per agent", func(t *testing.T) {
		q := newPushQueue(4)
		p := newStallPusher(time.Second, nil)
		p.delay = 2 * time.Millisecond
		var want []string
		for i := range 40 {
			q.send(p, "a-1", []*wirev1.ServerControl{msg(i)}, func(int, error) {})
			want = append(want, fmt.Sprintf("offer:%d", i))
		}
		if err := p.waitFor([]string{"a-1"}, 40, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := p.kinds("a-1"); !slices.Equal(got, want) {
			t.Fatalf("order %v", got)
		}
	})
	t.Run("bounded workers", func(t *testing.T) {
		q := newPushQueue(2)
		p := newStallPusher(time.Second, nil)
		p.delay = 20 * time.Millisecond
		var ids []string
		for i := range 6 {
			id := fmt.Sprintf("a-%d", i)
			ids = append(ids, id)
			q.send(p, id, []*wirev1.ServerControl{msg(1), msg(2)}, func(int, error) {})
		}
		if err := p.waitFor(ids, 2, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if p.maxIn > 2 || p.maxIn < 1 {
			t.Fatalf("%d pushes in flight at once, bound 2", p.maxIn)
		}
	})
	t.Run("full queue refuses", func(t *testing.T) {
		q := newPushQueue(1)
		p := newStallPusher(10*time.Second, nil, "a-1")
		defer close(p.release)
		var msgs []*wirev1.ServerControl
		for i := range maxQueuedPushes + 6 { // one in flight, maxQueuedPushes waiting, 5 refused
			msgs = append(msgs, msg(i))
		}
		refused := make(chan int, len(msgs))
		q.send(p, "a-1", msgs[:1], func(int, error) {})
		for { // the first one is in flight once the queue is empty again
			q.mu.Lock()
			n := len(q.agents["a-1"].jobs)
			q.mu.Unlock()
			if n == 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		q.send(p, "a-1", msgs[1:], func(i int, err error) {
			if errors.Is(err, ErrPushQueueFull) {
				refused <- i
			}
		})
		if len(refused) != 5 {
			t.Fatalf("%d refused at once, want 5", len(refused))
		}
	})
}

// TestRolloutCreateWaitBounded: `rollout create` waits for its pushes at most PushWait, not
// until a stalled agent's write deadline; the stalled agent is not counted as reached.
func TestRolloutCreateWaitBounded(t *testing.T) {
	e := newRegEnv(t)
	e.reg.cfg.PushWait = 300 * time.Millisecond
	p := newStallPusher(20*time.Second, []string{"a-1", "a-2", "a-3"}, "a-1")
	defer close(p.release)
	e.reg.SetPusher(p)
	e.publish("nf", 2)
	start := time.Now()
	_, reached, err := e.reg.CreateRollout(context.Background(), RolloutRequest{Model: "nf@2", Entity: "alpha"}, "x")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("CreateRollout took %v with PushWait %v", d, e.reg.cfg.PushWait)
	}
	if !slices.Equal(reached, []string{"a-2", "a-3"}) {
		t.Fatalf("reached %v", reached)
	}
}

// TestHelloRacingHalt: an agent's Hello that read a shadow rollout as active while the rollout
// halts must not leave the agent with the offer after the withdrawal (it would run the halted
// shadow model until it reconnects): the offer is queued before the withdrawal.
func TestHelloRacingHalt(t *testing.T) {
	e := newRegEnv(t)
	ctx := context.Background()
	_, d2 := e.publish("nf", 2)
	e.push.connected = []string{"a-1", "a-2"}
	id, _, err := e.reg.CreateRollout(ctx, RolloutRequest{Model: "nf@2", Entity: "alpha", Shadow: true, HaltFactor: 3}, "x")
	if err != nil {
		t.Fatal(err)
	}
	e.push.connected = []string{"a-1", "a-2", "a-3"} // a-3 connects and says Hello
	halted := make(chan error, 1)
	e.reg.beforeQueue = func() {
		// a-1's wild shadow report halts the rollout after a-3's Hello read it as active.
		go func() {
			st := &wirev1.ModelStatus{RolloutId: id, State: "shadow", Reason: summary(6000, 0, 6000, 1200), Model: &wirev1.ModelRef{Name: "nf", Digest: d2}}
			err := e.db.RecordModelStatus(ctx, "a-1", st)
			if err == nil {
				e.reg.OnModelStatus(ctx, "a-1", st)
			}
			halted <- err
		}()
		deadline := time.Now().Add(2 * time.Second) // the halt may wait for this Hello
		for len(e.push.withdrawals("a-3")) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	e.reg.OnHello("a-3", "alpha", nil)
	if err := <-halted; err != nil {
		t.Fatal(err)
	}
	if ro, err := e.db.RolloutByID(ctx, id); err != nil || ro.State != "halted" {
		t.Fatalf("rollout not halted: %+v %v", ro, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(e.push.withdrawals("a-3")) == 0 || len(e.push.offers("a-3")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a-3 got %d offers, %d withdrawals", len(e.push.offers("a-3")), len(e.push.withdrawals("a-3")))
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.push.mu.Lock()
	sent := slices.Clone(e.push.sent["a-3"])
	e.push.mu.Unlock()
	if last := sent[len(sent)-1]; last.GetModelWithdrawal() == nil {
		t.Fatalf("a-3's last message is %v, after the withdrawal: it runs the halted shadow model", last)
	}
}
