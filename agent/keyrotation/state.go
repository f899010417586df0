package keyrotation

import (
	"fmt"
	"hash/fnv"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Observed is everything a rotation decision depends on: what is on disk,
// what the device uses, and what the API server shows. Nothing else (no
// memory of earlier steps) goes into Decide, so that an agent restarted at
// any point takes the same decision as one that never stopped.
type Observed struct {
	// Current is private.key; CurrentSince when it was put in place.
	Current      wgtypes.Key
	CurrentSince time.Time
	// Next is private.key.next (nil: none); NextErr when it exists but
	// cannot be read.
	Next    *Next
	NextErr error
	// DeviceKey is the private key wgmesh0 uses, when known.
	DeviceKey *wgtypes.Key
	// Announced is the Node's wgmesh.io/public-key annotation, Published
	// the own MeshPeer's spec.publicKey ("" when there is no MeshPeer).
	Announced, Published string
	// Requested is the Node's wgmesh.io/rotate-key (a valid token or "");
	// Recorded its wgmesh.io/key-rotated.
	Requested, Recorded string
	Now                 time.Time
}

// Policy is the configuration of rotations.
type Policy struct {
	// Period rotates the key when it is this old (0: never on its own).
	Period time.Duration
	// PublishTimeout rolls a rotation back when the operator has not
	// published the new key in the node's MeshPeer by then.
	PublishTimeout time.Duration
	// NodeName spreads automatic rotations of nodes whose keys were made
	// together over the last tenth of the period.
	NodeName string
}

// Action is the next step of a rotation.
type Action int

const (
	// Idle: no rotation; the current key is announced and used.
	Idle Action = iota
	// Start: generate the next key and persist it (private.key.next).
	Start
	// AwaitPublish: announce the next key's public key on the Node and wait
	// for the operator to publish it in the node's MeshPeer; the device
	// keeps the current key meanwhile.
	AwaitPublish
	// Switch: the MeshPeer has the next key (peers are switching to it):
	// the device switches its private key to it now.
	Switch
	// Promote: the device uses the next key: it becomes private.key.
	Promote
	// Confirm: the key is rotated; make every peer handshake with it and
	// record completion once they have.
	Confirm
	// Finish: completion is recorded; remove private.key.next.
	Finish
	// RollBack: give up before the switch: record the request as handled,
	// remove private.key.next and announce the current key again.
	RollBack
	// Discard: a roll-back was recorded: remove the leftover
	// private.key.next.
	Discard
)

var actionNames = [...]string{"Idle", "Start", "AwaitPublish", "Switch", "Promote", "Confirm", "Finish", "RollBack", "Discard"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is what to do now.
type Decision struct {
	Action Action
	// Token of the rotation (Start: of the one to begin).
	Token string
	// DeviceKey is the private key the device must use now.
	DeviceKey wgtypes.Key
	// Announce is the public key the Node must announce now.
	Announce wgtypes.Key
	// Reason says why (RollBack, Start), for logs and Events.
	Reason string
}

// Decide is the rotation's state machine: the step to take for what is
// observed. It is pure.
//
//	no next file:             request not yet recorded, or key older than the period -> Start
//	next file, not promoted:  recorded already (a roll-back) -> Discard
//	                          device already uses it (switched) -> Promote
//	                          MeshPeer publishes it -> Switch
//	                          older than PublishTimeout -> RollBack
//	                          else -> AwaitPublish (announce it)
//	next file == private.key: recorded -> Finish, else Confirm
//	next file unreadable:     RollBack
func Decide(o Observed, p Policy) Decision {
	d := Decision{Action: Idle, DeviceKey: o.Current, Announce: o.Current.PublicKey()}
	switch {
	case o.NextErr != nil:
		d.Action, d.Reason = RollBack, o.NextErr.Error()
		return d
	case o.Next == nil:
		switch {
		case o.Requested != "" && o.Requested != o.Recorded:
			d.Action, d.Token, d.Reason = Start, o.Requested, "requested by annotation "+wgv1.AnnotationRotateKey
		case p.Period > 0 && !o.CurrentSince.IsZero() && !o.Now.Before(Due(o.CurrentSince, p)):
			d.Action, d.Token = Start, AutoToken(o.Now)
			d.Reason = fmt.Sprintf("the key is older than --key-rotation-period=%s (in place since %s)", p.Period, o.CurrentSince.UTC().Format(time.RFC3339))
		}
		return d
	}
	n := o.Next
	next := n.PrivateKey.PublicKey()
	d.Token = n.Token
	if n.PrivateKey == o.Current {
		d.Action = Confirm
		if o.Recorded == n.Token {
			d.Action = Finish
		}
		return d
	}
	switch {
	case o.Recorded == n.Token:
		d.Action = Discard
	case o.DeviceKey != nil && *o.DeviceKey == n.PrivateKey:
		d.Action, d.DeviceKey, d.Announce = Promote, n.PrivateKey, next
	case o.Published == next.String():
		d.Action, d.DeviceKey, d.Announce = Switch, n.PrivateKey, next
	case p.PublishTimeout > 0 && o.Now.Sub(n.Started) >= p.PublishTimeout:
		d.Action = RollBack
		d.Reason = fmt.Sprintf("the operator did not publish the new public key %s in MeshPeer %s spec.publicKey within %s (it shows %q); is wgmesh-operator running?",
			next, p.NodeName, p.PublishTimeout, o.Published)
	default:
		d.Action, d.Announce = AwaitPublish, next
	}
	return d
}

// Due is when a key in place since since is rotated with p.Period: up to a
// tenth of the period earlier, by a fraction fixed per node.
func Due(since time.Time, p Policy) time.Time {
	h := fnv.New32a()
	h.Write([]byte(p.NodeName))
	spread := time.Duration(float64(p.Period/10) * float64(h.Sum32()%1000) / 1000)
	return since.Add(p.Period - spread)
}

// AutoToken is the request token of an automatic rotation.
func AutoToken(now time.Time) string {
	return "auto-" + now.UTC().Format("20060102T150405Z")
}
