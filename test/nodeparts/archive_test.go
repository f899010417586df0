package nodeparts

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// image is what the tests check of an image in an OCI archive.
type image struct {
	platform   string // os/architecture of its config
	entrypoint []string
	cmd        []string
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform"`
}

// Both names an importer may read a full image reference from: containerd's
// own, and the OCI one (which some tools set to the tag only).
var refAnnotations = []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"}

// readArchive finds ref in the OCI archive's index.json and reads its image
// config. Layers are not read.
func readArchive(file, ref string) (image, error) {
	blobs, err := smallFiles(file)
	if err != nil {
		return image{}, err
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil {
		return image{}, fmt.Errorf("%s: index.json: %v", file, err)
	}
	var found *descriptor
	var names []string
	for i, d := range index.Manifests {
		for _, a := range refAnnotations {
			if v := d.Annotations[a]; v != "" {
				names = append(names, a+"="+v)
				if v == ref {
					found = &index.Manifests[i]
				}
			}
		}
	}
	if found == nil {
		return image{}, fmt.Errorf("%s: index.json names no image %s (it names %v)", file, ref, names)
	}
	blob := func(d descriptor, v any) error {
		raw, ok := blobs[path.Join("blobs", strings.Replace(d.Digest, ":", "/", 1))]
		if !ok {
			return fmt.Errorf("%s: blob %s (%s) is missing", file, d.Digest, d.MediaType)
		}
		return json.Unmarshal(raw, v)
	}
	// An index (multi-platform) holds the manifest for linux/amd64.
	for strings.HasSuffix(found.MediaType, "image.index.v1+json") || strings.HasSuffix(found.MediaType, "manifest.list.v2+json") {
		var sub struct {
			Manifests []descriptor `json:"manifests"`
		}
		if err := blob(*found, &sub); err != nil {
			return image{}, err
		}
		found = nil
		for i, d := range sub.Manifests {
			if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == "amd64" {
				found = &sub.Manifests[i]
			}
		}
		if found == nil {
			return image{}, fmt.Errorf("%s: %s has no linux/amd64 manifest", file, ref)
		}
	}
	var manifest struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := blob(*found, &manifest); err != nil {
		return image{}, err
	}
	var config struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Config       struct {
			Entrypoint []string `json:"Entrypoint"`
			Cmd        []string `json:"Cmd"`
		} `json:"config"`
	}
	if err := blob(manifest.Config, &config); err != nil {
		return image{}, err
	}
	if len(manifest.Layers) == 0 {
		return image{}, fmt.Errorf("%s: %s has no layers", file, ref)
	}
	return image{platform: config.OS + "/" + config.Architecture, entrypoint: config.Config.Entrypoint, cmd: config.Config.Cmd}, nil
}

// smallFiles reads the files of a tar archive up to 4 MiB (index.json,
// manifests, configs), by cleaned path.
func smallFiles(file string) (map[string][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", file, err)
		}
		if h.Typeflag != tar.TypeReg || h.Size > 4<<20 {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %v", file, h.Name, err)
		}
		out[path.Clean(strings.TrimPrefix(h.Name, "./"))] = b
	}
}
