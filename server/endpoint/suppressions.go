package endpoint

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// SuppressionSource is an optional Store extension (*store.DB implements
// it): when the store has it, every agent gets its entity's active
// suppressions on the CONTROL stream right after HelloAck, and again
// whenever they change (SuppressionsChanged).
type SuppressionSource interface {
	ActiveSuppressions(ctx context.Context, entity string, limit int) (store.SuppressionSet, error)
}

var _ SuppressionSource = (*store.DB)(nil)

// Bounds of one Suppressions message: at most MaxSuppressions items and
// maxSuppressionsBytes of them (well under wirev1.MaxFrameSize). Beyond
// either bound the oldest suppressions are left out and a warning logged.
const (
	MaxSuppressions      = store.MaxActiveSuppressions
	maxSuppressionsBytes = wirev1.MaxFrameSize - 64<<10
)

// suppressionsMsg builds the Suppressions message of entity, or nil when
// the store keeps no suppressions.
func (e *Endpoint) suppressionsMsg(ctx context.Context, entity string) (*wirev1.Suppressions, error) {
	src, ok := e.st.(SuppressionSource)
	if !ok {
		return nil, nil
	}
	set, err := src.ActiveSuppressions(ctx, entity, MaxSuppressions)
	if err != nil {
		return nil, fmt.Errorf("suppressions of %s: %w", entity, err)
	}
	m := &wirev1.Suppressions{Generation: set.Generation, Items: make([]*wirev1.Suppression, 0, len(set.Items))}
	size := 0
	for _, s := range set.Items { // newest first: a cut drops the oldest
		it := &wirev1.Suppression{Id: s.ID, Detector: s.Detector, SrcIp: s.SrcIP, DstIp: s.DstIP, DstPort: s.DstPort,
			Proto: s.Proto, Path: s.Path}
		n := proto.Size(it) + 8 // tag and length prefix, generously
		if size+n > maxSuppressionsBytes {
			break
		}
		size += n
		m.Items = append(m.Items, it)
	}
	if len(m.Items) < set.Active {
		e.m.suppressionsTruncated.Inc()
		e.log.Warn("suppressions truncated: the oldest are not sent to agents", "entity", entity,
			"active", set.Active, "sent", len(m.Items), "max", MaxSuppressions)
	}
	return m, nil
}

// sendSuppressions writes m unless the session already has a set of the
// same or a newer generation (pushes racing each other never move an agent
// back to an older set). It reports whether m was written.
func (cs *controlSession) sendSuppressions(m *wirev1.Suppressions) (bool, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.sendSuppressionsLocked(m)
}

func (cs *controlSession) sendSuppressionsLocked(m *wirev1.Suppressions) (bool, error) {
	if cs.supSent && m.Generation <= cs.supGen {
		return false, nil
	}
	if err := cs.writeLocked(&wirev1.ServerControl{Msg: &wirev1.ServerControl_Suppressions{Suppressions: m}}); err != nil {
		return false, err
	}
	cs.supSent, cs.supGen = true, m.Generation
	return true, nil
}

// PushSuppressions sends entity's active suppressions to each of its agents
// with a live CONTROL stream, now. It returns the number of agents that got
// the set.
func (e *Endpoint) PushSuppressions(ctx context.Context, entity string) (int, error) {
	m, err := e.suppressionsMsg(ctx, entity)
	if err != nil || m == nil {
		return 0, err
	}
	e.connMu.Lock()
	var sessions []*controlSession
	for _, cs := range e.controls {
		if cs.entity == entity {
			sessions = append(sessions, cs)
		}
	}
	e.connMu.Unlock()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent int
	)
	for _, cs := range sessions {
		wg.Add(1)
		go func() { // one slow agent must not hold up the others
			defer wg.Done()
			ok, err := cs.sendSuppressions(m)
			if err != nil {
				e.log.Debug("push suppressions", "agent", cs.agentID, "err", err)
				return
			}
			if ok {
				e.m.pushes.Inc()
				mu.Lock()
				sent++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return sent, nil
}

// SuppressionsChanged is called after entity's suppressions changed (the
// API calls it after a triage or a lift): it pushes the new set to the
// entity's connected agents in the background and returns at once.
func (e *Endpoint) SuppressionsChanged(entity string) {
	select {
	case <-e.stop:
		return
	default:
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout+10*time.Second)
		defer cancel()
		n, err := e.PushSuppressions(ctx, entity)
		if err != nil {
			e.log.Warn("push suppressions", "entity", entity, "err", err)
			return
		}
		e.log.Info("suppressions pushed", "entity", entity, "agents", n)
	}()
}
