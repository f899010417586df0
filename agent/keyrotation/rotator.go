package keyrotation

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/agent/keys"
	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/podnet"
)

// Defaults of Options.
const (
	DefaultPublishTimeout = 2 * time.Minute
	DefaultConfirmTimeout = 30 * time.Second
)

// Event reasons (on the own Node).
const (
	ReasonKeyRotationStarted    = "KeyRotationStarted"
	ReasonKeyRotated            = "KeyRotated"
	ReasonKeyRotationRolledBack = "KeyRotationRolledBack"
	ReasonInvalidRotateKey      = "InvalidKeyRotationRequest"
)

var tokenRE = regexp.MustCompile(wgv1.RotateKeyTokenPattern)

// Options configure a Rotator.
type Options struct {
	StateDir string
	NodeName string
	// Period: --key-rotation-period (0: only on request).
	Period         time.Duration
	PublishTimeout time.Duration // default DefaultPublishTimeout
	ConfirmTimeout time.Duration // default DefaultConfirmTimeout
	Metrics        *Metrics      // nil: not exported
	Log            logr.Logger
	// Kick sends one packet into the tunnel to each address (default
	// UDPKick).
	Kick func([]netip.Addr) error
	Now  func() time.Time
	// effect, when set, is called before each side effect on disk or in
	// the API server; an error stops the step there (tests crash the agent
	// with it).
	effect func(name string) error
}

// API is what rotations need of the API server.
type API interface {
	// OwnMeshPeer is the node's MeshPeer (nil: none yet).
	OwnMeshPeer(ctx context.Context) (*wgv1.MeshPeer, error)
	// PatchNodeAnnotations merge-patches the own Node's annotations (nil
	// value: remove).
	PatchNodeAnnotations(ctx context.Context, ann map[string]*string) error
	// Event records an Event regarding the own Node.
	Event(node *corev1.Node, eventType, reason, message string)
}

// Rotator rotates the node's WireGuard key without downtime (see the
// package documentation). The agent calls Step before it announces and
// applies the mesh, and Applied after; both run on the agent's reconcile
// goroutine.
type Rotator struct {
	o       Options
	api     API
	trigger func()

	cur      wgtypes.Key
	since    time.Time
	key      wgtypes.Key // the device key, as last decided
	announce wgtypes.Key // the public key to announce, as last decided
	node     *corev1.Node
	// recorded is the token this process last wrote to
	// wgmesh.io/key-rotated (the cached Node may not show it yet).
	recorded string
	// deviceKey is what the device used at the last Applied.
	deviceKey *wgtypes.Key
	// switching is when this process decided to switch the device to the
	// next key of token switchingToken (a handshake after it is with the new
	// key). Unknown after a restart: then the rotation's start is used.
	switching      time.Time
	switchingToken string
	confirm        *confirmation
	retry          *time.Timer
	// peerKeys are the node peers' keys at the last Applied.
	peerKeys map[string]wgtypes.Key
	warned   map[string]bool
}

// confirmation tracks which peers handshook with the new key.
type confirmation struct {
	token    string
	ref      time.Time // handshakes after this are with the new key
	started  time.Time
	expected map[string]wgtypes.Key // node peers connected before, by name
	idle     []string               // node peers without a recent handshake
	delay    time.Duration
}

