package endpoint_test

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/server/endpoint"
	"github.com/vigil-edge/vigil/server/servertest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestFirstStatusAfterHelloStored: the agent sends a Status right after its
// Hello (uplink's controlWriter does). The Hello's touch stores the agent's
// state without spool stats or counters, so that first Status must reach
// the store; the throttle of too frequent Status reports must not count the
// Hello, or the agent's spool drops and counters read zero for a whole
// status interval after every reconnect (and forever for an agent whose
// sessions are shorter than that interval).
func TestFirstStatusAfterHelloStored(t *testing.T) {
	s := servertest.Start(t, servertest.Options{Endpoint: func(c *endpoint.Config) { c.StatusInterval = time.Minute }})
	a := s.Enroll(t, "e1")
	c := dial(t, s, a)
	st, _, _, err := controlStream(t, c)
	if err != nil {
		t.Fatal(err)
	}
	status := &wirev1.Status{
		TimeUnixNano: time.Now().UnixNano(),
		Spool:        &wirev1.SpoolStats{Depth: 3, Dropped: 7, NextSeq: 11, AckedSeq: 7},
		Counters:     map[string]uint64{"events_lost": 5},
	}
	if err := wirev1.Write(st, &wirev1.AgentControl{Msg: &wirev1.AgentControl_Status{Status: status}}, 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second) // generous: a slow machine must not fail it
	for {
		ag, err := s.Store.GetAgent(context.Background(), a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ag.Counters["events_lost"] == 5 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("first Status after Hello not stored: counters %v, state %s", ag.Counters, ag.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
