package endpoint

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Announcement is what the agent publishes on its own Node.
type Announcement struct {
	PublicKey string
	Endpoint  string
	// Candidates is the wgmesh.io/candidates value
	// (wgv1.FormatCandidatesAnnotation of Candidates).
	Candidates string
}

// Publish writes the public-key, endpoint and candidates annotations on
// node when they differ from what the Node already has (an empty Endpoint
// or Candidates removes its annotation). It returns whether it wrote. Only
// these annotations are touched (JSON merge patch), never other fields.
func Publish(ctx context.Context, c client.Client, node *corev1.Node, a Announcement) (bool, error) {
	ep, hasEP := node.Annotations[wgv1.AnnotationEndpoint]
	cs, hasCS := node.Annotations[wgv1.AnnotationCandidates]
	if node.Annotations[wgv1.AnnotationPublicKey] == a.PublicKey && ep == a.Endpoint && hasEP == (a.Endpoint != "") &&
		cs == a.Candidates && hasCS == (a.Candidates != "") {
		return false, nil
	}
	ann := map[string]*string{wgv1.AnnotationPublicKey: &a.PublicKey, wgv1.AnnotationEndpoint: nil, wgv1.AnnotationCandidates: nil}
	if a.Endpoint != "" {
		ann[wgv1.AnnotationEndpoint] = &a.Endpoint
	}
	if a.Candidates != "" {
		ann[wgv1.AnnotationCandidates] = &a.Candidates
	}
	return true, PatchAnnotations(ctx, c, node.Name, ann)
}

// Withdraw removes the annotations the agent wrote (used by --cleanup-on-exit).
func Withdraw(ctx context.Context, c client.Client, nodeName string) error {
	return PatchAnnotations(ctx, c, nodeName, map[string]*string{
		wgv1.AnnotationPublicKey:  nil,
		wgv1.AnnotationEndpoint:   nil,
		wgv1.AnnotationCandidates: nil,
		wgv1.AnnotationKeyRotated: nil,
	})
}

// PatchAnnotations merge-patches only the given annotations of a Node (nil:
// remove), never other fields.
func PatchAnnotations(ctx context.Context, c client.Client, nodeName string, ann map[string]*string) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return err
	}
	node := &corev1.Node{}
	node.Name = nodeName
	if err := c.Patch(ctx, node, client.RawPatch(types.MergePatchType, body)); err != nil {
		return fmt.Errorf("patching annotations of Node %s: %w", nodeName, err)
	}
	return nil
}
