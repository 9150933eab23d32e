package sdk

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/vigil-edge/vigil/plugins/sdk/proto"
)

// ringCodec is the gRPC codec of both ends of the Detector service. It
// encodes and decodes RingResult (the ring's result stream) by hand, with
// exactly the protobuf wire format of detector.proto, decodes ScoreResponse
// (the unary Score answer) the same way, and hands every other message to
// the standard protobuf codec. With the reflection-based codec an
// anomaly cost about 19 µs of CPU (plugin and agent together), most of it on
// the context map: during a port scan, where every packet is an anomaly,
// that was more than half of the scan's CPU. Decoding interns the strings of
// a message (context keys, model names and digests, feature names repeat in
// every anomaly), so each is allocated once per message.
//
// The wire format is unchanged, so an agent and a plugin built with or
// without this codec talk to each other.
//
// A result comes from a plugin, which may have been compromised by the
// records it parses: decoding is bounded by the batch size the agent asked
// for (maxRecords; see maxContextPerRecord), and strings must be valid
// UTF-8, as the standard codec requires.
type ringCodec struct {
	std        encoding.CodecV2
	maxRecords int
}

func newRingCodec() ringCodec { return newRingCodecFor(MaxMaxBatch) }

// newRingCodecFor is the codec of a Consume call whose batches hold at most
// maxRecords records (MaxMaxBatch when out of 1..MaxMaxBatch).
func newRingCodecFor(maxRecords int) ringCodec {
	c := encoding.GetCodecV2("proto")
	if c == nil {
		panic("sdk: grpc proto codec not registered")
	}
	if maxRecords < 1 || maxRecords > MaxMaxBatch {
		maxRecords = MaxMaxBatch
	}
	return ringCodec{std: c, maxRecords: maxRecords}
}

// Bounds of one RingResult or ScoreResponse, per record of the largest batch: at most one
// anomaly per record, MaxTopContributions contributions and
// maxContextPerRecord context entries per anomaly, and aggregates whose
// destination ports and addresses (distinct per batch, so at most two per
// record) stay within maxAggregatePerRecord per record. Without them two
// bytes on the wire (an empty anomaly) cost the agent some two hundred
// bytes of memory: a 4 MiB message about 400 MB.
const (
	maxContextPerRecord   = 32
	maxAggregatePerRecord = 4
)

// maxRingResultBytes bounds the size of a RingResult for batches of
// maxRecords records (what the agent's gRPC stream accepts): 4 KiB per
// anomaly and 1 MiB besides.
func maxRingResultBytes(maxRecords int) int { return maxRecords<<12 + 1<<20 }

func (ringCodec) Name() string { return "proto" }

func (c ringCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*pb.RingResult)
	if !ok {
		return c.std.Marshal(v)
	}
	b := appendRingResult(make([]byte, 0, sizeRingResult(m)), m)
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (c ringCodec) Unmarshal(data mem.BufferSlice, v any) error {
	var b []byte
	switch v.(type) {
	case *pb.RingResult, *pb.ScoreResponse:
		if len(data) == 1 {
			b = data[0].ReadOnlyData()
		} else {
			b = data.Materialize()
		}
	default:
		return c.std.Unmarshal(data, v)
	}
	d := ringDecoder{strs: map[string]string{}, anomalies: c.maxRecords, contribs: c.maxRecords * MaxTopContributions,
		context: c.maxRecords * maxContextPerRecord, aggItems: c.maxRecords * maxAggregatePerRecord}
	switch m := v.(type) {
	case *pb.RingResult:
		*m = pb.RingResult{}
		if err := d.ringResult(b, m); err != nil {
			return fmt.Errorf("decode RingResult: %w", err)
		}
	case *pb.ScoreResponse:
		*m = pb.ScoreResponse{}
		if err := d.scoreResponse(b, m); err != nil {
			return fmt.Errorf("decode ScoreResponse: %w", err)
		}
	}
	return nil
}

// --- encoding ---

func sizeTag(num protowire.Number) int { return protowire.SizeTag(num) }

func sizeVarintField(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return sizeTag(num) + protowire.SizeVarint(v)
}

func sizeFloatField(num protowire.Number, v float32) int {
	if math.Float32bits(v) == 0 {
		return 0
	}
	return sizeTag(num) + 4
}

func sizeStringField(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return sizeTag(num) + protowire.SizeBytes(len(s))
}

