//go:build linux

package capture

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/afpacket"
	"github.com/gopacket/gopacket/layers"
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

// vethPair creates two network namespaces joined by a veth pair, vA in
// nsA (10.99.77.1/24) and vB in nsB (10.99.77.2/24), both up, and removes
// them after the test. It skips the test unless VIGIL_E2E=1 and root.
// prefix (at most 4 characters) keeps the names of concurrent tests apart.
func vethPair(t *testing.T, prefix string) (nsA, nsB, vA, vB string) {
	t.Helper()
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
	nsA, nsB = fmt.Sprintf("%sA%d", prefix, id), fmt.Sprintf("%sB%d", prefix, id)
	vA, vB = fmt.Sprintf("%s%da", prefix, id), fmt.Sprintf("%s%db", prefix, id)
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
	return nsA, nsB, vA, vB
}

// TestLiveCapture captures on one end of a veth pair between two network
// namespaces the test creates, while the other end sends UDP and pings.
func TestLiveCapture(t *testing.T) {
	nsA, nsB, vA, _ := vethPair(t, "vgc")

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

// vlanHintFrame is an 802.1Q-tagged frame (VLAN 42) whose payload sets a
// content hint, which the decoder keeps in the VLAN field's upper bits.
type vlanHintFrame struct {
	name   string
	tagged []byte
	hint   uint16
}

func vlanHintFrames(t *testing.T) []vlanHintFrame {
	ip := ip4(layers.IPProtocolICMPv4)
	icmp := serialize(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 42, Type: layers.EthernetTypeIPv4},
		ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1},
		gopacket.Payload(blueChat))
	return []vlanHintFrame{
		// Untagged, this one takes the Ethernet/IPv4 fast path.
		{"shell banner over TCP", shellFrame(t, true, 4321, []byte("Microsoft Windows [Version 10.0.19045.3693]\r\n")), event.HintCmdShell},
		{"ICMP echo with data", icmp, event.HintICMPData},
	}
}

// untag removes the 802.1Q tag from an Ethernet frame, as the kernel does
// before a packet socket sees it.
func untag(frame []byte) []byte {
	return append(slices.Clip(frame[:12]), frame[16:]...)
}

func decodeFrame(t *testing.T, frame []byte) event.Packet {
	t.Helper()
	var p event.Packet
	if r := NewDecoder().Decode(layers.LinkTypeEthernet, frame, 1, len(frame), &p); r != Decoded {
		t.Fatalf("decode: %v", r)
	}
	return p
}

// TestAddAncillaryVLAN: a live frame whose 802.1Q tag the kernel stripped
// and reported out of band gives the record of the tagged frame as a
// capture file holds it, content hints included (they share the VLAN
// field with the id).
func TestAddAncillaryVLAN(t *testing.T) {
	for _, c := range vlanHintFrames(t) {
		t.Run(c.name, func(t *testing.T) {
			want := decodeFrame(t, c.tagged)
			if want.VLAN&^event.VLANIDMask != c.hint || want.VLANID() != 42 {
				t.Fatalf("tagged frame: VLAN field %#x, want id 42 and hint %#x", want.VLAN, c.hint)
			}
			got := decodeFrame(t, untag(c.tagged))
			addAncillary(&got, []any{afpacket.AncillaryVLAN{VLAN: 42}})
			got.Length = want.Length // the kernel's wire length does not count the stripped tag
			if got != want {
				t.Errorf("live record %+v\nfile record %+v", got, want)
			}
		})
	}
	t.Run("tag in the frame wins", func(t *testing.T) {
		f := vlanHintFrames(t)[0]
		want := decodeFrame(t, f.tagged)
		got := want
		addAncillary(&got, []any{afpacket.AncillaryVLAN{VLAN: 7}})
		if got != want {
			t.Errorf("record %+v, want %+v", got, want)
		}
	})
	t.Run("no ancillary data", func(t *testing.T) {
		f := vlanHintFrames(t)[0]
		want := decodeFrame(t, untag(f.tagged))
		got := want
		addAncillary(&got, nil)
		if got != want || got.Flags&event.FlagVLAN != 0 || got.VLAN != f.hint {
			t.Errorf("record %+v, want %+v", got, want)
		}
	})
}

// TestLiveCaptureVLANHints sends 802.1Q-tagged frames that set content
// hints over a veth pair. The kernel strips the tag and reports it out of
// band; the live records must equal the tagged frames' records as a capture
// file gives them (but for the wire length, which the kernel counts
// without the tag), hints included.
func TestLiveCaptureVLANHints(t *testing.T) {
	nsA, nsB, vA, vB := vethPair(t, "vgv")
	var src Source
	if err := inNetns(nsA, func() (err error) {
		src, err = OpenLive(vA, LiveOptions{FlushInterval: 20 * time.Millisecond})
		return err
	}); err != nil {
		t.Fatalf("open live capture in %s: %v", nsA, err)
	}
	defer src.Close()

	frames := vlanHintFrames(t)
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- inNetns(nsB, func() error {
			ifi, err := net.InterfaceByName(vB)
			if err != nil {
				return err
			}
			// Protocol 0: a socket that only sends whole frames.
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("packet socket: %w", err)
			}
			defer unix.Close(fd)
			for range 5 {
				for _, f := range frames {
					if err := unix.Sendto(fd, f.tagged, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
						return fmt.Errorf("send %s: %w", f.name, err)
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
			return nil
		})
	}()

	want := map[string]event.Packet{}
	for _, f := range frames {
		want[f.name] = decodeFrame(t, f.tagged)
	}
	seen := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	buf := make([]event.Packet, 64)
	for len(seen) < len(frames) {
		n, err := src.Next(ctx, buf)
		if err != nil {
			t.Fatalf("Next: %v (seen %v)", err, seen)
		}
		for _, p := range buf[:n] {
			for name, w := range want {
				if seen[name] || p.Proto != w.Proto || p.SrcPort != w.SrcPort || p.DstPort != w.DstPort || p.SrcIP != w.SrcIP {
					continue
				}
				seen[name] = true
				p.TimestampNs, p.Length = w.TimestampNs, w.Length
				if p != w {
					t.Errorf("%s: live record %+v\nfile record %+v", name, p, w)
				}
			}
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("sender: %v", err)
	}
}