// Open loads the node's key (creating it on first start) and any rotation
// in progress, and removes temporary files a crash left.
func Open(o Options) (*Rotator, error) {
	if o.PublishTimeout == 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.ConfirmTimeout == 0 {
		o.ConfirmTimeout = DefaultConfirmTimeout
	}
	if o.Kick == nil {
		o.Kick = UDPKick
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Period < 0 {
		return nil, fmt.Errorf("--key-rotation-period=%s: want 0 (off) or a positive duration", o.Period)
	}
	if err := keys.RemoveTemporaryFiles(o.StateDir); err != nil {
		o.Log.Error(err, "removing temporary files in the state directory", "dir", o.StateDir)
	}
	cur, err := keys.LoadOrCreate(o.StateDir)
	if err != nil {
		return nil, err
	}
	since, err := keys.Since(o.StateDir)
	if err != nil {
		return nil, err
	}
	r := &Rotator{o: o, cur: cur, since: since, key: cur, announce: cur.PublicKey(), warned: map[string]bool{}}
	if o.Metrics != nil {
		o.Metrics.KeyCreated.Set(float64(since.UnixMilli()) / 1000)
	}
	if n, err := readNext(o.StateDir); err != nil {
		o.Log.Error(err, "key rotation record unreadable; the rotation is rolled back once the API server is reachable")
	} else if n != nil {
		o.Log.Info("a key rotation is in progress; resuming it", "token", n.Token, "started", n.Started,
			"newPublicKey", n.PrivateKey.PublicKey().String(), "publicKey", cur.PublicKey().String())
	}
	return r, nil
}

// Bind gives the rotator the API server and a way to reconcile again.
func (r *Rotator) Bind(api API, trigger func()) { r.api, r.trigger = api, trigger }

// Key is the private key the device must use now.
func (r *Rotator) Key() wgtypes.Key { return r.key }

// Announce is the public key the Node must announce now.
func (r *Rotator) Announce() wgtypes.Key { return r.announce }

func (r *Rotator) policy() Policy {
	return Policy{Period: r.o.Period, PublishTimeout: r.o.PublishTimeout, NodeName: r.o.NodeName}
}

func (r *Rotator) effect(name string) error {
	if r.o.effect != nil {
		return r.o.effect(name)
	}
	return nil
}

// observe reads the disk, the Node (as given) and the own MeshPeer.
func (r *Rotator) observe(ctx context.Context, node *corev1.Node) (Observed, error) {
	o := Observed{Current: r.cur, CurrentSince: r.since, DeviceKey: r.deviceKey, Now: r.o.Now()}
	o.Next, o.NextErr = readNext(r.o.StateDir)
	ann := node.Annotations
	o.Announced, o.Recorded = ann[wgv1.AnnotationPublicKey], ann[wgv1.AnnotationKeyRotated]
	if r.recorded != "" {
		o.Recorded = r.recorded
	}
	if req, ok := ann[wgv1.AnnotationRotateKey]; ok {
		if tokenRE.MatchString(req) {
			o.Requested = req
		} else {
			r.once("token:"+req, func() {
				msg := fmt.Sprintf("Node %s annotation %s=%q is not a rotation request token: want %s (kubectl wgmesh rotate-key %s sets one); ignored",
					r.o.NodeName, wgv1.AnnotationRotateKey, req, wgv1.RotateKeyTokenPattern, r.o.NodeName)
				r.o.Log.Info(msg)
				r.api.Event(node, corev1.EventTypeWarning, ReasonInvalidRotateKey, msg)
			})
		}
	}
	mp, err := r.api.OwnMeshPeer(ctx)
	if err != nil {
		return o, fmt.Errorf("reading MeshPeer %s: %w", r.o.NodeName, err)
	}
	if mp != nil {
		o.Published = string(mp.Spec.PublicKey)
	}
	return o, nil
}

// Step runs the rotation's steps that come before the device is
// configured: start a requested or due rotation, roll back, clean up. It
// returns the private key the device must use. Errors are logged and the
// step is retried.
func (r *Rotator) Step(ctx context.Context, node *corev1.Node) wgtypes.Key {
	r.node = node
	for range 4 {
		o, err := r.observe(ctx, node)
		if err != nil {
			r.fail(err, "observing")
			return r.key
		}
		d := Decide(o, r.policy())
		r.key, r.announce = d.DeviceKey, d.Announce
		switch d.Action {
		case Start:
			err = r.start(o, d)
		case RollBack:
			err = r.rollBack(ctx, o, d)
		case Discard, Finish:
			if err = r.effect("remove-next"); err == nil {
				err = removeNext(r.o.StateDir)
			}
		case Switch:
			if r.switchingToken != d.Token && r.deviceKey != nil {
				r.switching, r.switchingToken = o.Now, d.Token
			}
			r.once("switch:"+d.Token, func() {
				r.o.Log.Info("the node's MeshPeer publishes the new key: switching wgmesh0 to it", "token", d.Token,
					"publicKey", d.Announce.String())
			})
			return r.key
		default:
			return r.key
		}
		if err != nil {
			r.fail(err, d.Action.String())
			return r.key
		}
	}
	return r.key
}

func (r *Rotator) start(o Observed, d Decision) error {
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return fmt.Errorf("generating the next WireGuard key: %w", err)
	}
	n := &Next{PrivateKey: key, Token: d.Token, Started: o.Now, Previous: o.Current.PublicKey()}
	if err := r.effect("write-next"); err != nil {
		return err
	}
	if err := writeNext(r.o.StateDir, n); err != nil {
		return err
	}
	r.o.Log.Info("key rotation started", "token", d.Token, "reason", d.Reason, "newPublicKey", key.PublicKey().String(),
		"publicKey", o.Current.PublicKey().String())
	r.event(corev1.EventTypeNormal, ReasonKeyRotationStarted, fmt.Sprintf(
		"node %s: rotating its WireGuard key (request %s, %s): new public key %s announced; %s stays in use until the operator publishes the new one in MeshPeer %s",
		r.o.NodeName, d.Token, d.Reason, key.PublicKey(), o.Current.PublicKey(), r.o.NodeName))
	return nil
}

