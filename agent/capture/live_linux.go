//go:build linux

package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/gopacket/gopacket/afpacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/vigil-edge/vigil/internal/cloexec"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

const blockSize = 1 << 20 // TPACKET_V3 block: 1 MiB

type liveSource struct {
	iface   string
	link    layers.LinkType // how the interface's frames begin (linkTypeOf)
	handles []*afpacket.TPacket
	stats   []*counters // one per reader
	batches chan []event.Packet
	free    chan []event.Packet
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{} // closed when every reader has ended
	errMu   sync.Mutex
	err     error          // first reader error
	pending []event.Packet // rest of a batch not yet delivered
	pendBuf []event.Packet
	cookies *CookieTable // shared by the readers' decoders (cookiehint.go)
	closeMu sync.Once
	hmu     sync.Mutex // guards handles against Close during Stats
	log     *slog.Logger
	// startNs: with a filter, packets stamped before every socket had its
	// filter attached may have entered the ring unfiltered (the socket is
	// bound before SO_ATTACH_FILTER); capture starts at startNs and earlier
	// packets are skipped.
	startNs int64
}

// OpenLive starts capturing on iface with AF_PACKET TPACKET_V3 rings. It
// needs CAP_NET_RAW. The sockets belong to the network namespace of the
// calling thread.
func OpenLive(iface string, opts LiveOptions) (Source, error) {
	if opts.Fanout <= 0 {
		opts.Fanout = 1
	}
	if opts.RingBytes <= 0 {
		opts.RingBytes = DefaultRingBytes
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 256
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 50 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.FanoutID == 0 {
		opts.FanoutID = uint16(os.Getpid())
	}
	link, err := linkTypeOf(iface)
	if err != nil {
		return nil, fmt.Errorf("open live %s: %w", iface, err)
	}
	prog := opts.FilterProgram
	if prog == nil && opts.Filter != "" {
		if link != layers.LinkTypeEthernet {
			return nil, fmt.Errorf("open live %s: filter %q: expressions are compiled for Ethernet frames, and this interface has none (pass a compiled program)", iface, opts.Filter)
		}
		var err error
		if prog, err = CompileFilter(context.Background(), opts.Filter); err != nil {
			return nil, fmt.Errorf("open live %s: %w", iface, err)
		}
	}
	blocks := max(opts.RingBytes/blockSize, 8)
	s := &liveSource{iface: iface, link: link, log: opts.Logger, done: make(chan struct{}), cookies: NewCookieTable()}
	for i := 0; i < opts.Fanout; i++ {
		// afpacket opens its socket without SOCK_CLOEXEC and gives no way
		// to reach it: cloexec.Open marks it before any plugin can be
		// forked, or a plugin would inherit a socket that reads every
		// packet on the interface and can inject some.
		var h *afpacket.TPacket
		err := cloexec.Open(func() (err error) {
			h, err = afpacket.NewTPacket(
				afpacket.OptInterface(iface),
				afpacket.OptTPacketVersion(afpacket.TPacketVersion3),
				afpacket.OptFrameSize(afpacket.DefaultFrameSize),
				afpacket.OptBlockSize(blockSize),
				afpacket.OptNumBlocks(blocks),
				afpacket.OptBlockTimeout(opts.FlushInterval),
				afpacket.OptPollTimeout(opts.FlushInterval),
			)
			return err
		})
		if h != nil {
			s.handles = append(s.handles, h)
		}
		if err != nil {
			s.closeHandles()
			return nil, fmt.Errorf("open live %s: socket %d: %w", iface, i, err)
		}
		if prog != nil {
			if err := h.SetBPF(prog); err != nil {
				s.closeHandles()
				return nil, fmt.Errorf("open live %s: attach filter: %w", iface, err)
			}
		}
		if opts.Promiscuous {
			if err := h.SetPromiscuous(true); err != nil {
				s.closeHandles()
				return nil, fmt.Errorf("open live %s: promiscuous: %w", iface, err)
			}
		}
		if opts.Fanout > 1 {
			if err := h.SetFanout(afpacket.FanoutHash, opts.FanoutID); err != nil {
				s.closeHandles()
				return nil, fmt.Errorf("open live %s: fanout: %w", iface, err)
			}
		}
	}
	if prog != nil {
		s.startNs = time.Now().UnixNano()
	}
	// Two batches per reader in flight plus one being filled.
	nb := 3 * opts.Fanout
	s.batches = make(chan []event.Packet, nb)
	s.free = make(chan []event.Packet, nb)
	for range nb {
		s.free <- make([]event.Packet, 0, opts.BatchSize)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, h := range s.handles {
		c := &counters{}
		s.stats = append(s.stats, c)
		s.wg.Add(1)
		go s.read(ctx, h, c, opts.BatchSize, opts.FlushInterval)
	}
	go func() { s.wg.Wait(); close(s.done) }()
	return s, nil
}

func (s *liveSource) closeHandles() {
	for _, h := range s.handles {
		h.Close()
	}
}

func (s *liveSource) setErr(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
}

// read is one socket's reader: it decodes frames into batches and hands
// full (or, after flush, partial) batches to Next.
func (s *liveSource) read(ctx context.Context, h *afpacket.TPacket, c *counters, batchSize int, flush time.Duration) {
	defer s.wg.Done()
	dec := NewDecoderWithCookies(s.cookies)
	var batch []event.Packet
	var st Stats
	lastHand := time.Now()
	warned := false
	hand := func() bool {
		c.add(&st)
		st = Stats{}
		if len(batch) == 0 {
			return true
		}
		select {
		case s.batches <- batch:
			batch = nil
			lastHand = time.Now()
			return true
		case <-ctx.Done():
			return false
		}
	}
	defer func() {
		if len(batch) > 0 {
			st.OurDrops += uint64(len(batch))
		}
		c.add(&st)
	}()
	for {
		if ctx.Err() != nil {
			return
		}
		if batch == nil {
			select {
			case batch = <-s.free:
				batch = batch[:0]
			case <-ctx.Done():
				return
			}
		}
		data, ci, err := h.ZeroCopyReadPacketData()
		if err != nil {
			if errors.Is(err, afpacket.ErrTimeout) || errors.Is(err, afpacket.ErrPoll) {
				if !hand() {
					return
				}
				if errors.Is(err, afpacket.ErrPoll) && !s.pollErrWait(ctx, flush, &warned) {
					return
				}
				continue
			}
			s.setErr(fmt.Errorf("read %s: %w", s.iface, err))
			hand()
			return
		}
		if s.startNs != 0 && ci.Timestamp.UnixNano() < s.startNs {
			continue // arrived before the filter was in place
		}
		st.Packets++
		st.Bytes += uint64(len(data))
		batch = batch[:len(batch)+1]
		p := &batch[len(batch)-1]
		switch dec.Decode(s.link, data, ci.Timestamp.UnixNano(), ci.Length, p) {
		case Decoded, DecodedTruncated:
			st.Decoded++
			if p.Flags&event.FlagTrunc != 0 {
				st.Truncated++
			}
			addAncillary(p, ci.AncillaryData)
		default:
			st.DecodeErrors++
			batch = batch[:len(batch)-1]
		}
		if len(batch) == cap(batch) || time.Since(lastHand) >= flush {
			if !hand() {
				return
			}
		}
	}
}

// pollErrWait waits flush (or until ctx ends: false) after a poll that
// reported an error on the socket. The kernel sets that error when the
// interface goes down or away, and nothing the reader can do clears it:
// every later poll reports it at once, even after the interface is back
// (capture then goes on, the ring still fills). Polling again at once spun a
// core for as long as the agent ran; the ring is checked once per flush
// interval instead while the error stands.
func (s *liveSource) pollErrWait(ctx context.Context, flush time.Duration, warned *bool) bool {
	if !*warned {
		*warned = true
		s.log.Warn("capture socket reports an error (the interface went down or away); polling it every flush interval",
			"iface", s.iface, "interval", flush)
	}
	t := time.NewTimer(flush)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// linkTypeOf returns the link type of the frames that an AF_PACKET SOCK_RAW
// socket reads on iface, from the interface's hardware type: Ethernet
// (Ethernet devices, their VLANs, bridges and bonds, veth, loopback), or raw
// IP for the layer-3 devices (tun, WireGuard, ipip, sit, ip6tnl, raw-IP
// modems), whose frames begin with the IP header. Other hardware types
// (802.11 monitor mode, InfiniBand, GRE, PPP, ...) are refused: decoded as
// Ethernet, their frames gave records of garbage, silently.
func linkTypeOf(iface string) (layers.LinkType, error) {
	// Any socket of the calling thread's network namespace answers the
	// ioctl (the capture sockets are made on the same thread).
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("hardware type: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(iface)
	if err != nil {
		return 0, fmt.Errorf("hardware type: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFHWADDR, ifr); err != nil {
		return 0, fmt.Errorf("hardware type: %w", err)
	}
	hw := ifr.Uint16() // ifr_hwaddr.sa_family
	lt, ok := linkTypeOfHW(hw)
	if !ok {
		return 0, fmt.Errorf("hardware type %d (ARPHRD): frames of this kind are not decoded: %w", hw, ErrUnsupportedLinkType)
	}
	return lt, nil
}

// linkTypeOfHW maps an ARPHRD hardware type to the link type of its frames.
func linkTypeOfHW(hw uint16) (layers.LinkType, bool) {
	switch hw {
	case unix.ARPHRD_ETHER, unix.ARPHRD_LOOPBACK:
		return layers.LinkTypeEthernet, true
	case unix.ARPHRD_NONE, unix.ARPHRD_RAWIP, unix.ARPHRD_TUNNEL, unix.ARPHRD_TUNNEL6, unix.ARPHRD_SIT:
		return layers.LinkTypeRaw, true
	}
	return 0, false
}

// addAncillary adds to p, decoded from a live frame, what the kernel reports
// out of band: the 802.1Q tag it stripped from the frame. The VLAN id goes
// into the id bits of p.VLAN, next to the content hints the decoder set
// above them, so that the record equals the one decoded from the tagged
// frame (as a capture file holds it).
func addAncillary(p *event.Packet, anc []any) {
	for _, a := range anc {
		if v, ok := a.(afpacket.AncillaryVLAN); ok && p.Flags&event.FlagVLAN == 0 {
			p.Flags |= event.FlagVLAN
			p.VLAN = p.VLAN&^event.VLANIDMask | uint16(v.VLAN)&event.VLANIDMask
		}
	}
}

func (s *liveSource) Next(ctx context.Context, buf []event.Packet) (int, error) {
	if len(s.pending) == 0 {
		if s.pendBuf != nil {
			s.free <- s.pendBuf[:0]
			s.pendBuf = nil
		}
		select {
		case b := <-s.batches:
			s.pending, s.pendBuf = b, b
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-s.done:
			select { // drain what the readers left
			case b := <-s.batches:
				s.pending, s.pendBuf = b, b
			default:
				s.errMu.Lock()
				err := s.err
				s.errMu.Unlock()
				if err == nil {
					err = io.EOF
				}
				return 0, err
			}
		}
	}
	n := copy(buf, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *liveSource) Stats() Stats {
	var st Stats
	for _, c := range s.stats {
		st.add(c.load())
	}
	s.hmu.Lock()
	for _, h := range s.handles {
		if _, v3, err := h.SocketStats(); err == nil {
			st.KernelDrops += uint64(v3.Drops())
		}
	}
	s.hmu.Unlock()
	st.CookiesUntracked = s.cookies.Untracked()
	return st
}

func (s *liveSource) Close() error {
	s.closeMu.Do(func() {
		s.cancel()
		<-s.done
		var dropped uint64
		dropped += uint64(len(s.pending))
		for {
			select {
			case b := <-s.batches:
				dropped += uint64(len(b))
				continue
			default:
			}
			break
		}
		if len(s.stats) > 0 {
			s.stats[0].ourDrops.Add(dropped)
		}
		// Read the kernel counters one last time before the sockets go.
		st := s.Stats()
		if len(s.stats) > 0 {
			s.stats[0].kernelDrops.Store(st.KernelDrops)
		}
		s.hmu.Lock()
		s.closeHandles()
		s.handles = nil
		s.hmu.Unlock()
	})
	return nil
}
