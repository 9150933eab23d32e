package endpoint

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/vigil-edge/vigil/server/store"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// supStore is the fake store with suppressions.
type supStore struct {
	*fakeStore
	mu   sync.Mutex
	sets map[string]store.SuppressionSet
}

func (s *supStore) ActiveSuppressions(_ context.Context, entity string, limit int) (store.SuppressionSet, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.sets[entity]
	if len(set.Items) > limit {
		set.Items = set.Items[:limit]
	}
	return set, nil
}

func (s *supStore) set(entity string, set store.SuppressionSet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets[entity] = set
}

func newSupEndpoint(t *testing.T) (*Endpoint, *supStore) {
	t.Helper()
	st := &supStore{fakeStore: newFakeStore(t), sets: map[string]store.SuppressionSet{}}
	e, err := New(context.Background(), Config{CA: testDeployment(t).CA, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return e, st
}

func helloFrames(t *testing.T) []byte {
	return frames(t, header(wirev1.StreamKind_STREAM_KIND_CONTROL),
		&wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: &wirev1.Hello{AgentVersion: "1.0", ProtocolVersion: 1}}})
}

func TestControlSendsSuppressionsAfterHelloAck(t *testing.T) {
	e, st := newSupEndpoint(t)
	st.set("ent1", store.SuppressionSet{Generation: 7, Active: 2, Items: []store.Suppression{
		{ID: 2, Entity: "ent1", Detector: "netflow", SrcIP: "10.0.0.1", DstIP: "10.0.0.2", DstPort: 22, Proto: "tcp"},
		{ID: 1, Entity: "ent1", Detector: "fileactivity", Path: "/srv/backup"},
	}})
	var out bytes.Buffer
	if err := e.serveStream(context.Background(), authedPeer(e, "a-000000000001", "ent1"), rw{bytes.NewReader(helloFrames(t)), &out}); err != nil {
		t.Fatal(err)
	}
	ms := readAll(t, out.Bytes(), func() *wirev1.ServerControl { return &wirev1.ServerControl{} })
	if len(ms) != 2 || ms[0].GetHelloAck() == nil || ms[1].GetSuppressions() == nil {
		t.Fatalf("responses %v", ms)
	}
	s := ms[1].GetSuppressions()
	want := []*wirev1.Suppression{
		{Id: 2, Detector: "netflow", SrcIp: "10.0.0.1", DstIp: "10.0.0.2", DstPort: 22, Proto: "tcp"},
		{Id: 1, Detector: "fileactivity", Path: "/srv/backup"},
	}
	if s.Generation != 7 || len(s.Items) != 2 {
		t.Fatalf("suppressions %v", s)
	}
	for i := range want {
		if s.Items[i].String() != want[i].String() {
			t.Errorf("item %d: %v, want %v", i, s.Items[i], want[i])
		}
	}
	// An entity without suppressions still gets the (empty) set: it clears
	// whatever the agent kept from before.
	out.Reset()
	if err := e.serveStream(context.Background(), authedPeer(e, "a-000000000002", "other"), rw{bytes.NewReader(helloFrames(t)), &out}); err != nil {
		t.Fatal(err)
	}
	ms = readAll(t, out.Bytes(), func() *wirev1.ServerControl { return &wirev1.ServerControl{} })
	if len(ms) != 2 || ms[1].GetSuppressions() == nil || len(ms[1].GetSuppressions().Items) != 0 {
		t.Fatalf("responses for an entity without suppressions %v", ms)
	}
}

func TestSuppressionsBounded(t *testing.T) {
	e, st := newSupEndpoint(t)
	items := make([]store.Suppression, MaxSuppressions)
	for i := range items { // newest first, long paths: the byte bound cuts
		items[i] = store.Suppression{ID: int64(len(items) - i), Detector: "fileactivity", Path: "/" + strings.Repeat("p", 1000)}
	}
	st.set("big", store.SuppressionSet{Generation: 1, Active: len(items) + 5, Items: items})
	m, err := e.suppressionsMsg(context.Background(), "big")
	if err != nil {
		t.Fatal(err)
	}
	sc := &wirev1.ServerControl{Msg: &wirev1.ServerControl_Suppressions{Suppressions: m}}
	var b bytes.Buffer
	if err := wirev1.Write(&b, sc, wirev1.MaxFrameSize); err != nil {
		t.Fatalf("message does not fit a frame: %v", err)
	}
	if len(m.Items) == 0 || len(m.Items) >= len(items) || m.Items[0].Id != int64(len(items)) {
		t.Fatalf("%d items, first id %d", len(m.Items), m.Items[0].GetId())
	}
	// The count bound: short rules, the store's limit holds.
	for i := range items {
		items[i].Path = ""
	}
	m, err = e.suppressionsMsg(context.Background(), "big")
	if err != nil || len(m.Items) != MaxSuppressions {
		t.Fatalf("%d items, %v", len(m.GetItems()), err)
	}
}

func TestPushSuppressionsPerEntityAndGeneration(t *testing.T) {
	e, st := newSupEndpoint(t)
	var a1, a2, b1 bytes.Buffer
	e.controls["a1"] = &controlSession{agentID: "a1", entity: "acme", w: &a1}
	e.controls["a2"] = &controlSession{agentID: "a2", entity: "acme", w: &a2}
	e.controls["b1"] = &controlSession{agentID: "b1", entity: "beta", w: &b1}
	ctx := context.Background()
	push := func(gen uint64, want int) {
		t.Helper()
		st.set("acme", store.SuppressionSet{Generation: gen, Active: 1, Items: []store.Suppression{{ID: int64(gen), Detector: "d"}}})
		n, err := e.PushSuppressions(ctx, "acme")
		if err != nil || n != want {
			t.Fatalf("push generation %d: sent to %d agents (%v), want %d", gen, n, err, want)
		}
	}
	push(5, 2)
	push(5, 0) // same generation: nothing new
	push(3, 0) // an older set (a push that lost a race) never replaces a newer one
	push(6, 2)
	for name, b := range map[string]*bytes.Buffer{"a1": &a1, "a2": &a2} {
		ms := readAll(t, b.Bytes(), func() *wirev1.ServerControl { return &wirev1.ServerControl{} })
		if len(ms) != 2 || ms[0].GetSuppressions().GetGeneration() != 5 || ms[1].GetSuppressions().GetGeneration() != 6 {
			t.Errorf("%s got %v", name, ms)
		}
	}
	if b1.Len() != 0 {
		t.Error("an agent of another entity got acme's suppressions")
	}
	// Without SuppressionSource nothing is sent.
	plain, _ := newTestEndpoint(t)
	if n, err := plain.PushSuppressions(ctx, "acme"); n != 0 || err != nil {
		t.Fatalf("push without suppression source: %d %v", n, err)
	}
}