func (r *Rotator) rollBack(ctx context.Context, o Observed, d Decision) error {
	token := ""
	if o.Next != nil {
		token = o.Next.Token
	}
	if token != "" {
		if err := r.effect("record-rollback"); err != nil {
			return err
		}
		if err := r.api.PatchNodeAnnotations(ctx, map[string]*string{wgv1.AnnotationKeyRotated: &token}); err != nil {
			return err
		}
		r.recorded = token
	}
	// Reported once recorded: a restart after this only removes the file.
	if r.o.Metrics != nil {
		r.o.Metrics.Rotations.WithLabelValues(ResultRolledBack).Inc()
	}
	r.o.Log.Info("key rotation rolled back: the current key stays", "token", token, "reason", d.Reason, "publicKey", o.Current.PublicKey().String())
	r.event(corev1.EventTypeWarning, ReasonKeyRotationRolledBack, fmt.Sprintf(
		"node %s: key rotation %s rolled back, public key %s stays: %s", r.o.NodeName, token, o.Current.PublicKey(), d.Reason))
	if err := r.effect("remove-next"); err != nil {
		return err
	}
	return removeNext(r.o.StateDir)
}

// Applied runs the steps that follow the device's configuration: dev is
// wgmesh0 after the agent applied Key() and the mesh, peers the mesh's
// peers. Once the device uses the next key it becomes private.key; then
// every node peer is made to handshake at once, and completion is recorded
// when those connected before have handshaken with the new key. A node
// peer whose key changed (another node rotated) is made to handshake too.
func (r *Rotator) Applied(ctx context.Context, dev *wgtypes.Device, peers []mesh.Peer) {
	if dev == nil || r.node == nil {
		return
	}
	dk := dev.PrivateKey
	r.deviceKey = &dk
	r.kickChangedPeers(peers)
	for range 2 {
		o, err := r.observe(ctx, r.node)
		if err != nil {
			r.fail(err, "observing")
			return
		}
		d := Decide(o, r.policy())
		switch d.Action {
		case Promote:
			if err := r.promote(o); err != nil {
				r.fail(err, "promoting the next key")
				return
			}
			continue
		case Confirm:
			if dk != o.Current {
				return // the device is configured at the next reconcile
			}
			if err := r.confirmStep(ctx, o, d, dev, peers); err != nil {
				r.fail(err, "recording completion")
			}
		}
		return
	}
}

func (r *Rotator) promote(o Observed) error {
	if err := r.effect("promote"); err != nil {
		return err
	}
	if err := keys.Store(r.o.StateDir, o.Next.PrivateKey); err != nil {
		return err
	}
	since, err := keys.Since(r.o.StateDir)
	if err != nil {
		since = o.Now
	}
	r.cur, r.since, r.key, r.announce = o.Next.PrivateKey, since, o.Next.PrivateKey, o.Next.PrivateKey.PublicKey()
	if r.o.Metrics != nil {
		r.o.Metrics.KeyCreated.Set(float64(since.UnixMilli()) / 1000)
	}
	r.o.Log.Info("wgmesh0 uses the new key; it is now "+keys.FileName, "token", o.Next.Token, "publicKey", o.Next.PrivateKey.PublicKey().String(),
		"previousPublicKey", o.Next.Previous.String())
	return nil
}

