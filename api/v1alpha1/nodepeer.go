package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// IsNodePeer reports whether a MeshPeer is a node's, written by the
// operator: it is named after the node, spec.nodeName names the node, and
// its controller owner reference is that Node, with the Node's UID. Every
// other MeshPeer is external, whatever its nodeName says. nodes tells the
// UID of the Node with a name, if it exists; with nodes nil
// the UID is not checked (the garbage collector deletes a MeshPeer whose
// owner UID does not exist).
func IsNodePeer(mp *MeshPeer, nodes func(name string) (types.UID, bool)) bool {
	ref := metav1.GetControllerOf(mp)
	if mp.Spec.NodeName == "" || mp.Name != mp.Spec.NodeName || ref == nil ||
		ref.APIVersion != "v1" || ref.Kind != "Node" || ref.Name != mp.Spec.NodeName {
		return false
	}
	if nodes == nil {
		return true
	}
	uid, ok := nodes(ref.Name)
	return ok && uid == ref.UID
}

// KeyOwner picks, among MeshPeers that announce one public key, the one
// that keeps it: the node peer that published the key first (earliest
// wgmesh.io/public-key-since). It returns "" when there is none or a tie;
// then all of them are left out. A copied key thus never evicts the node
// that had it first, and an external peer never wins over a node.
func KeyOwner(group []*MeshPeer, nodes func(name string) (types.UID, bool)) string {
	var first []*MeshPeer
	var firstSince time.Time
	for _, mp := range group {
		if !IsNodePeer(mp, nodes) {
			continue
		}
		since, err := time.Parse(time.RFC3339Nano, mp.Annotations[AnnotationPublicKeySince])
		if err != nil {
			continue
		}
		switch {
		case len(first) == 0 || since.Before(firstSince):
			first, firstSince = []*MeshPeer{mp}, since
		case since.Equal(firstSince):
			first = append(first, mp)
		}
	}
	if len(first) != 1 {
		return ""
	}
	return first[0].Name
}
