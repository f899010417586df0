package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func init() {
	register(Command{
		Name:  "rotate-key",
		Usage: "NODE [--wait] [--timeout 3m]",
		Help: `rotates the node's WireGuard key without downtime: sets the Node annotation
wgmesh.io/rotate-key to a new request token. The node's agent makes a new
key, announces its public key, switches wgmesh0 to it once the operator has
published it in the node's MeshPeer (the other nodes switch from the same
update), makes every peer handshake at once and records the token in
wgmesh.io/key-rotated. With --wait, waits for that record and prints the old
and new public keys, how long it took and the agent's report (every node
peer that was connected handshook with the new key, or which did not);
fails when the agent rolled the rotation back.`,
		Run: runRotateKey,
	})
}

// The agent's Event reasons (agent/keyrotation).
const (
	reasonKeyRotated            = "KeyRotated"
	reasonKeyRotationRolledBack = "KeyRotationRolledBack"
)

// rotateResult is what a finished rotation request shows.
type rotateResult struct {
	Token            string
	OldKey, NewKey   string
	Took             time.Duration
	RolledBack       bool
	Report           string // the agent's Event (KeyRotated, KeyRotationRolledBack)
	AlreadyRequested bool
}

func runRotateKey(env *Env, args []string) error {
	var kf KubeFlags
	fs := NewFlagSet("rotate-key", &kf)
	wait := fs.Bool("wait", false, "wait until the rotation is recorded and print the old and new public keys")
	timeout := fs.Duration("timeout", 3*time.Minute, "with --wait: how long to wait")
	node, err := parseNamed(fs, args, "NODE")
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if err != nil {
		return fmt.Errorf("want exactly one node name: kubectl wgmesh rotate-key NODE [--wait] [--timeout 3m] (%v)", err)
	}
	c, err := kf.Client()
	if err != nil {
		return err
	}
	ctx := context.Background()
	started := env.Now()
	rctx, cancel := context.WithTimeout(ctx, kf.Timeout)
	token, old, pending, err := requestRotation(rctx, c, node, started)
	cancel()
	if err != nil {
		return err
	}
	if pending {
		fmt.Fprintf(env.Out, "node %s: a key rotation is already requested (%s=%s) and not recorded yet; not adding another\n", node, wgmeshv1.AnnotationRotateKey, token)
	} else {
		fmt.Fprintf(env.Out, "node %s: key rotation requested (%s=%s); public key now %s\n", node, wgmeshv1.AnnotationRotateKey, token, old)
	}
	if !*wait {
		fmt.Fprintf(env.Out, "follow it with: kubectl get node %s -o jsonpath='{.metadata.annotations.wgmesh\\.io/key-rotated}'; kubectl get events --field-selector involvedObject.name=%s\n", node, node)
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := waitRotation(wctx, c, node, token, old, env)
	if err != nil {
		return err
	}
	res.Took = env.Now().Sub(started)
	return printRotation(env, node, res)
}

// requestRotation sets wgmesh.io/rotate-key on the Node to a new token
// (unless a request is pending) and returns the token and the node's
// public key as its MeshPeer publishes it.
func requestRotation(ctx context.Context, c client.Client, node string, now time.Time) (token, old string, pending bool, err error) {
	n := &corev1.Node{}
	if err := c.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
		if apierrors.IsNotFound(err) {
			return "", "", false, fmt.Errorf("node %q not found", node)
		}
		return "", "", false, fmt.Errorf("reading node %s: %w", node, err)
	}
	old = publishedKey(ctx, c, n)
	if old == "" {
		return "", "", false, fmt.Errorf("node %s has no WireGuard key yet (no MeshPeer %s and no %s annotation): is the wgmesh agent running on it?",
			node, node, wgmeshv1.AnnotationPublicKey)
	}
	req, done := n.Annotations[wgmeshv1.AnnotationRotateKey], n.Annotations[wgmeshv1.AnnotationKeyRotated]
	if req != "" && req != done {
		return req, old, true, nil
	}
	token = now.UTC().Format("20060102T150405.000Z")
	if token == done {
		token += "-2"
	}
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{wgmeshv1.AnnotationRotateKey: token}}})
	if err := c.Patch(ctx, n, client.RawPatch(types.MergePatchType, body)); err != nil {
		return "", "", false, fmt.Errorf("setting annotation %s on node %s: %w", wgmeshv1.AnnotationRotateKey, node, err)
	}
	return token, old, false, nil
}

