package nethost

import (
	"math"

	"github.com/vigil-edge/vigil/models/features/internal/flowtab"
	"github.com/vigil-edge/vigil/models/features/internal/fmath"
	"github.com/vigil-edge/vigil/plugins/sdk/event"
)

// nethost/v2 is nethost/v1 followed by ExtraDim features for the attacks
// that per-source rates cannot see (docs/models.md, section 3):
//
//	host_L0.1_icmp_size  mean size of the source's ICMP requests (10 s
//	                     window), 0 without requests: covert channels and
//	                     tunnels in echo payloads send unusual sizes
//	host_beacon          regular connection starts: the longest current run
//	                     of TCP SYNs from the source to one destination host
//	                     at a steady interval (each interval within 30% of
//	                     the pair's running mean interval; one interval
//	                     within a factor of 2 of the mean halves the run,
//	                     two in a row or one further off end it and restart
//	                     the mean; intervals under 1 s are bursts, ignored,
//	                     the next interval counting from the burst's last
//	                     start), log1p-scaled
//	                     and decayed with λ = 0.1 between starts; C2
//	                     beacons and implants polling home
//	sensor_new_src_rate  sensor-wide: opens per second (λ = 1) that are the
//	                     first packet of a source the extractor did not
//	                     track, beyond one per second (normal churn),
//	                     log1p-scaled; a SYN flood from spoofed sources
//	                     sends one packet per source, which no per-source
//	                     evidence can see
//
// The first Dim features are nethost/v1's, bit for bit (TestV2Prefix), so a
// nethost/v2 extractor feeds a nethost/v1 model too.

// NameV2 is the name of the feature set nethost/v2.
const NameV2 = "nethost/v2"

// ExtraDim is the number of features nethost/v2 adds to nethost/v1's.
const ExtraDim = 3

// DimV2 is the number of nethost/v2 features per packet.
const DimV2 = Dim + ExtraDim

var extraNames = [ExtraDim]string{"host_L0.1_icmp_size", "host_beacon", "sensor_new_src_rate"}

var extraIsLog = [ExtraDim]bool{false, true, true}

// NamesV2 returns the nethost/v2 feature names in output order (a fresh
// copy).
func NamesV2() []string { return append(Names(), extraNames[:]...) }

// DefaultMaxPairs is the default capacity of nethost/v2's pair table.
const DefaultMaxPairs = 1 << 14

// newSrcFloor is the rate of new sources (per second) that is normal
// churn: sensor_new_src_rate is the excess over it. Below it the feature is
// 0, so it does not change every source's vector with every packet (which
// would defeat the plugin's score reuse, hostcache.go: a third more CPU for
// a scan end to end), and the decayed count is dropped below newSrcFlush.
const (
	newSrcFloor = 1
	newSrcFlush = 1e-6
)

// Beacon parameters.
const (
	beaconMinGapNs = 1_000_000_000 // shorter intervals are bursts (see extract)
	beaconTol      = 0.3           // an interval within 30% of the running mean is regular
	beaconAlpha    = 0.125         // weight of the newest interval in the running mean
	beaconMaxRun   = 1 << 16       // the run saturates here
)

// pairKey is a (source, destination host) pair of IP addresses.
type pairKey struct{ srcLo, srcHi, dstLo, dstHi uint64 }

// pairVal is the connection-start history of one pair.
type pairVal struct {
	lastNs int64   // time of the last counted start
	meanNs float64 // running mean of the intervals (0: none yet)
	run    float64 // starts at a regular interval in a row (see extract)
	misses uint8   // irregular intervals in a row (0 or 1)
}

type v2State struct {
	pairs flowtab.Table[pairKey, pairVal]
	// newSrc is the sensor-wide decayed count of opens from new sources
	// (λ = 1), at time newSrcNs.
	newSrc   float64
	newSrcNs int64
}

func newV2(cfg Config) *v2State {
	if cfg.MaxPairs <= 0 {
		cfg.MaxPairs = DefaultMaxPairs
	}
	return &v2State{pairs: flowtab.New[pairKey, pairVal](cfg.MaxPairs)}
}

// extract updates nethost/v2's state with p, whose source's entry is v
// (created by this packet when created), and writes the extra raw features
// to raw[Dim:].
func (s *v2State) extract(e *Extractor, p *event.Packet, v *hostVal, r role, created, tcp bool, raw *Raw) {
	now := p.TimestampNs
	if dt := now - s.newSrcNs; dt > 0 {
		if s.newSrc != 0 {
			s.newSrc *= fmath.Exp2Poly(-lambdas[0] * float64(dt) * 1e-9)
			if s.newSrc < newSrcFlush {
				s.newSrc = 0 // no more exponentials until the next new source
			}
		}
		s.newSrcNs = now
	}
	if created && r == roleOpen {
		s.newSrc++
	}
	if tcp && r == roleOpen { // a SYN
		k := pairKey{srcLo: flowtab.LE64(p.SrcIP[0:]), srcHi: flowtab.LE64(p.SrcIP[8:]),
			dstLo: flowtab.LE64(p.DstIP[0:]), dstHi: flowtab.LE64(p.DstIP[8:])}
		h := flowtab.Mix(e.seed^k.srcLo^k.dstHi, k.srcHi^flowtab.Mix(k.dstLo, 0x9e3779b97f4a7c15))
		pv, _, fresh := s.pairs.Acquire(&k, h, now)
		switch gap := now - pv.lastNs; {
		case fresh:
			pv.lastNs = now
		case gap < 0:
			// a packet from the past (reordered capture): ignored
		case gap < beaconMinGapNs:
			// A burst (parallel connections, a busy client's requests):
			// neither counted nor ending the run; the next interval counts
			// from its last start, so that a client connecting several
			// times a second never looks regular, while a beacon that
			// opens two connections at a time still does.
			pv.lastNs = now
		default:
			// A regular interval extends the run and moves the mean. A
			// moderately irregular one (within a factor of 2 of the mean)
			// halves the run and moves the mean, so that jitter around the
			// mean and one late start do not end the run; a second in a
			// row, or an interval far off the mean (a pause, another
			// pattern), ends the run and restarts the mean from itself.
			g := float64(gap)
			switch {
			case pv.meanNs > 0 && math.Abs(g-pv.meanNs) <= beaconTol*pv.meanNs:
				pv.run = min(pv.run+1, beaconMaxRun)
				pv.misses = 0
				pv.meanNs += beaconAlpha * (g - pv.meanNs)
			case pv.misses == 0 && g >= pv.meanNs/2 && g <= 2*pv.meanNs:
				pv.run = math.Floor(pv.run / 2)
				pv.misses = 1
				pv.meanNs += beaconAlpha * (g - pv.meanNs)
			default:
				pv.run, pv.misses, pv.meanNs = 0, 0, g
			}
			pv.lastNs = now
		}
		if pv.run > v.beacon {
			v.beacon = pv.run
		}
	}
	raw[Dim] = ratio(v.win[1].icmpBytes, v.win[1].icmpReq)
	raw[Dim+1] = v.beacon
	raw[Dim+2] = max(0, s.newSrc*rateScale[0]-newSrcFloor)
}

// PairStats describes nethost/v2's pair table (zero for nethost/v1).
func (e *Extractor) PairStats() Stats {
	if e.v2 == nil {
		return Stats{}
	}
	return tableStats(&e.v2.pairs)
}
