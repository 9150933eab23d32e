//go:build linux

package capture

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
}

// inNetns runs f on a thread switched into the named network namespace.
// The thread is never switched back: it exits with the goroutine.
func inNetns(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // no Unlock: the thread dies with the goroutine
		fd, err := unix.Open("/var/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// TestLiveCapture captures on one end of a veth pair between two network
// namespaces the test creates, while the other end sends UDP and pings.
func TestLiveCapture(t *testing.T) {
	if os.Getenv("VIGIL_E2E") != "1" {
		t.Skip("live capture in network namespaces runs only with VIGIL_E2E=1")
	}
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root (network namespaces, AF_PACKET)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 (ip) not installed")
	}
	id := os.Getpid() % 100000
	nsA, nsB := fmt.Sprintf("vgcapA%d", id), fmt.Sprintf("vgcapB%d", id)
	vA, vB := fmt.Sprintf("vgc%da", id), fmt.Sprintf("vgc%db", id)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", nsA).Run()
		exec.Command("ip", "netns", "del", nsB).Run()
	})
	run(t, "ip", "netns", "add", nsA)
	run(t, "ip", "netns", "add", nsB)
	run(t, "ip", "link", "add", vA, "netns", nsA, "type", "veth", "peer", "name", vB, "netns", nsB)
	run(t, "ip", "-n", nsA, "addr", "add", "10.99.77.1/24", "dev", vA)
	run(t, "ip", "-n", nsB, "addr", "add", "10.99.77.2/24", "dev", vB)
	run(t, "ip", "-n", nsA, "link", "set", vA, "up")
	run(t, "ip", "-n", nsB, "link", "set", vB, "up")

	var all, filtered Source
	if err := inNetns(nsA, func() (err error) {
		if all, err = OpenLive(vA, LiveOptions{Fanout: 2, RingBytes: 8 << 20, FlushInterval: 20 * time.Millisecond}); err != nil {
			return err
		}
		prog, err := CompileFilter(context.Background(), "udp dst port 9999")
		if err != nil {
			t.Logf("no filter test: %v", err)
			return nil
		}
		filtered, err = OpenLive(vA, LiveOptions{FilterProgram: prog, FlushInterval: 20 * time.Millisecond})
		return err
	}); err != nil {
		t.Fatalf("open live capture in %s: %v", nsA, err)
	}
	defer all.Close()
	if filtered != nil {
		defer filtered.Close()
	}

	const udpCount, pingCount = 50, 5
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- inNetns(nsB, func() error {
			// Unconnected: ICMP port-unreachable replies do not fail later writes.
			c, err := net.ListenPacket("udp4", "10.99.77.2:0")
			if err != nil {
				return err
			}
			defer c.Close()
			dst := &net.UDPAddr{IP: net.IPv4(10, 99, 77, 1), Port: 9999}
			for i := 0; i < udpCount; i++ {
				if _, err := c.WriteTo([]byte("vigil test datagram"), dst); err != nil {
					return err
				}
				time.Sleep(2 * time.Millisecond)
			}
			// Echo requests over a raw ICMP socket (no ping binary needed).
			ic, err := net.ListenPacket("ip4:icmp", "10.99.77.2")
			if err != nil {
				return err
			}
			defer ic.Close()
			for i := 0; i < pingCount; i++ {
				m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 7, Seq: i, Data: []byte("vigil")}}
				b, err := m.Marshal(nil)
				if err != nil {
					return err
				}
				if _, err := ic.WriteTo(b, &net.IPAddr{IP: net.IPv4(10, 99, 77, 1)}); err != nil {
					return err
				}
			}
			return nil
		})
	}()

	count := func(s Source, want func(udp, echo int) bool) (udp, echo, total int) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		buf := make([]event.Packet, 64)
		for !want(udp, echo) {
			n, err := s.Next(ctx, buf)
			if err != nil {
				t.Logf("Next: %v", err)
				return
			}
			for _, p := range buf[:n] {
				total++
				src := p.SrcAddr().String()
				if p.Proto == event.ProtoUDP && p.DstPort == 9999 && src == "10.99.77.2" {
					udp++
				}
				if p.Proto == event.ProtoICMP && p.SrcPort == 8 && src == "10.99.77.2" {
					echo++
				}
			}
		}
		return
	}
	wantEcho := pingCount
	udp, echo, total := count(all, func(u, e int) bool { return u >= udpCount && e >= wantEcho })
	if err := <-sendErr; err != nil {
		t.Errorf("sender: %v", err)
	}
	t.Logf("captured %d packets: %d UDP to 9999, %d echo requests; stats %+v", total, udp, echo, all.Stats())
	if udp != udpCount || echo < wantEcho {
		t.Fatalf("captured %d UDP (want %d) and %d echo requests (want %d)", udp, udpCount, echo, wantEcho)
	}
	if filtered != nil {
		fu, fe, ftotal := count(filtered, func(u, e int) bool { return u >= udpCount })
		t.Logf("filtered source: %d packets, %d UDP to 9999, %d echo; stats %+v", ftotal, fu, fe, filtered.Stats())
		if fu != udpCount || fe != 0 || ftotal != fu {
			t.Fatalf("filter 'udp dst port 9999' let through %d packets: %d UDP, %d echo", ftotal, fu, fe)
		}
	}
	if err := all.Close(); err != nil {
		t.Fatal(err)
	}
	if st := all.Stats(); st.Packets < uint64(udpCount) || st.KernelDrops != 0 {
		t.Errorf("stats after close: %+v", st)
	}
}