func sizeMsgField(num protowire.Number, n int) int { return sizeTag(num) + protowire.SizeBytes(n) }

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func appendFloatField(b []byte, num protowire.Number, v float32) []byte {
	if math.Float32bits(v) == 0 {
		return b
	}
	return protowire.AppendFixed32(protowire.AppendTag(b, num, protowire.Fixed32Type), math.Float32bits(v))
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

func appendMsgHeader(b []byte, num protowire.Number, n int) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.BytesType), uint64(n))
}

func sizeStats(s *pb.BatchStats) int {
	return sizeVarintField(1, s.GetCount()) + sizeVarintField(2, s.GetAnomalies()) + sizeFloatField(3, s.GetP50()) +
		sizeFloatField(4, s.GetP90()) + sizeFloatField(5, s.GetP99()) + sizeFloatField(6, s.GetMax())
}

func sizeContribution(c *pb.Contribution) int {
	return sizeStringField(1, c.GetName()) + sizeFloatField(2, c.GetContribution())
}

// sizeMapEntry: proto maps always write key and value, even empty ones.
func sizeMapEntry(k, v string) int {
	return sizeTag(1) + protowire.SizeBytes(len(k)) + sizeTag(2) + protowire.SizeBytes(len(v))
}

func sizeAnomaly(a *pb.Anomaly) int {
	n := sizeVarintField(1, a.GetIndex()) + sizeFloatField(2, a.GetScore()) + sizeFloatField(3, a.GetThreshold())
	for _, c := range a.GetTopFeatures() {
		n += sizeMsgField(4, sizeContribution(c))
	}
	for k, v := range a.GetContext() {
		n += sizeMsgField(5, sizeMapEntry(k, v))
	}
	if g := a.GetAggregate(); g != nil {
		n += sizeMsgField(6, sizeAggregate(g))
	}
	return n
}

func sizeBoolField(num protowire.Number, v bool) int {
	if !v {
		return 0
	}
	return sizeTag(num) + 1
}

func sizePacked(vs []uint32) int {
	n := 0
	for _, v := range vs {
		n += protowire.SizeVarint(uint64(v))
	}
	return n
}

func sizeAggregate(g *pb.Aggregate) int {
	n := sizeVarintField(1, g.GetCount()) + sizeVarintField(2, uint64(g.GetFirstNs())) +
		sizeVarintField(3, uint64(g.GetLastNs())) + sizeVarintField(4, g.GetBytes()) +
		sizeVarintField(5, g.GetTcpSyn()) + sizeVarintField(6, g.GetUdp()) + sizeVarintField(7, g.GetIcmp()) +
		sizeVarintField(8, g.GetArp()) + sizeBoolField(11, g.GetDstAddrsTruncated()) +
		sizeVarintField(12, uint64(g.GetLeadFirstNs())) + sizeVarintField(13, g.GetLeadCount()) +
		sizeVarintField(14, g.GetLeadBytes())
	if ps := g.GetDstPorts(); len(ps) > 0 {
		n += sizeMsgField(9, sizePacked(ps))
	}
	for _, a := range g.GetDstAddrs() {
		n += sizeTag(10) + protowire.SizeBytes(len(a))
	}
	return n
}

func appendAggregate(b []byte, g *pb.Aggregate) []byte {
	b = appendMsgHeader(b, 6, sizeAggregate(g))
	b = appendVarintField(b, 1, g.GetCount())
	b = appendVarintField(b, 2, uint64(g.GetFirstNs()))
	b = appendVarintField(b, 3, uint64(g.GetLastNs()))
	b = appendVarintField(b, 4, g.GetBytes())
	b = appendVarintField(b, 5, g.GetTcpSyn())
	b = appendVarintField(b, 6, g.GetUdp())
	b = appendVarintField(b, 7, g.GetIcmp())
	b = appendVarintField(b, 8, g.GetArp())
	if ps := g.GetDstPorts(); len(ps) > 0 {
		b = appendMsgHeader(b, 9, sizePacked(ps))
		for _, p := range ps {
			b = protowire.AppendVarint(b, uint64(p))
		}
	}
	for _, a := range g.GetDstAddrs() {
		b = protowire.AppendBytes(protowire.AppendTag(b, 10, protowire.BytesType), a)
	}
	if g.GetDstAddrsTruncated() {
		b = protowire.AppendVarint(protowire.AppendTag(b, 11, protowire.VarintType), 1)
	}
	b = appendVarintField(b, 12, uint64(g.GetLeadFirstNs()))
	b = appendVarintField(b, 13, g.GetLeadCount())
	b = appendVarintField(b, 14, g.GetLeadBytes())
	return b
}

