package keyrotation

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/agent/keys"
	"github.com/wgmesh/wgmesh/agent/mesh"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// world is one node with its agent's rotator, the API server (Node
// annotations, the MeshPeer the operator publishes) and two peers that
// handshake with whatever key the MeshPeer publishes. Everything the agent
// does that a crash can interrupt counts as one step: the rotator's disk
// and API writes (through Options.effect), announcing, the operator's
// publication and configuring the device.
type world struct {
	t          *testing.T
	dir        string
	now        time.Time
	ann        map[string]string
	published  string
	operatorUp bool
	device     wgtypes.Key
	peerKeys   []string // what each peer has for this node (a public key)
	handshakes []time.Time
	events     []string
	kicks      int
	// crashAt: the step number at which the agent dies (0: never).
	crashAt, steps int
	crashed        bool
	stepNames      []string
	r              *Rotator
}

var peerNames = []string{"peer-a", "peer-b"}

func newWorld(t *testing.T) *world {
	w := &world{t: t, dir: t.TempDir(), now: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC), ann: map[string]string{}, operatorUp: true}
	w.restart()
	w.device = w.r.Key()
	for range peerNames {
		w.handshakes = append(w.handshakes, w.now.Add(-10*time.Second))
	}
	w.tick()
	if w.published == "" || len(w.peerKeys) != 2 {
		t.Fatalf("the world did not start: published %q, peers %v", w.published, w.peerKeys)
	}
	return w
}

func (w *world) step(name string) error {
	if w.crashed {
		return errCrash
	}
	w.steps++
	w.stepNames = append(w.stepNames, name)
	if w.crashAt != 0 && w.steps == w.crashAt {
		w.crashed = true
		w.t.Logf("crash at step %d (%s)", w.steps, name)
		return errCrash
	}
	return nil
}

func (w *world) restart() {
	w.crashed = false
	r, err := Open(Options{StateDir: w.dir, NodeName: "n1", Log: testr.New(w.t), Now: func() time.Time { return w.now },
		ConfirmTimeout: 5 * time.Second, PublishTimeout: time.Minute,
		Kick: func(a []netip.Addr) error { w.kicks++; w.handshakeAll(); return nil }, effect: w.step})
	if err != nil {
		w.t.Fatal(err)
	}
	r.Bind(w, nil)
	w.r = r
}

// handshakeAll: each peer that has this node's device key completes a
// handshake now (a kick, or traffic).
func (w *world) handshakeAll() {
	for i := range w.peerKeys {
		if w.peerKeys[i] == w.device.PublicKey().String() {
			w.handshakes[i] = w.now
		}
	}
}

func (w *world) OwnMeshPeer(context.Context) (*wgv1.MeshPeer, error) {
	if w.published == "" {
		return nil, nil
	}
	return &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: wgv1.MeshPeerSpec{NodeName: "n1", PublicKey: wgv1.PublicKey(w.published)}}, nil
}

func (w *world) PatchNodeAnnotations(_ context.Context, ann map[string]*string) error {
	for k, v := range ann {
		if v == nil {
			delete(w.ann, k)
		} else {
			w.ann[k] = *v
		}
	}
	return nil
}

func (w *world) Event(_ *corev1.Node, _, reason, msg string) {
	w.events = append(w.events, reason+": "+msg)
}

func (w *world) node() *corev1.Node {
	ann := map[string]string{}
	for k, v := range w.ann {
		ann[k] = v
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: ann}}
}

// tick is one reconcile of the agent (unless it is dead), and the operator
// and the peers doing their part.
func (w *world) tick() {
	ctx := context.Background()
	w.now = w.now.Add(20 * time.Millisecond)
	if !w.crashed {
		key := w.r.Step(ctx, w.node())
		if !w.crashed && w.step("announce") == nil {
			w.ann[wgv1.AnnotationPublicKey] = w.r.Announce().String()
		}
		if !w.crashed && w.step("configure device") == nil {
			w.device = key
		}
		if !w.crashed {
			w.r.Applied(ctx, w.dev(), w.meshPeers())
		}
	}
	// The operator publishes the announced key; the peers follow the
	// MeshPeer (the old key is removed, the new one added).
	if w.operatorUp && w.ann[wgv1.AnnotationPublicKey] != "" {
		w.published = w.ann[wgv1.AnnotationPublicKey]
	}
	w.peerKeys = []string{w.published, w.published}
}

