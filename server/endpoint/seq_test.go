package endpoint_test

import (
	"testing"

	"github.com/vigil-edge/vigil/server/servertest"
)

// TestHelloAckHighestSeq: HelloAck carries the highest seq stored for the
// agent of the connection's certificate (present, 0, for an agent with
// none), so that an agent whose spool numbers from 1 again renumbers above
// it instead of having its findings ignored as duplicates.
func TestHelloAckHighestSeq(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	a := s.Enroll(t, "e1")
	other := s.Enroll(t, "e1")

	c := dial(t, s, a)
	_, _, ack, err := controlStream(t, c)
	if err != nil {
		t.Fatal(err)
	}
	if ack.HighestSeq == nil || *ack.HighestSeq != 0 {
		t.Fatalf("new agent's HelloAck highest_seq %v, want present and 0", ack.HighestSeq)
	}
	st, r := findingsStream(t, c)
	sendBatch(t, st, r, findings(1, 20))
	sendBatch(t, st, r, findings(50, 60)) // gaps are allowed (dropped findings)

	for _, tc := range []struct {
		name  string
		agent *servertest.Agent
		want  uint64
	}{
		{"same agent, next connection", a, 60},
		{"another agent", other, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, ack, err := controlStream(t, dial(t, s, tc.agent))
			if err != nil {
				t.Fatal(err)
			}
			if ack.HighestSeq == nil || *ack.HighestSeq != tc.want {
				t.Fatalf("HelloAck highest_seq %v, want %d", ack.HighestSeq, tc.want)
			}
		})
	}
}
