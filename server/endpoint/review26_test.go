package endpoint

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

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
