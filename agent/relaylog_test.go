package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/paths"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// eventList records Events as "type reason note".
type eventList []string

func (e *eventList) Eventf(_, _ runtime.Object, eventtype, reason, _, note string, args ...any) {
	*e = append(*e, eventtype+" "+reason+" "+fmt.Sprintf(note, args...))
}

func (e *eventList) AnnotatedEventf(regarding, related runtime.Object, _ map[string]string, eventtype, reason, action, note string, args ...any) {
	e.Eventf(regarding, related, eventtype, reason, action, note, args...)
}

// TestReportRelays: falling back to a relay, moving to another, losing
// every relay and returning to a direct path are each logged and recorded
// once as an Event on the Node; an unchanged relay says nothing.
func TestReportRelays(t *testing.T) {
	var lines []string
	var events eventList
	a := &Agent{o: Options{NodeName: "c"}, log: funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}), events: &events}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "c"}}
	step := func(p mesh.Peer, want ...string) {
		t.Helper()
		events = nil
		a.reportRelays(node, []mesh.Peer{{Name: "r1", Path: paths.KindPublic}, p})
		if len(events) != len(want) {
			t.Fatalf("%+v: events %q, want %d", p, events, len(want))
		}
		for i, w := range want {
			if !strings.Contains(events[i], w) {
				t.Errorf("%+v: event %q, want it to contain %q", p, events[i], w)
			}
		}
	}
	step(mesh.Peer{Name: "d", Path: paths.KindPublic})
	step(mesh.Peer{Name: "d", Path: paths.KindRelayed, Relay: "r1", PathReason: "relayed by r1: relay needed"},
		"Normal PeerRelayed node c reaches peer d through relay r1 (no direct path)")
	step(mesh.Peer{Name: "d", Path: paths.KindRelayed, Relay: "r1", PathReason: "relayed by r1: relay needed"})
	step(mesh.Peer{Name: "d", Path: paths.KindRelayed, Relay: "r2", PathReason: "relayed by r2: relay needed"},
		"Normal PeerRelayed node c reaches peer d through relay r2 (its relay r1 is gone")
	step(mesh.Peer{Name: "d", Path: paths.KindRelayNeeded, PathReason: "relay needed: ...; no node can relay"},
		"Warning NoRelay node c cannot reach peer d: relay needed: ...; no node can relay")
	step(mesh.Peer{Name: "d", Path: paths.KindPunched}, "Normal PeerDirect node c reaches peer d directly again (punched path)")
	step(mesh.Peer{Name: "d", Path: paths.KindPunched})
	if len(lines) != 4 {
		t.Errorf("logged %q, want one line per change", lines)
	}
}

// TestConnectedPeers: a MeshPeer is connected when the device had a
// handshake with its key within wireguard.ConnectedWithin.
func TestConnectedPeers(t *testing.T) {
	now := time.Now()
	k1, _ := wgtypes.GeneratePrivateKey()
	k2, _ := wgtypes.GeneratePrivateKey()
	dev := []wgtypes.Peer{{PublicKey: k1.PublicKey(), LastHandshakeTime: now.Add(-time.Minute)},
		{PublicKey: k2.PublicKey(), LastHandshakeTime: now.Add(-wireguard.ConnectedWithin - time.Second)}}
	peers := []wgv1.MeshPeer{{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(k1.PublicKey().String())}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(k2.PublicKey().String())}}}
	c := connectedPeers(dev, peers, now)
	if !c("a") || c("b") || c("nobody") {
		t.Errorf("connected a %v b %v nobody %v, want a only", c("a"), c("b"), c("nobody"))
	}
}
