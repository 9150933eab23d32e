package endpoint

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/pki"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// stuckStream is a control stream whose writes fail as a write deadline
// does when the agent stops reading; it records the calls.
type stuckStream struct {
	mu            sync.Mutex
	writes        int
	readDeadlines []time.Time
}

func (s *stuckStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return len(p) / 2, os.ErrDeadlineExceeded // part of the frame left
}

func (s *stuckStream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readDeadlines = append(s.readDeadlines, t)
	return nil
}

// TestControlSessionBrokenByFailedWrite: a push whose write failed (the
// agent stopped reading until the deadline) left part of a frame on the
// stream, and the session stayed registered: every later push to that agent
// waited for another 30 s deadline, on a stream the agent could not parse
// any more. Now the first failure breaks the session: later pushes and
// suppressions fail at once without writing, and the read loop is woken
// to close the connection.
func TestControlSessionBrokenByFailedWrite(t *testing.T) {
	st := &stuckStream{}
	cs := &controlSession{agentID: "a1", entity: "acme", w: st}
	offer := &wirev1.ServerControl{Msg: &wirev1.ServerControl_ModelOffer{ModelOffer: &wirev1.ModelOffer{RolloutId: "r1"}}}
	if err := cs.send(offer); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("first push: %v, want the write's deadline error", err)
	}
	if err := cs.send(offer); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second push: %v, want the session's breaking error", err)
	}
	if sent, err := cs.sendSuppressions(&wirev1.Suppressions{Generation: 1}); sent || err == nil {
		t.Fatalf("suppressions on a broken session: sent %v, err %v", sent, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.writes != 1 {
		t.Errorf("%d writes to the stream, want 1 (nothing after the failed one)", st.writes)
	}
	if len(st.readDeadlines) == 0 || time.Until(st.readDeadlines[0]) > time.Second {
		t.Errorf("read loop not woken: read deadlines %v", st.readDeadlines)
	}
	if cs.brokenErr() == nil {
		t.Error("session not marked broken")
	}
}

// seqStore answers HighestSeq with err; the rest of Store is not used.
type seqStore struct {
	Store
	seq uint64
	err error
}

func (s seqStore) HighestSeq(context.Context, string) (uint64, error) { return s.seq, s.err }

// TestHighestSeqUnknownRefusesSession: when the store cannot say the
// agent's highest stored seq (it failed, or the agent's earlier commits did
// not finish in time), the HelloAck went out without it, and an agent
// whose spool had just been recreated then sent seqs from 1, which the
// server took for duplicates: the loss the field exists to prevent. The
// session is refused instead (the agent retries); a store that cannot tell
// at all (no SeqStore) still gives a HelloAck without the field.
func TestHighestSeqUnknownRefusesSession(t *testing.T) {
	p := &peer{id: pki.Identity{AgentID: "a1"}, log: slog.New(slog.DiscardHandler)}
	e := &Endpoint{st: seqStore{err: errors.New("database is locked")}}
	if h, err := e.highestSeq(context.Background(), p); err == nil || h != nil {
		t.Fatalf("failing store: %v, %v; want an error", h, err)
	}
	e = &Endpoint{st: seqStore{seq: 42}}
	e.agentCommits.begin("a1") // an earlier connection's batch that never finishes
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if h, err := e.highestSeq(ctx, p); err == nil || h != nil {
		t.Fatalf("commits not finished: %v, %v; want an error", h, err)
	}
	e.agentCommits.end("a1")
	if h, err := e.highestSeq(context.Background(), p); err != nil || h == nil || *h != 42 {
		t.Fatalf("working store: %v, %v; want 42", h, err)
	}
	var plain struct{ Store }
	e = &Endpoint{st: plain}
	if h, err := e.highestSeq(context.Background(), p); err != nil || h != nil {
		t.Fatalf("store without HighestSeq: %v, %v; want nil, nil", h, err)
	}
}
