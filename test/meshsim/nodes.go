package meshsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

const (
	// simPrefix names simulated nodes: wgm-sim-00000, wgm-sim-00001, ...
	// The real nodes (wgm-node-N) sort before all of them.
	simPrefix = "wgm-sim-"
	// simLabel marks the simulated Nodes.
	simLabel = "meshsim.wgmesh.io/simulated"
	// simAddrs is how many simulated nodes get distinct addresses in
	// 198.18.32.0/19 (from 198.18.32.1); later ones reuse them.
	simAddrs = 8000
	// wireGuardPort is the port of every simulated endpoint.
	wireGuardPort = 51820
)

// simName is simulated node i's name.
func simName(i int) string { return fmt.Sprintf("%s%05d", simPrefix, i) }

// simAddr is simulated node i's InternalIP and endpoint host: in
// 198.18.32.0/19, routed by the real nodes to the cluster's router, which
// has nowhere to send it.
func simAddr(i int) netip.Addr {
	a := netip.MustParseAddr("198.18.32.1").As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(i % simAddrs)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Join is one simulated node's join.
type Join struct {
	Name      string
	PublicKey string    // base64
	Announced time.Time // just before the annotation write
	Err       error
}

// register registers simulated node i as its kubelet would: Ready, with an
// InternalIP and no pod CIDR.
func (s *Sim) register(ctx context.Context, i int) error {
	name := simName(i)
	now := metav1.Now()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{simLabel: "true", corev1.LabelHostname: name}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: simAddr(i).String()}, {Type: corev1.NodeHostName, Address: name}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "simulated by test/meshsim", LastHeartbeatTime: now, LastTransitionTime: now}},
		},
	}
	if err := s.cl.Create(ctx, node); err != nil {
		return fmt.Errorf("register simulated Node %s: %w", name, err)
	}
	s.countWrite("POST nodes", 1)
	return nil
}

// announce writes simulated node i's agent annotations (a new key).
func (s *Sim) announce(ctx context.Context, i int) Join {
	name := simName(i)
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return Join{Name: name, Err: err}
	}
	pub := k.PublicKey().String()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		wgv1.AnnotationPublicKey: pub,
		wgv1.AnnotationEndpoint:  netip.AddrPortFrom(simAddr(i), wireGuardPort).String(),
	}}})
	j := Join{Name: name, PublicKey: pub, Announced: time.Now()}
	if err := s.cl.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		j.Err = fmt.Errorf("annotate simulated Node %s: %w", name, err)
		return j
	}
	s.countWrite("PATCH nodes", 1)
	s.mu.Lock()
	s.keys[name], s.alive[name] = pub, true
	s.mu.Unlock()
	return j
}

// Join registers a new simulated node and announces its key and endpoint.
func (s *Sim) Join(ctx context.Context) Join {
	s.mu.Lock()
	i := s.next
	s.next++
	s.mu.Unlock()
	if err := s.register(ctx, i); err != nil {
		return Join{Name: simName(i), Err: err}
	}
	return s.announce(ctx, i)
}

// JoinMany joins n simulated nodes with `workers` writers at once.
func (s *Sim) JoinMany(ctx context.Context, n, workers int) ([]Join, error) {
	out := make([]Join, n)
	var wg sync.WaitGroup
	idx := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range idx {
				out[k] = s.Join(ctx)
			}
		}()
	}
	for k := range n {
		idx <- k
	}
	close(idx)
	wg.Wait()
	var errs []error
	for _, j := range out {
		if j.Err != nil {
			errs = append(errs, j.Err)
		}
	}
	return out, errors.Join(errs...)
}

// Leave deletes a simulated node (its MeshPeer goes with it).
func (s *Sim) Leave(ctx context.Context, name string) error {
	if err := s.cl.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete simulated Node %s: %w", name, err)
	}
	s.countWrite("DELETE nodes", 1)
	s.mu.Lock()
	delete(s.alive, name)
	s.mu.Unlock()
	return nil
}

// Alive is the simulated nodes that exist (failed ones included), sorted:
// the oldest first.
func (s *Sim) Alive() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.alive))
	for n := range s.alive {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (s *Sim) isAlive(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alive[name]
}

// healthy counts the simulated nodes that exist and were not failed.
func (s *Sim) healthy() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for name := range s.alive {
		if !s.fail[name] {
			n++
		}
	}
	return n
}