// confirmStep kicks every node peer once, then records completion when
// the peers connected before the switch have handshaken since.
func (r *Rotator) confirmStep(ctx context.Context, o Observed, d Decision, dev *wgtypes.Device, peers []mesh.Peer) error {
	now := o.Now
	c := r.confirm
	if c == nil || c.token != d.Token {
		// Handshakes after the switch are with the new key. After a
		// restart the switch time is unknown: any handshake since the
		// rotation started counts (before the switch the peers only
		// rekey, every two minutes of traffic, so a false confirmation
		// needs one in the second or so the operator takes to publish).
		ref := o.Next.Started
		if r.switchingToken == d.Token {
			ref = r.switching
		}
		c = &confirmation{token: d.Token, ref: ref, started: now, expected: map[string]wgtypes.Key{}, delay: 50 * time.Millisecond}
		byKey := map[wgtypes.Key]wgtypes.Peer{}
		for _, p := range dev.Peers {
			byKey[p.PublicKey] = p
		}
		var targets []netip.Addr
		for _, p := range peers {
			if p.NodeName == "" {
				continue
			}
			if gw, ok := peerGateway(p); ok {
				targets = append(targets, gw)
			}
			if wp, ok := byKey[p.PublicKey]; ok && wireguard.Connected(wp, now) {
				c.expected[p.Name] = p.PublicKey
			} else {
				c.idle = append(c.idle, p.Name)
			}
		}
		if err := r.o.Kick(targets); err != nil {
			r.o.Log.Info("kicking handshakes with the new key", "error", err.Error())
		}
		r.confirm = c
		r.o.Log.Info("new key in use: every node peer is made to handshake now", "token", d.Token, "kicked", len(targets),
			"awaiting", len(c.expected), "idle", len(c.idle))
	}
	var missing []string
	for name, key := range c.expected {
		if !handshookSince(dev, key, c.ref) {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 && now.Sub(c.started) < r.o.ConfirmTimeout {
		r.after(c.delay)
		c.delay = min(2*c.delay, 2*time.Second)
		return nil
	}
	if err := r.effect("record"); err != nil {
		return err
	}
	token := d.Token
	if err := r.api.PatchNodeAnnotations(ctx, map[string]*string{wgv1.AnnotationKeyRotated: &token}); err != nil {
		return err
	}
	r.recorded = token
	result, evType := ResultCompleted, corev1.EventTypeNormal
	detail := fmt.Sprintf("all %d node peers connected before handshook with it", len(c.expected))
	if len(missing) > 0 {
		result, evType = ResultUnconfirmed, corev1.EventTypeWarning
		detail = fmt.Sprintf("%d of %d node peers connected before handshook with it; not within %s: %s",
			len(c.expected)-len(missing), len(c.expected), r.o.ConfirmTimeout, strings.Join(missing, ", "))
	}
	if len(c.idle) > 0 {
		detail += fmt.Sprintf(" (%d without a handshake in the last %s before, not awaited: %s)", len(c.idle), wireguard.ConnectedWithin, strings.Join(c.idle, ", "))
	}
	took := now.Sub(o.Next.Started).Round(time.Millisecond)
	if r.o.Metrics != nil {
		r.o.Metrics.Rotations.WithLabelValues(result).Inc()
	}
	r.o.Log.Info("key rotation recorded", "token", token, "result", result, "publicKey", o.Current.PublicKey().String(),
		"previousPublicKey", o.Next.Previous.String(), "took", took, "missing", missing, "idle", c.idle)
	r.event(evType, ReasonKeyRotated, fmt.Sprintf("node %s: WireGuard key rotated (request %s): public key %s replaces %s in %s; %s",
		r.o.NodeName, token, o.Current.PublicKey(), o.Next.Previous, took, detail))
	r.confirm = nil
	if err := r.effect("remove-next"); err != nil {
		return err
	}
	return removeNext(r.o.StateDir)
}

// kickChangedPeers makes node peers whose key changed since the last
// Applied handshake at once: the old session is gone, and a peer behind NAT
// cannot be reached until someone sends to it.
func (r *Rotator) kickChangedPeers(peers []mesh.Peer) {
	seen := make(map[string]wgtypes.Key, len(peers))
	var targets []netip.Addr
	var names []string
	for _, p := range peers {
		if p.NodeName == "" {
			continue
		}
		seen[p.Name] = p.PublicKey
		if old, ok := r.peerKeys[p.Name]; ok && old != p.PublicKey {
			if gw, ok := peerGateway(p); ok {
				targets = append(targets, gw)
				names = append(names, p.Name)
			}
		}
	}
	r.peerKeys = seen
	if len(targets) == 0 {
		return
	}
	r.o.Log.Info("node peers changed their key: handshaking with them now", "peers", names)
	if err := r.o.Kick(targets); err != nil {
		r.o.Log.Info("kicking handshakes with peers that changed their key", "error", err.Error())
	}
}

func peerGateway(p mesh.Peer) (netip.Addr, bool) {
	for _, c := range p.AllowedIPs {
		if gw, ok := podnet.Gateway(c); ok {
			return gw.Addr(), true
		}
	}
	return netip.Addr{}, false
}

func handshookSince(dev *wgtypes.Device, key wgtypes.Key, ref time.Time) bool {
	for _, p := range dev.Peers {
		if p.PublicKey == key {
			return !p.LastHandshakeTime.Before(ref)
		}
	}
	return false
}

func (r *Rotator) event(eventType, reason, msg string) {
	if r.api != nil && r.node != nil {
		r.api.Event(r.node, eventType, reason, msg)
	}
}

func (r *Rotator) once(key string, fn func()) {
	if !r.warned[key] {
		r.warned[key] = true
		fn()
	}
}

// fail logs a failed step; it is retried after a second.
func (r *Rotator) fail(err error, step string) {
	if errors.Is(err, errCrash) {
		return
	}
	r.o.Log.Error(err, "key rotation step failed; retrying", "step", step)
	r.after(time.Second)
}

// after asks for another reconcile in d (one pending at a time).
func (r *Rotator) after(d time.Duration) {
	if r.trigger == nil {
		return
	}
	if r.retry != nil {
		r.retry.Stop()
	}
	r.retry = time.AfterFunc(d, r.trigger)
}

// errCrash is returned by test effect hooks that simulate a crash.
var errCrash = errors.New("simulated crash")