func sizeRingResult(m *pb.RingResult) int {
	n := sizeVarintField(1, m.GetStart()) + sizeVarintField(2, m.GetEnd()) + sizeStringField(5, m.GetError())
	if m.GetStats() != nil {
		n += sizeMsgField(3, sizeStats(m.GetStats()))
	}
	for _, a := range m.GetAnomalies() {
		n += sizeMsgField(4, sizeAnomaly(a))
	}
	return n
}

func appendRingResult(b []byte, m *pb.RingResult) []byte {
	b = appendVarintField(b, 1, m.GetStart())
	b = appendVarintField(b, 2, m.GetEnd())
	if s := m.GetStats(); s != nil {
		b = appendMsgHeader(b, 3, sizeStats(s))
		b = appendVarintField(b, 1, s.GetCount())
		b = appendVarintField(b, 2, s.GetAnomalies())
		b = appendFloatField(b, 3, s.GetP50())
		b = appendFloatField(b, 4, s.GetP90())
		b = appendFloatField(b, 5, s.GetP99())
		b = appendFloatField(b, 6, s.GetMax())
	}
	for _, a := range m.GetAnomalies() {
		b = appendMsgHeader(b, 4, sizeAnomaly(a))
		b = appendVarintField(b, 1, a.GetIndex())
		b = appendFloatField(b, 2, a.GetScore())
		b = appendFloatField(b, 3, a.GetThreshold())
		for _, c := range a.GetTopFeatures() {
			b = appendMsgHeader(b, 4, sizeContribution(c))
			b = appendStringField(b, 1, c.GetName())
			b = appendFloatField(b, 2, c.GetContribution())
		}
		for k, v := range a.GetContext() {
			b = appendMsgHeader(b, 5, sizeMapEntry(k, v))
			b = protowire.AppendString(protowire.AppendTag(b, 1, protowire.BytesType), k)
			b = protowire.AppendString(protowire.AppendTag(b, 2, protowire.BytesType), v)
		}
		if g := a.GetAggregate(); g != nil {
			b = appendAggregate(b, g)
		}
	}
	return appendStringField(b, 5, m.GetError())
}

// --- decoding ---

// maxInterned bounds the interning table of one message (a hostile plugin
// sending only distinct strings gets plain allocations beyond it).
const maxInterned = 4096

var (
	errBadWire = errors.New("malformed protobuf")
	errTooMany = errors.New("aggregate lists too long")
	// errTooLarge: more anomalies, contributions, context entries or
	// aggregate items than a batch of the configured size can have.
	errTooLarge = errors.New("more elements than the batch size allows")
	// errBadUTF8: proto3 strings must be valid UTF-8; the standard codec
	// refuses a message with one that is not, and so does this one (the
	// agent could not marshal a finding built from it).
	errBadUTF8 = errors.New("string field contains invalid UTF-8")
)

type ringDecoder struct {
	strs    map[string]string
	badUTF8 bool // a string was not valid UTF-8 (ringResult fails)
	// What the message may still hold (ringLimits), counted down.
	anomalies, contribs, context, aggItems int
}

// take counts one element against budget n, false when none is left.
func take(n *int) bool {
	if *n <= 0 {
		return false
	}
	*n--
	return true
}

func (d *ringDecoder) str(b []byte) string {
	if s, ok := d.strs[string(b)]; ok {
		return s
	}
	if !utf8.Valid(b) {
		d.badUTF8 = true
	}
	s := string(b)
	if len(d.strs) < maxInterned {
		d.strs[s] = s
	}
	return s
}

// field reads one field header and returns its number, type and the length
// of the header.
func field(b []byte) (protowire.Number, protowire.Type, int, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, 0, errBadWire
	}
	return num, typ, n, nil
}

// value consumes the value of a field of type typ and returns its varint,
// fixed32 or bytes payload and its length.
func value(b []byte, num protowire.Number, typ protowire.Type) (v uint64, p []byte, n int) {
	switch typ {
	case protowire.VarintType:
		v, n = protowire.ConsumeVarint(b)
	case protowire.Fixed32Type:
		var x uint32
		x, n = protowire.ConsumeFixed32(b)
		v = uint64(x)
	case protowire.BytesType:
		p, n = protowire.ConsumeBytes(b)
	default:
		n = protowire.ConsumeFieldValue(num, typ, b)
	}
	return v, p, n
}