// publishedKey is the node's key as peers use it: its MeshPeer's
// spec.publicKey, else the announced annotation.
func publishedKey(ctx context.Context, c client.Client, n *corev1.Node) string {
	mp := &wgmeshv1.MeshPeer{}
	if err := c.Get(ctx, client.ObjectKey{Name: n.Name}, mp); err == nil && mp.Spec.PublicKey != "" {
		return string(mp.Spec.PublicKey)
	}
	return n.Annotations[wgmeshv1.AnnotationPublicKey]
}

// waitRotation polls the Node and its MeshPeer until the agent records
// token, printing each phase as it is seen.
func waitRotation(ctx context.Context, c client.Client, node, token, old string, env *Env) (rotateResult, error) {
	res := rotateResult{Token: token, OldKey: old}
	var announced, published string
	start := env.Now()
	since := func() string { return fmt.Sprintf("+%5.2fs", env.Now().Sub(start).Seconds()) }
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		n := &corev1.Node{}
		if err := c.Get(ctx, client.ObjectKey{Name: node}, n); err != nil && ctx.Err() == nil {
			return res, fmt.Errorf("reading node %s: %w", node, err)
		}
		if a := n.Annotations[wgmeshv1.AnnotationPublicKey]; a != "" && a != old && a != announced {
			announced = a
			fmt.Fprintf(env.Out, "  %s  the agent announced the new public key %s\n", since(), a)
		}
		if p := publishedKey(ctx, c, n); p != "" && p != old && p != published {
			published = p
			fmt.Fprintf(env.Out, "  %s  the operator published it in MeshPeer %s: peers and the node switch now\n", since(), node)
		}
		if n.Annotations[wgmeshv1.AnnotationKeyRotated] == token {
			res.NewKey = publishedKey(ctx, c, n)
			res.RolledBack = res.NewKey == old
			res.Report = rotationReport(ctx, c, node, token)
			return res, nil
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("node %s has not recorded rotation %s (%s) in time: announced key %q, MeshPeer key %q (old %s); see the agent's log and kubectl get events --field-selector involvedObject.name=%s",
				node, token, wgmeshv1.AnnotationKeyRotated, n.Annotations[wgmeshv1.AnnotationPublicKey], publishedKey(context.Background(), c, n), old, node)
		case <-tick.C:
		}
	}
}

// rotationReport is the note of the agent's Event about token (it is
// written asynchronously: waited for briefly).
func rotationReport(ctx context.Context, c client.Client, node, token string) string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var evs eventsv1.EventList
		err := c.List(ctx, &evs, client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("regarding.name", node)})
		if err != nil {
			err = c.List(ctx, &evs) // no field selector support: all of them
		}
		if err == nil {
			var notes []string
			for _, ev := range evs.Items {
				if ev.Regarding.Kind == "Node" && ev.Regarding.Name == node && (ev.Reason == reasonKeyRotated || ev.Reason == reasonKeyRotationRolledBack) &&
					(strings.Contains(ev.Note, "(request "+token+")") || strings.Contains(ev.Note, "rotation "+token+" ")) {
					notes = append(notes, ev.Note)
				}
			}
			if len(notes) > 0 {
				sort.Strings(notes)
				return notes[0]
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return ""
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func printRotation(env *Env, node string, r rotateResult) error {
	if r.RolledBack {
		return errors.New("node " + node + ": key rotation " + r.Token + " rolled back, public key " + r.OldKey + " stays: " + orUnknown(r.Report))
	}
	fmt.Fprintf(env.Out, "node %s: key rotated in %s\n  old public key: %s\n  new public key: %s\n", node, r.Took.Round(time.Millisecond), r.OldKey, r.NewKey)
	if r.Report != "" {
		fmt.Fprintf(env.Out, "  agent: %s\n", r.Report)
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "(the agent's Event was not found)"
	}
	return s
}
