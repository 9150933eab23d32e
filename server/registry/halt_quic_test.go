package registry_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/vigil-edge/vigil/models/sign"
	"github.com/vigil-edge/vigil/models/sign/signtest"
	"github.com/vigil-edge/vigil/server/registry"
	"github.com/vigil-edge/vigil/server/servertest"
	wirev1 "github.com/vigil-edge/vigil/wire/v1"
)

// quicAgent is an enrolled agent on a real QUIC connection to a servertest server: it says
// Hello and hands the test every control message the server sends it; the test reports its
// model states.
type quicAgent struct {
	t    *testing.T
	id   string
	conn *quic.Conn
	ctl  *quic.Stream
	msgs chan *wirev1.ServerControl
	// offered holds the offers returned (rollout id and digest): the server may send one
	// again (the push at rollout creation races the offers of a Hello), and an agent takes
	// a repeated offer as the same one, so next skips it.
	offered map[string]bool
}

func connectAgent(t *testing.T, s *servertest.Server, a *servertest.Agent) *quicAgent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := s.Dial(ctx, &a.Cert)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := servertest.OpenStream(ctx, conn, wirev1.StreamKind_STREAM_KIND_CONTROL)
	if err != nil {
		t.Fatal(err)
	}
	if err := wirev1.Write(ctl, &wirev1.AgentControl{Msg: &wirev1.AgentControl_Hello{Hello: &wirev1.Hello{
		AgentVersion: "test", ProtocolVersion: wirev1.ProtocolVersion}}}, 0); err != nil {
		t.Fatal(err)
	}
	r := wirev1.NewReader(ctl, wirev1.MaxFrameSize)
	var ack wirev1.ServerControl
	if err := r.Read(&ack); err != nil || ack.GetHelloAck() == nil {
		t.Fatalf("agent %s: HelloAck: %v %v", a.ID, ack.Msg, err)
	}
	q := &quicAgent{t: t, id: a.ID, conn: conn, ctl: ctl, msgs: make(chan *wirev1.ServerControl, 64), offered: map[string]bool{}}
	go func() {
		for {
			var m wirev1.ServerControl
			if err := r.Read(&m); err != nil {
				close(q.msgs)
				return
			}
			q.msgs <- &m
		}
	}()
	t.Cleanup(func() { q.close() })
	return q
}

func (q *quicAgent) close() { _ = q.conn.CloseWithError(0, "") }

// next returns the next offer or withdrawal within d (nil: none came); other control messages
// (suppressions, ...) are skipped.
func (q *quicAgent) next(d time.Duration) *wirev1.ServerControl {
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-q.msgs:
			if !ok {
				return nil
			}
			if o := m.GetModelOffer(); o != nil {
				key := o.GetRolloutId() + " " + o.GetModel().GetDigest()
				if q.offered[key] {
					continue
				}
				q.offered[key] = true
				return m
			}
			if w := m.GetModelWithdrawal(); w != nil {
				// An offer after its withdrawal is a new one.
				delete(q.offered, w.GetRolloutId()+" "+w.GetModel().GetDigest())
				return m
			}
		case <-deadline:
			return nil
		}
	}
}

func (q *quicAgent) offer() *wirev1.ModelOffer {
	q.t.Helper()
	m := q.next(10 * time.Second)
	if m.GetModelOffer() == nil {
		q.t.Fatalf("agent %s: got %v, want a ModelOffer", q.id, m)
	}
	return m.GetModelOffer()
}

func (q *quicAgent) withdrawal() *wirev1.ModelWithdrawal {
	q.t.Helper()
	m := q.next(10 * time.Second)
	if m.GetModelWithdrawal() == nil {
		q.t.Fatalf("agent %s: got %v, want a ModelWithdrawal", q.id, m)
	}
	return m.GetModelWithdrawal()
}

func (q *quicAgent) nothing(d time.Duration) {
	q.t.Helper()
	if m := q.next(d); m != nil {
		q.t.Fatalf("agent %s: unexpected %v", q.id, m)
	}
}

func (q *quicAgent) status(o *wirev1.ModelOffer, state, reason string) {
	q.t.Helper()
	if err := wirev1.Write(q.ctl, &wirev1.AgentControl{Msg: &wirev1.AgentControl_ModelStatus{ModelStatus: &wirev1.ModelStatus{
		RolloutId: o.RolloutId, Model: o.Model, State: state, Reason: reason, TimeUnixNano: time.Now().UnixNano()}}}, 0); err != nil {
		q.t.Fatal(err)
	}
}