func (w *world) dev() *wgtypes.Device {
	d := &wgtypes.Device{PrivateKey: w.device}
	for i := range peerNames {
		var k wgtypes.Key
		k[0] = byte(i + 1)
		d.Peers = append(d.Peers, wgtypes.Peer{PublicKey: k, LastHandshakeTime: w.handshakes[i]})
	}
	return d
}

func (w *world) meshPeers() []mesh.Peer {
	var out []mesh.Peer
	for i, n := range peerNames {
		var k wgtypes.Key
		k[0] = byte(i + 1)
		out = append(out, mesh.Peer{Name: n, NodeName: n, PublicKey: k, AllowedIPs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", i+1))}})
	}
	return out
}

func (w *world) diskKey() wgtypes.Key {
	b, err := os.ReadFile(filepath.Join(w.dir, keys.FileName))
	if err != nil {
		w.t.Fatal(err)
	}
	k, err := keys.ParseKeyFile("private.key", b)
	if err != nil {
		w.t.Fatal(err)
	}
	return k
}

// safe checks what must hold at every instant: the device's key is on
// disk, and a device on a new key only ever follows its publication.
func (w *world) safe(old wgtypes.Key) {
	w.t.Helper()
	onDisk := w.device == w.diskKey()
	if n, _ := readNext(w.dir); n != nil && n.PrivateKey == w.device {
		onDisk = true
	}
	if !onDisk {
		w.t.Fatalf("step %d: the device uses a key that is neither private.key nor private.key.next", w.steps)
	}
	if w.device != old && w.device.PublicKey().String() != w.published {
		w.t.Fatalf("step %d: the device switched to %s before the MeshPeer published it (%s)", w.steps, w.device.PublicKey(), w.published)
	}
}

// settled: one key everywhere, no rotation in progress, the request
// recorded, no temporary files.
func (w *world) settled(token string) error {
	dk := w.diskKey()
	if _, err := os.Stat(filepath.Join(w.dir, NextFileName)); err == nil {
		return fmt.Errorf("%s still exists", NextFileName)
	}
	if w.device != dk || w.ann[wgv1.AnnotationPublicKey] != dk.PublicKey().String() || w.published != dk.PublicKey().String() {
		return fmt.Errorf("keys differ: device %s, disk %s, announced %s, published %s", w.device.PublicKey(), dk.PublicKey(), w.ann[wgv1.AnnotationPublicKey], w.published)
	}
	if w.ann[wgv1.AnnotationKeyRotated] != token {
		return fmt.Errorf("recorded %q, want %q", w.ann[wgv1.AnnotationKeyRotated], token)
	}
	if tmp, _ := filepath.Glob(filepath.Join(w.dir, ".*")); len(tmp) > 0 {
		return fmt.Errorf("temporary files left: %v", tmp)
	}
	return nil
}

func (w *world) count(reason string) int {
	n := 0
	for _, e := range w.events {
		if strings.HasPrefix(e, reason+":") {
			n++
		}
	}
	return n
}

// run ticks until settled (restarting the agent after a crash); it returns
// the ticks taken.
func (w *world) run(token string, old wgtypes.Key, max int) int {
	w.t.Helper()
	for i := 0; i < max; i++ {
		w.tick()
		w.safe(old)
		if w.crashed {
			w.tick() // the operator and peers go on while the agent is down
			w.safe(old)
			w.restart()
		}
		if w.settled(token) == nil && i > 0 {
			return i
		}
	}
	w.t.Fatalf("not settled after %d ticks: %v\nevents: %v", max, w.settled(token), w.events)
	return 0
}

func TestRotationWithoutCrash(t *testing.T) {
	w := newWorld(t)
	old := w.device
	w.ann[wgv1.AnnotationRotateKey] = "t1"
	ticks := w.run("t1", old, 50)
	if w.device == old {
		t.Fatal("the key did not change")
	}
	for i, k := range w.peerKeys {
		if k != w.device.PublicKey().String() {
			t.Errorf("peer %d has %s, want the new key", i, k)
		}
		if w.handshakes[i].Before(w.now.Add(-time.Second)) {
			t.Errorf("peer %d did not handshake after the switch", i)
		}
	}
	if w.kicks != 1 || w.count(ReasonKeyRotationStarted) != 1 || w.count(ReasonKeyRotated) != 1 {
		t.Errorf("kicks %d, events %v: want one kick, one KeyRotationStarted, one KeyRotated", w.kicks, w.events)
	}
	if !strings.Contains(w.events[len(w.events)-1], "all 2 node peers") {
		t.Errorf("KeyRotated does not say every peer confirmed: %s", w.events[len(w.events)-1])
	}
	t.Logf("rotated in %d reconciles: %v", ticks, w.events)

	// The same token again is no new request; a new one is.
	w.run("t1", w.device, 3)
	if w.count(ReasonKeyRotationStarted) != 1 {
		t.Fatal("a recorded token started a second rotation")
	}
	second := w.device
	w.ann[wgv1.AnnotationRotateKey] = "t2"
	w.run("t2", second, 50)
	if w.device == second || w.device == old {
		t.Fatal("the second request did not make a third key")
	}
}

// TestRotationCrashAtEveryStep kills the agent at every step of a rotation
// in turn (before writing private.key.next, after it, after announcing,
// after the operator published while the agent was down, after switching
// the device, after promoting, after recording, ...) and restarts it: each
// time the rotation completes, exactly once, with one key everywhere.
func TestRotationCrashAtEveryStep(t *testing.T) {
	clean := newWorld(t)
	old := clean.device
	clean.steps = 0
	clean.ann[wgv1.AnnotationRotateKey] = "t1"
	clean.run("t1", old, 50)
	total := clean.steps
	t.Logf("a rotation without a crash takes %d steps: %s", total, strings.Join(clean.stepNames[len(clean.stepNames)-total:], ", "))
	for at := 1; at <= total; at++ {
		t.Run(fmt.Sprintf("crash-at-step-%d", at), func(t *testing.T) {
			w := newWorld(t)
			old := w.device
			w.steps, w.crashAt = 0, at
			w.ann[wgv1.AnnotationRotateKey] = "t1"
			w.run("t1", old, 100)
			if w.device == old {
				t.Fatal("rolled back; want completed (nothing made a roll-back necessary)")
			}
			if w.count(ReasonKeyRotated) != 1 || w.count(ReasonKeyRotationRolledBack) != 0 {
				t.Errorf("events %v: want one KeyRotated", w.events)
			}
		})
	}
}

// TestRollBackWhenNotPublished: without the operator the new key is never
// published; after PublishTimeout the rotation is rolled back (also when
// the agent dies in the middle of that), and the old key stays everywhere.
func TestRollBackWhenNotPublished(t *testing.T) {
	for at := 0; at <= 4; at++ {
		t.Run(fmt.Sprintf("crash-at-rollback-step-%d", at), func(t *testing.T) {
			w := newWorld(t)
			old := w.device
			w.operatorUp = false
			w.ann[wgv1.AnnotationRotateKey] = "t1"
			w.tick()
			if w.ann[wgv1.AnnotationPublicKey] == old.PublicKey().String() {
				t.Fatal("the new key was not announced")
			}
			w.now = w.now.Add(2 * time.Minute)
			w.steps, w.crashAt = 0, at
			w.run("t1", old, 20)
			if w.device != old {
				t.Fatal("the key changed although it was never published")
			}
			if w.count(ReasonKeyRotationRolledBack) != 1 || !strings.Contains(w.events[len(w.events)-1], "did not publish") {
				t.Errorf("events %v: want one KeyRotationRolledBack naming the operator", w.events)
			}
			// The operator comes back: it publishes the old key again.
			w.operatorUp = true
			w.run("t1", old, 5)
		})
	}
}

func TestUnreadableNextIsRolledBack(t *testing.T) {
	w := newWorld(t)
	old := w.device
	if err := os.WriteFile(filepath.Join(w.dir, NextFileName), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.restart()
	w.run("", old, 5)
	if w.count(ReasonKeyRotationRolledBack) != 1 {
		t.Errorf("events %v", w.events)
	}
}

func TestInvalidTokenIsReportedOnce(t *testing.T) {
	w := newWorld(t)
	w.ann[wgv1.AnnotationRotateKey] = "now please"
	for range 3 {
		w.tick()
	}
	if w.count(ReasonInvalidRotateKey) != 1 || !strings.Contains(w.events[0], `wgmesh.io/rotate-key="now please"`) {
		t.Errorf("events %v: want one InvalidKeyRotationRequest naming the annotation and value", w.events)
	}
	if _, err := os.Stat(filepath.Join(w.dir, NextFileName)); err == nil {
		t.Error("an invalid token started a rotation")
	}
}

func TestPeriodicRotation(t *testing.T) {
	w := newWorld(t)
	old := w.device
	if err := os.Chtimes(filepath.Join(w.dir, keys.FileName), w.now, w.now); err != nil {
		t.Fatal(err)
	}
	w.restart()
	w.r.o.Period = time.Hour
	due := Due(w.now, w.r.policy())
	w.now = due.Add(-time.Second)
	w.tick()
	if n, _ := readNext(w.dir); n != nil {
		t.Fatal("rotated before the key was due")
	}
	w.now = due
	w.tick()
	n, err := readNext(w.dir)
	if err != nil || n == nil || n.Token != AutoToken(w.now) {
		t.Fatalf("no automatic rotation when due: %v %v", n, err)
	}
	w.run(n.Token, old, 50)
	if w.device == old {
		t.Fatal("the key did not change")
	}
}

// TestConfirmationWaitsForPeersAndTimesOut: a peer that was connected but
// does not handshake with the new key holds the record back until the
// confirmation timeout, and is named.
func TestConfirmationWaitsForPeersAndTimesOut(t *testing.T) {
	w := newWorld(t)
	old := w.device
	w.r.o.Kick = func([]netip.Addr) error { w.kicks++; return nil } // nobody answers
	w.ann[wgv1.AnnotationRotateKey] = "t1"
	for range 10 {
		w.tick()
	}
	if w.device == old {
		t.Fatal("not switched")
	}
	if w.ann[wgv1.AnnotationKeyRotated] == "t1" {
		t.Fatal("recorded although no peer handshook")
	}
	w.handshakes[0] = w.now // peer-a answers, peer-b never does
	w.now = w.now.Add(6 * time.Second)
	w.tick()
	if w.ann[wgv1.AnnotationKeyRotated] != "t1" {
		t.Fatal("not recorded after the confirmation timeout")
	}
	last := w.events[len(w.events)-1]
	if !strings.Contains(last, "1 of 2") || !strings.Contains(last, "peer-b") || strings.Contains(last, "peer-a,") {
		t.Errorf("KeyRotated event does not name the peer that did not confirm: %s", last)
	}
}

// TestPeerKeyChangeKicksThatPeer: when another node's key changes, this
// node sends into the tunnel towards it at once (its bridge gateway), and
// only towards it.
func TestPeerKeyChangeKicksThatPeer(t *testing.T) {
	w := newWorld(t)
	var kicked []netip.Addr
	w.r.o.Kick = func(a []netip.Addr) error { kicked = append(kicked, a...); return nil }
	peers := w.meshPeers()
	w.r.Applied(context.Background(), w.dev(), peers)
	if len(kicked) != 0 {
		t.Fatalf("kicked %v without a key change", kicked)
	}
	peers[1].PublicKey[0] = 99
	w.r.Applied(context.Background(), w.dev(), peers)
	if len(kicked) != 1 || kicked[0] != netip.MustParseAddr("198.19.2.1") {
		t.Fatalf("kicked %v, want only peer-b's gateway 198.19.2.1", kicked)
	}
}

// TestCrashWhileWritingLeavesNoTrace: an agent killed between creating and
// renaming a temporary file leaves it behind; the next start removes it and
// starts the rotation again from the request.
func TestCrashWhileWritingLeavesNoTrace(t *testing.T) {
	w := newWorld(t)
	old := w.device
	tmp := filepath.Join(w.dir, "."+NextFileName+".tmp-123")
	if err := os.WriteFile(tmp, []byte(`{"privateKey":"half`), 0o600); err != nil {
		t.Fatal(err)
	}
	w.ann[wgv1.AnnotationRotateKey] = "t1"
	w.restart()
	if _, err := os.Stat(tmp); err == nil {
		t.Fatal("the temporary file survived a restart")
	}
	w.run("t1", old, 50)
	if w.device == old {
		t.Fatal("not rotated")
	}
}

func TestNegativePeriodRefused(t *testing.T) {
	_, err := Open(Options{StateDir: t.TempDir(), Period: -time.Hour})
	if err == nil || !strings.Contains(err.Error(), "--key-rotation-period=-1h0m0s") {
		t.Fatalf("Open with a negative period: %v", err)
	}
}