func (d *ringDecoder) ringResult(b []byte, m *pb.RingResult) error {
	var anoms []pb.Anomaly // one slab for the message's anomalies
	for len(b) > 0 {
		num, typ, n, err := field(b)
		if err != nil {
			return err
		}
		b = b[n:]
		v, p, n := value(b, num, typ)
		if n < 0 {
			return errBadWire
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			m.Start = v
		case num == 2 && typ == protowire.VarintType:
			m.End = v
		case num == 3 && typ == protowire.BytesType:
			if m.Stats == nil {
				m.Stats = &pb.BatchStats{}
			}
			if err := stats(p, m.Stats); err != nil {
				return err
			}
		case num == 4 && typ == protowire.BytesType:
			if err := d.appendAnomaly(p, &anoms, &m.Anomalies); err != nil {
				return err
			}
		case num == 5 && typ == protowire.BytesType:
			if !utf8.Valid(p) {
				return errBadUTF8
			}
			m.Error = string(p)
		}
	}
	if d.badUTF8 {
		return errBadUTF8
	}
	return nil
}

// scoreResponse decodes a ScoreResponse (stats = 1, anomalies = 2: the
// fields of a RingResult, numbered otherwise) within the same bounds.
func (d *ringDecoder) scoreResponse(b []byte, m *pb.ScoreResponse) error {
	var anoms []pb.Anomaly
	for len(b) > 0 {
		num, typ, n, err := field(b)
		if err != nil {
			return err
		}
		b = b[n:]
		_, p, n := value(b, num, typ)
		if n < 0 {
			return errBadWire
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			if m.Stats == nil {
				m.Stats = &pb.BatchStats{}
			}
			if err := stats(p, m.Stats); err != nil {
				return err
			}
		case num == 2 && typ == protowire.BytesType:
			if err := d.appendAnomaly(p, &anoms, &m.Anomalies); err != nil {
				return err
			}
		}
	}
	if d.badUTF8 {
		return errBadUTF8
	}
	return nil
}

// appendAnomaly decodes the anomaly p into the next element of slab (a new
// slab when it is full: one allocation for many anomalies) and appends it
// to out, within the decoder's anomaly bound.
func (d *ringDecoder) appendAnomaly(p []byte, slab *[]pb.Anomaly, out *[]*pb.Anomaly) error {
	if !take(&d.anomalies) {
		return errTooLarge
	}
	if len(*slab) == cap(*slab) {
		*slab = make([]pb.Anomaly, 0, max(16, min(2*cap(*slab), 4096)))
	}
	*slab = (*slab)[:len(*slab)+1]
	a := &(*slab)[len(*slab)-1]
	if err := d.anomaly(p, a); err != nil {
		return err
	}
	*out = append(*out, a)
	return nil
}

func stats(b []byte, s *pb.BatchStats) error {
	for len(b) > 0 {
		num, typ, n, err := field(b)
		if err != nil {
			return err
		}
		b = b[n:]
		v, _, n := value(b, num, typ)
		if n < 0 {
			return errBadWire
		}
		b = b[n:]
		f := math.Float32frombits(uint32(v))
		switch {
		case num == 1 && typ == protowire.VarintType:
			s.Count = v
		case num == 2 && typ == protowire.VarintType:
			s.Anomalies = v
		case num == 3 && typ == protowire.Fixed32Type:
			s.P50 = f
		case num == 4 && typ == protowire.Fixed32Type:
			s.P90 = f
		case num == 5 && typ == protowire.Fixed32Type:
			s.P99 = f
		case num == 6 && typ == protowire.Fixed32Type:
			s.Max = f
		}
	}
	return nil
}