// TestHaltOverQUIC: rollouts halted by hand through the API of a real server, with agents on
// real QUIC connections. An ordinary rollout: the agent that activated the model gets nothing
// (it keeps its model), the one still installing gets the withdrawal at once, an agent that
// connects afterwards is not offered it. A shadow rollout: the agent running the shadow model
// gets the withdrawal (and stops it).
func TestHaltOverQUIC(t *testing.T) {
	s := servertest.Start(t, servertest.Options{})
	signer := signtest.NewSigner(t, sign.AlgEd25519)
	if err := signtest.Policy(t, 1, signer).WriteFile(filepath.Join(s.Dir, registry.TrustFile)); err != nil {
		t.Fatal(err)
	}
	api := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: s.Roots, ServerName: servertest.ServerName, MinVersion: tls.VersionTLS13}}}
	post := func(path string, body []byte, out any) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, s.APIURL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.AdminToken)
		resp, err := api.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if out != nil && json.Unmarshal(data, out) != nil {
			t.Fatalf("POST %s: %s %s", path, resp.Status, data)
		}
		return resp.StatusCode
	}
	publish := func(version uint64) {
		p := signtest.WriteBundle(t, t.TempDir(), []byte(fmt.Sprintf("nf %d", version)), signtest.Manifest("nf", version, time.Now().Add(-time.Minute)), signer)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if code := post("/api/v1/models?no_smoke=1", data, nil); code != http.StatusCreated {
			t.Fatalf("publish nf@%d: %d", version, code)
		}
	}
	publish(2)
	publish(3)
	enrolled := []*servertest.Agent{s.Enroll(t, "halt"), s.Enroll(t, "halt"), s.Enroll(t, "halt")}
	done, busy := connectAgent(t, s, enrolled[0]), connectAgent(t, s, enrolled[1])

	// An ordinary rollout: "done" activates it, "busy" is still downloading at the halt.
	var ro registry.RolloutResponse
	if code := post("/api/v1/rollouts", []byte(`{"model":"nf@2","entity":"halt"}`), &ro); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	o := done.offer()
	for _, st := range []string{"offered", "fetched", "verified", "active"} {
		done.status(o, st, "")
	}
	ob := busy.offer()
	busy.status(ob, "offered", "")
	waitState(t, s, done.id, ro.ID, "active")
	waitState(t, s, busy.id, ro.ID, "offered")
	var res registry.HaltResult
	if code := post("/api/v1/rollouts/"+ro.ID+"/halt", []byte(`{"reason":"nf@2 floods the SOC"}`), &res); code != http.StatusOK {
		t.Fatalf("halt: %d %+v", code, res)
	}
	if len(res.Withdrawn) != 1 || res.Withdrawn[0] != busy.id {
		t.Fatalf("withdrawn from %v, want only %s", res.Withdrawn, busy.id)
	}
	if w := busy.withdrawal(); w.RolloutId != ro.ID || w.GetModel().GetDigest() != ob.Model.Digest {
		t.Fatalf("withdrawal %+v", w)
	}
	busy.nothing(300 * time.Millisecond) // the halted rollout is not offered again
	done.nothing(300 * time.Millisecond) // it keeps nf@2 active: nothing to withdraw
	late := connectAgent(t, s, enrolled[2])
	late.nothing(500 * time.Millisecond) // not offered the halted rollout at Hello
	if code := post("/api/v1/rollouts/"+ro.ID+"/halt", nil, &map[string]any{}); code != http.StatusConflict {
		t.Fatalf("second halt: %d, want 409", code)
	}

	// A shadow rollout of nf@3 to "done": it runs the shadow model; the halt stops it.
	var sr registry.RolloutResponse
	body := fmt.Sprintf(`{"model":"nf@3","agents":[%q],"shadow":true}`, done.id)
	if code := post("/api/v1/rollouts", []byte(body), &sr); code != http.StatusCreated {
		t.Fatalf("create shadow: %d", code)
	}
	so := done.offer()
	if !so.Shadow || so.RolloutId != sr.ID {
		t.Fatalf("shadow offer %+v", so)
	}
	done.status(so, "shadow", `{"active":{"events":10,"anomalies":0},"shadow":{"events":10,"anomalies":0}}`)
	waitState(t, s, done.id, sr.ID, "shadow")
	if code := post("/api/v1/rollouts/"+sr.ID+"/halt", nil, &res); code != http.StatusOK || len(res.Withdrawn) != 1 {
		t.Fatalf("halt shadow: %d %+v", code, res)
	}
	if w := done.withdrawal(); w.RolloutId != sr.ID || w.Reason != "halted by hand" {
		t.Fatalf("shadow withdrawal %+v", w)
	}
	// Unknown targets are refused at create.
	var e struct{ Error string }
	if code := post("/api/v1/rollouts", []byte(`{"model":"nf@3","agents":["a-does-not-exist"]}`), &e); code != http.StatusUnprocessableEntity {
		t.Fatalf("rollout to an unknown agent: %d %s", code, e.Error)
	}
}

// waitState waits until the server stored agent's report state about rollout.
func waitState(t *testing.T, s *servertest.Server, agent, rollout, state string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sts, err := s.Store.ModelStatuses(context.Background(), agent, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range sts {
			if st.RolloutID == rollout && st.State == state {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s never reported %s for %s: %+v", agent, state, rollout, sts)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