// Fail marks a node failed as the node lifecycle controller does when its
// kubelet stops posting status: Ready=Unknown (a nodes/status write) and
// the unreachable taints (a nodes write). A simulated node's data plane is
// gone in the sense that it never existed.
func (s *Sim) Fail(ctx context.Context, name string) error {
	now := metav1.Now().UTC().Format(time.RFC3339)
	status, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []map[string]any{{
		"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.",
		"lastTransitionTime": now, "lastHeartbeatTime": now}}}})
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := s.cl.Status().Patch(ctx, node, client.RawPatch(types.StrategicMergePatchType, status)); err != nil {
		return fmt.Errorf("mark Node %s Ready=Unknown: %w", name, err)
	}
	s.countWrite("PATCH nodes/status", 1)
	taints, _ := json.Marshal(map[string]any{"spec": map[string]any{"taints": []map[string]any{
		{"key": corev1.TaintNodeUnreachable, "effect": "NoSchedule", "timeAdded": now},
		{"key": corev1.TaintNodeUnreachable, "effect": "NoExecute", "timeAdded": now}}}})
	if err := s.cl.Patch(ctx, node, client.RawPatch(types.MergePatchType, taints)); err != nil {
		return fmt.Errorf("taint Node %s unreachable: %w", name, err)
	}
	s.countWrite("PATCH nodes", 1)
	s.mu.Lock()
	s.fail[name] = true
	s.mu.Unlock()
	return nil
}

// WriteOtherStatus writes a status-only update to a simulated node's
// MeshPeer, as that node's agent would (a new count of connected peers).
func (s *Sim) WriteOtherStatus(ctx context.Context, name string, connected int) error {
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{
		"connectedPeers": connected, "totalPeers": 1000, "connected": fmt.Sprintf("%d/1000", connected)}})
	if err := s.cl.Status().Patch(ctx, &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("status of MeshPeer %s: %w", name, err)
	}
	s.countWrite("PATCH meshpeers/status", 1)
	return nil
}

// Published counts the simulated nodes, those with a pod CIDR and those
// whose MeshPeer carries their current key and pod CIDRs.
func (s *Sim) Published(ctx context.Context) (withCIDR, published, simulated int, err error) {
	var nodes corev1.NodeList
	if err := s.cl.List(ctx, &nodes, client.HasLabels{simLabel}); err != nil {
		return 0, 0, 0, err
	}
	var peers wgv1.MeshPeerList
	if err := s.cl.List(ctx, &peers); err != nil {
		return 0, 0, 0, err
	}
	byName := map[string]*wgv1.MeshPeer{}
	for i := range peers.Items {
		byName[peers.Items[i].Name] = &peers.Items[i]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if n.DeletionTimestamp != nil {
			continue
		}
		simulated++
		if len(n.Spec.PodCIDRs) == 0 {
			continue
		}
		withCIDR++
		if publishes(byName[n.Name], s.keys[n.Name], n.Spec.PodCIDRs) {
			published++
		}
	}
	return withCIDR, published, simulated, nil
}

// publishes tells whether mp carries key and exactly the pod CIDRs.
func publishes(mp *wgv1.MeshPeer, key string, podCIDRs []string) bool {
	if mp == nil || string(mp.Spec.PublicKey) != key || len(mp.Spec.AllowedIPs) != len(podCIDRs) {
		return false
	}
	for k, c := range podCIDRs {
		if string(mp.Spec.AllowedIPs[k]) != c {
			return false
		}
	}
	return true
}

// MeshPeerBytes is the size of every MeshPeer as JSON, and of their
// managedFields.
func (s *Sim) MeshPeerBytes(ctx context.Context) (all, managed int, err error) {
	var peers wgv1.MeshPeerList
	if err := s.cl.List(ctx, &peers); err != nil {
		return 0, 0, err
	}
	for i := range peers.Items {
		b, _ := json.Marshal(&peers.Items[i])
		m, _ := json.Marshal(peers.Items[i].ManagedFields)
		all, managed = all+len(b), managed+len(m)
	}
	return all, managed, nil
}

// PodCIDRs maps node names to their first pod CIDR.
func (s *Sim) PodCIDRs(ctx context.Context) (map[string]netip.Prefix, error) {
	var nodes corev1.NodeList
	if err := s.cl.List(ctx, &nodes); err != nil {
		return nil, err
	}
	out := map[string]netip.Prefix{}
	for _, n := range nodes.Items {
		if len(n.Spec.PodCIDRs) > 0 {
			if p, err := netip.ParsePrefix(n.Spec.PodCIDRs[0]); err == nil {
				out[n.Name] = p
			}
		}
	}
	return out, nil
}
