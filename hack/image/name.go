package main

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
)

// fullReference returns s as containerd and the kubelet name images:
// registry/repository:tag, with Docker Hub's docker.io/library/ filled in and
// the tag latest when none is given. containerd's import takes the name from
// index.json as it is, and the kubelet looks images up by their full name, so
// a short name (pause:3.10) would import but never be found.
func fullReference(s string) (string, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return "", fmt.Errorf("--name %q: %w", s, err)
	}
	tag, ok := ref.(name.Tag)
	if !ok {
		return "", fmt.Errorf("--name %q: want a tag (registry/repository:tag), not a digest: the digest is the image's own", s)
	}
	registry := tag.Context().RegistryStr()
	if registry == name.DefaultRegistry {
		registry = "docker.io"
	}
	return registry + "/" + tag.Context().RepositoryStr() + ":" + tag.TagStr(), nil
}
