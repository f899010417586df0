package keyrotation

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/wgmesh/wgmesh/agent/endpoint"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// ClientAPI is API through controller-runtime: the MeshPeer from the
// agent's cache, Node patches and Events through its client and recorder.
type ClientAPI struct {
	NodeName string
	Reader   client.Reader
	Client   client.Client
	Events   recorder.EventRecorder
}

// OwnMeshPeer implements API.
func (a ClientAPI) OwnMeshPeer(ctx context.Context) (*wgv1.MeshPeer, error) {
	mp := &wgv1.MeshPeer{}
	err := a.Reader.Get(ctx, client.ObjectKey{Name: a.NodeName}, mp)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return mp, nil
}

// PatchNodeAnnotations implements API.
func (a ClientAPI) PatchNodeAnnotations(ctx context.Context, ann map[string]*string) error {
	return endpoint.PatchAnnotations(ctx, a.Client, a.NodeName, ann)
}

// Event implements API.
func (a ClientAPI) Event(node *corev1.Node, eventType, reason, message string) {
	if a.Events != nil {
		a.Events.Eventf(node, nil, eventType, reason, "RotateKey", "%s", message)
	}
}

var _ API = ClientAPI{}
