package endpoint

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/server/store"
)

// SeqStore is an optional Store extension: when the store implements it,
// HelloAck carries the highest seq stored for the agent
// (HelloAck.highest_seq), with which an agent whose spool numbers from 1
// again (the file lost or recreated while identity.json stayed) renumbers
// its findings above what the server holds, instead of having them taken
// for duplicates of stored ones.
type SeqStore interface {
	HighestSeq(ctx context.Context, agentID string) (uint64, error)
}

var _ SeqStore = (*store.DB)(nil)

// highestSeqWait bounds how long a HelloAck waits for the agent's batches
// still committing (from an earlier connection) before it reads the
// highest seq; past it, the HelloAck goes without one.
const highestSeqWait = 10 * time.Second

// agentCommits counts each agent's findings batches handed to the store
// and not yet committed (or failed), over all its connections. The zero
// value is ready.
type agentCommits struct {
	mu sync.Mutex
	m  map[string]*agentPending
}

type agentPending struct {
	n    int
	idle chan struct{} // closed when n drops to 0
}

func (a *agentCommits) begin(agentID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]*agentPending{}
	}
	p := a.m[agentID]
	if p == nil {
		p = &agentPending{idle: make(chan struct{})}
		a.m[agentID] = p
	}
	p.n++
}

func (a *agentCommits) end(agentID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.m[agentID]
	if p == nil {
		return
	}
	if p.n--; p.n <= 0 {
		close(p.idle)
		delete(a.m, agentID)
	}
}

// wait returns once the agent has no batch committing, or with ctx's error.
func (a *agentCommits) wait(ctx context.Context, agentID string) error {
	a.mu.Lock()
	p := a.m[agentID]
	a.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// highestSeq is the HelloAck's highest_seq for the agent of p: the highest
// seq stored for it once the batches it sent on earlier connections are
// committed (a batch committing while it is read would be missed). nil
// without an error: the store cannot tell (the agent then leaves its seqs
// as they are). An error (the store failed, or the agent's earlier commits
// took longer than highestSeqWait) refuses the session: a HelloAck without
// the field would let an agent whose spool was just recreated send seqs
// the server takes for duplicates, and the agent retries later instead.
func (e *Endpoint) highestSeq(ctx context.Context, p *peer) (*uint64, error) {
	ss, ok := e.st.(SeqStore)
	if !ok {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, highestSeqWait)
	defer cancel()
	if err := e.agentCommits.wait(ctx, p.id.AgentID); err != nil {
		return nil, fmt.Errorf("wait for the agent's commits: %w", err)
	}
	seq, err := ss.HighestSeq(ctx, p.id.AgentID)
	if err != nil {
		return nil, err
	}
	return &seq, nil
}
