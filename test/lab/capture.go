package lab

import (
	"fmt"
	"os"
	"sync"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// maxCapturePackets bounds the capture loop.
const maxCapturePackets = 20_000_000

// capturer writes every frame crossing the lab bridge to a pcap file: an
// AF_PACKET socket (pure Go, gopacket's pcapgo) on the bridge in promiscuous
// mode, which makes the bridge pass a copy of forwarded frames up.
type capturer struct {
	h       *pcapgo.EthernetHandle
	f       *os.File
	wg      sync.WaitGroup
	packets int
	err     error
}

// startCapture captures on iface in namespace n into path. snaplen > 0
// keeps at most that many bytes of each frame (the original length is
// recorded: features read lengths, not payloads, but for the first bytes
// of HTTP requests); 0 keeps whole frames.
func startCapture(n ns, iface, path string, snaplen int) (*capturer, error) {
	if snaplen <= 0 || snaplen > 65535 {
		snaplen = 65535
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	w := pcapgo.NewWriterNanos(f)
	if err := w.WriteFileHeader(uint32(snaplen), layers.LinkTypeEthernet); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	c := &capturer{f: f}
	err = n.do(func() error {
		var err error
		c.h, err = pcapgo.NewEthernetHandle(iface)
		return err
	})
	if err == nil {
		err = c.h.SetPromiscuous(true)
	}
	if err == nil {
		err = c.h.SetCaptureLength(65535)
	}
	if err != nil {
		f.Close()
		if c.h != nil {
			c.h.Close()
		}
		return nil, fmt.Errorf("capture on %s: %w", iface, err)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for c.packets < maxCapturePackets {
			data, ci, err := c.h.ReadPacketData()
			if err != nil {
				return // closed
			}
			if len(data) > snaplen {
				data = data[:snaplen]
				ci.CaptureLength = snaplen
			}
			if err := w.WritePacket(ci, data); err != nil {
				c.err = err
				return
			}
			c.packets++
		}
	}()
	return c, nil
}

// stop ends the capture and closes the file; it returns the packets written.
func (c *capturer) stop() (int, error) {
	c.h.Close()
	c.wg.Wait()
	if err := c.f.Close(); err != nil && c.err == nil {
		c.err = err
	}
	return c.packets, c.err
}
