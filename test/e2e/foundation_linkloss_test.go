package e2e

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFoundationLinkLoss runs the real agent (demo generator) against the
// real server: the server goes down for a while (clean stop, then a
// SIGKILL), and the link between them is cut for a while (a UDP relay drops
// every datagram). Findings produced meanwhile arrive after the server and
// the link return, none lost or doubled, stored in seq order, and seq order
// is time order.
func TestFoundationLinkLoss(t *testing.T) {
	b := needBins(t)
	d := newDeployment(t, b, "e2e.vigil")
	d.start()
	relay := newUDPRelay(t, d.quicAddr)
	// The agent reaches the server through the relay: enroll through it
	// too, so that identity.json names the relay.
	server := d.quicAddr
	d.quicAddr = relay.addr()
	a := d.enroll("acme")
	d.quicAddr = server
	id := a.id.AgentID
	a.run("--demo-findings", "40/s")
	a.waitConnected()
	waitFor(t, 60*time.Second, func() string { return "first findings" }, func() bool { return d.count(id) > 50 })

	// producedWhile waits (bounded) until findings made in [from, to) are
	// stored.
	arrived := func(from, to time.Time) int {
		var n int
		if err := d.openDB().QueryRow(`SELECT COUNT(*) FROM findings WHERE agent_id = ? AND time >= ? AND time < ?`,
			id, from.UnixNano(), to.UnixNano()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	outage := func(name string, down, up func()) {
		t.Helper()
		from := time.Now()
		down()
		// The agent keeps producing into its spool (40/s) while the server
		// or the link is gone: wait until it has made some.
		waitFor(t, 60*time.Second, func() string { return "spool grows during " + name }, func() bool {
			st := a.status()
			return st.Spool != nil && st.Spool.Depth >= 300
		})
		to := time.Now()
		up()
		began := time.Now()
		waitFor(t, 3*time.Minute, func() string { return "findings produced during " + name + " arrive\n" + tail(a.log, 15) }, func() bool {
			st := a.status()
			return st.Connected && st.Spool != nil && st.Spool.Depth < 40 && arrived(from, to) >= 250
		})
		t.Logf("%s: %d findings made during the outage (%s) stored %s after recovery", name, arrived(from, to),
			to.Sub(from).Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	}
	outage("server stopped", func() { d.closeDB(); d.stop() }, d.start)
	outage("server SIGKILLed", func() { d.closeDB(); d.kill() }, d.start)
	outage("link cut", relay.cut, relay.restore)

	a.p.stop(t, 60*time.Second)
	st := a.status() // from the spool file now
	if st.Spool == nil || st.Spool.Depth != 0 && st.Spool.Dropped != 0 {
		t.Logf("spool after stop: %+v", st.Spool)
	}
	d.stop()
	d.closeDB()
	fs := d.findings(id)
	assigned := int(st.Spool.NextSeq - 1 - st.Spool.Dropped)
	waiting := int(st.Spool.Depth)
	if len(fs) != assigned-waiting {
		t.Fatalf("server holds %d findings, the agent assigned %d and still holds %d", len(fs), assigned, waiting)
	}
	for i, f := range fs {
		if f.Seq != int64(i+1) {
			t.Fatalf("finding #%d (id %d) has seq %d: stored out of order or with a gap", i+1, f.ID, f.Seq)
		}
		if i > 0 && f.Time < fs[i-1].Time {
			t.Fatalf("seq %d has time %d before seq %d's %d", f.Seq, f.Time, fs[i-1].Seq, fs[i-1].Time)
		}
	}
	t.Logf("%d findings, seqs 1..%d in insertion order, times non-decreasing", len(fs), len(fs))
}

// udpRelay forwards datagrams between one client and a server; cut makes
// it drop everything (a dead link) until restore.
type udpRelay struct {
	pc      net.PacketConn
	server  *net.UDPAddr
	dropped atomic.Bool
	mu      sync.Mutex
	client  net.Addr
	up      *net.UDPConn // to the server
}

func newUDPRelay(t testing.TB, server string) *udpRelay {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{pc: pc, server: sa}
	done := make(chan struct{})
	t.Cleanup(func() {
		pc.Close()
		r.mu.Lock()
		if r.up != nil {
			r.up.Close()
		}
		r.mu.Unlock()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if r.dropped.Load() {
				continue
			}
			up := r.upstream(t, from)
			if up != nil {
				_, _ = up.Write(buf[:n])
			}
		}
	}()
	return r
}

// upstream returns the socket towards the server for the current client
// (a new client, e.g. the agent's next connection, gets a new one).
func (r *udpRelay) upstream(t testing.TB, client net.Addr) *net.UDPConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.up != nil && r.client.String() == client.String() {
		return r.up
	}
	if r.up != nil {
		r.up.Close()
	}
	up, err := net.DialUDP("udp", nil, r.server)
	if err != nil {
		return nil
	}
	r.up, r.client = up, client
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // ECONNREFUSED while the server is down
			}
			if r.dropped.Load() {
				continue
			}
			_, _ = r.pc.WriteTo(buf[:n], client)
		}
	}()
	return up
}

func (r *udpRelay) addr() string { return r.pc.LocalAddr().String() }
func (r *udpRelay) cut()         { r.dropped.Store(true) }
func (r *udpRelay) restore()     { r.dropped.Store(false) }

// TestFoundationServerCrashReconnect: after the server is SIGKILLed and
// restarted at once, the real agent's next findings should flow within
// seconds: the endpoint's QUIC stateless reset key is derived from the
// server key, so the restarted server resets the agent's old connection at
// once instead of letting it wait for its 45 s idle timeout.
func TestFoundationServerCrashReconnect(t *testing.T) {
	b := needBins(t)
	d := newDeployment(t, b, "e2e.vigil")
	d.start()
	a := d.enroll("acme")
	a.run("--demo-findings", "20/s")
	a.waitConnected()
	waitFor(t, 60*time.Second, func() string { return "first findings" }, func() bool { return d.count(a.id.AgentID) > 0 })
	d.closeDB()
	d.kill()
	d.start()
	up := time.Now()
	n := d.count(a.id.AgentID)
	waitFor(t, 3*time.Minute, func() string { return "findings after the restart" }, func() bool { return d.count(a.id.AgentID) > n+20 })
	// Generous against a slow machine; far below the 45 s idle timeout.
	if took := time.Since(up); took > 20*time.Second {
		t.Fatalf("the agent resumed %s after the crashed server came back (want seconds: a stateless reset would end the dead connection at once)", took.Round(time.Second))
	}
}