func (d *ringDecoder) anomaly(b []byte, a *pb.Anomaly) error {
	for len(b) > 0 {
		num, typ, n, err := field(b)
		if err != nil {
			return err
		}
		b = b[n:]
		v, p, n := value(b, num, typ)
		if n < 0 {
			return errBadWire
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			a.Index = v
		case num == 2 && typ == protowire.Fixed32Type:
			a.Score = math.Float32frombits(uint32(v))
		case num == 3 && typ == protowire.Fixed32Type:
			a.Threshold = math.Float32frombits(uint32(v))
		case num == 4 && typ == protowire.BytesType:
			if !take(&d.contribs) {
				return errTooLarge
			}
			c := &pb.Contribution{}
			if err := d.contribution(p, c); err != nil {
				return err
			}
			a.TopFeatures = append(a.TopFeatures, c)
		case num == 5 && typ == protowire.BytesType:
			if !take(&d.context) {
				return errTooLarge
			}
			k, val, err := d.mapEntry(p)
			if err != nil {
				return err
			}
			if a.Context == nil {
				a.Context = make(map[string]string, 12)
			}
			a.Context[k] = val
		case num == 6 && typ == protowire.BytesType:
			// Repeated occurrences of a message field merge (protobuf rules).
			if a.Aggregate == nil {
				a.Aggregate = &pb.Aggregate{}
			}
			if err := d.aggregate(p, a.Aggregate); err != nil {
				return err
			}
		}
	}
	return nil
}

// maxAggregateItems bounds the ports and addresses one Aggregate may carry
// (a hostile plugin cannot make the agent allocate beyond what it sent, but
// this keeps a single message's lists bounded, like the SDK's own cap).
const maxAggregateItems = 1 << 17

func (d *ringDecoder) aggregate(b []byte, g *pb.Aggregate) error {
	for len(b) > 0 {
		num, typ, n, err := field(b)
		if err != nil {
			return err
		}
		b = b[n:]
		v, p, n := value(b, num, typ)
		if n < 0 {
			return errBadWire
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			g.Count = v
		case num == 2 && typ == protowire.VarintType:
			g.FirstNs = int64(v)
		case num == 3 && typ == protowire.VarintType:
			g.LastNs = int64(v)
		case num == 4 && typ == protowire.VarintType:
			g.Bytes = v
		case num == 5 && typ == protowire.VarintType:
			g.TcpSyn = v
		case num == 6 && typ == protowire.VarintType:
			g.Udp = v
		case num == 7 && typ == protowire.VarintType:
			g.Icmp = v
		case num == 8 && typ == protowire.VarintType:
			g.Arp = v
		case num == 9 && typ == protowire.VarintType: // unpacked element
			if len(g.DstPorts) >= maxAggregateItems {
				return errTooMany
			}
			if !take(&d.aggItems) {
				return errTooLarge
			}
			g.DstPorts = append(g.DstPorts, uint32(v))
		case num == 9 && typ == protowire.BytesType: // packed
			for len(p) > 0 {
				x, k := protowire.ConsumeVarint(p)
				if k < 0 {
					return errBadWire
				}
				if len(g.DstPorts) >= maxAggregateItems {
					return errTooMany
				}
				if !take(&d.aggItems) {
					return errTooLarge
				}
				g.DstPorts = append(g.DstPorts, uint32(x))
				p = p[k:]
			}
		case num == 10 && typ == protowire.BytesType:
			if len(g.DstAddrs) >= maxAggregateItems {
				return errTooMany
			}
			if !take(&d.aggItems) {
				return errTooLarge
			}
			g.DstAddrs = append(g.DstAddrs, append([]byte{}, p...))
		case num == 11 && typ == protowire.VarintType:
			g.DstAddrsTruncated = v != 0
		case num == 12 && typ == protowire.VarintType:
			g.LeadFirstNs = int64(v)
		case num == 13 && typ == protowire.VarintType:
			g.LeadCount = v
		case num == 14 && typ == protowire.VarintType:
			g.LeadBytes = v
		}
	}
	return nil
}

func (d *ringDecoder) contribution(b []byte, c *pb.Contribution) error {
	for len(b) > 0 {
		num, typ, n, err := field(b)
		if err != nil {
			return err
		}
		b = b[n:]
		v, p, n := value(b, num, typ)
		if n < 0 {
			return errBadWire
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			c.Name = d.str(p)
		case num == 2 && typ == protowire.Fixed32Type:
			c.Contribution = math.Float32frombits(uint32(v))
		}
	}
	return nil
}

func (d *ringDecoder) mapEntry(b []byte) (k, v string, err error) {
	for len(b) > 0 {
		num, typ, n, err := field(b)
		if err != nil {
			return "", "", err
		}
		b = b[n:]
		_, p, n := value(b, num, typ)
		if n < 0 {
			return "", "", errBadWire
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			k = d.str(p)
		case num == 2 && typ == protowire.BytesType:
			v = d.str(p)
		}
	}
	return k, v, nil
}
