package endpoint_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/pki"
	"github.com/vigil-edge/vigil/server/endpoint"
	"github.com/vigil-edge/vigil/server/servertest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// TestEnrollConnectionsBounded: connections without a client certificate
// (anyone who can reach the port) are bounded in number. Each lived for the
// whole enrollment window (30 s) however many were open, so a peer with no
// credentials could hold any number of them. Agents with certificates are
// not counted.
func TestEnrollConnectionsBounded(t *testing.T) {
	s := servertest.Start(t, servertest.Options{Endpoint: func(c *endpoint.Config) { c.MaxEnrollConns = 2 }})
	a := s.Enroll(t, "e1") // its enrollment connection is closed again
	var anon []*quic.Conn
	for range 3 {
		c, err := quic.DialAddr(ctxT(t), s.Addr, pki.PinnedTLSConfig(s.Pin, servertest.ServerName), servertest.ClientQUICConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseWithError(0, "") })
		anon = append(anon, c)
	}
	// Exactly one of the three is refused (the server may take them in any
	// order), with CodeOverloaded.
	closed := -1
	deadline := time.After(10 * time.Second)
	for closed < 0 {
		for i, c := range anon {
			if c.Context().Err() != nil {
				closed = i
			}
		}
		select {
		case <-deadline:
			t.Fatal("no unauthenticated connection refused above the limit of 2")
		case <-time.After(10 * time.Millisecond):
		}
	}
	var ae *quic.ApplicationError
	if err := context.Cause(anon[closed].Context()); !errors.As(err, &ae) || !ae.Remote || wirev1.ErrorCode(ae.ErrorCode) != wirev1.CodeOverloaded {
		t.Fatalf("connection above the limit closed with %v, want overloaded", err)
	}
	time.Sleep(200 * time.Millisecond)
	var open []*quic.Conn
	for i, c := range anon {
		if i == closed {
			continue
		}
		if err := c.Context().Err(); err != nil {
			t.Fatalf("an unauthenticated connection within the limit was closed: %v", context.Cause(c.Context()))
		}
		open = append(open, c)
	}
	// An enrolled agent still connects.
	c := dial(t, s, a)
	if _, _, ack, err := controlStream(t, c); err != nil || ack.AgentId != a.ID {
		t.Fatalf("agent with a certificate: %v %v", ack, err)
	}
	// A slot that frees up is usable again (once the server saw the close).
	open[0].CloseWithError(0, "")
	tok := s.EnrollToken(t, "e1")
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		_, err := s.EnrollWith(ctxT(t), tok, "h2")
		if err == nil {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("enrollment after a slot freed: %v", err)
		}
	}
}

// TestConnectionsPerAgentBounded: one agent's connections are bounded in
// number; a new one beyond the bound closes the agent's oldest. Each
// connection may hold 16 streams, each with a decoded FindingsBatch of up to
// 4 MiB on the wire waiting for the commit queue, and one agent could open
// any number of them.
func TestConnectionsPerAgentBounded(t *testing.T) {
	s := servertest.Start(t, servertest.Options{Endpoint: func(c *endpoint.Config) { c.MaxConnsPerAgent = 2 }})
	a := s.Enroll(t, "e1")
	b := s.Enroll(t, "e1")
	c1 := dial(t, s, a)
	if _, _, _, err := controlStream(t, c1); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, s, a)
	if _, _, _, err := controlStream(t, c2); err != nil {
		t.Fatal(err)
	}
	other := dial(t, s, b) // another agent's connection is not counted
	if _, _, _, err := controlStream(t, other); err != nil {
		t.Fatal(err)
	}
	c3 := dial(t, s, a)
	if _, _, ack, err := controlStream(t, c3); err != nil || ack.AgentId != a.ID {
		t.Fatalf("newest connection: %v %v", ack, err)
	}
	if code := appCode(t, c1); code != wirev1.CodeOverloaded {
		t.Fatalf("oldest connection closed with %s, want overloaded", code)
	}
	time.Sleep(200 * time.Millisecond)
	for name, c := range map[string]*quic.Conn{"second": c2, "newest": c3, "other agent's": other} {
		if c.Context().Err() != nil {
			t.Fatalf("%s connection closed: %v", name, context.Cause(c.Context()))
		}
	}
}
