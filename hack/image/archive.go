package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations naming the image in index.json: containerd's import takes the
// first, else the second; both hold the full reference.
const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// blob is one file under blobs/sha256/.
type blob struct {
	digest v1.Hash
	size   int64
	open   func() (io.ReadCloser, error)
}

func bytesBlob(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// dockerManifest is one entry of the manifest.json that `docker load` reads.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// writeArchive writes b as an OCI image layout in one tar archive: oci-layout,
// index.json (one entry: the image, named by annotations), manifest.json for
// docker load, and the blobs ordered by digest. Every entry is owned 0:0 and
// dated mtime, so the archive is as reproducible as the image.
func writeArchive(out string, b *built, mtime time.Time) error {
	blobs := map[v1.Hash]blob{}
	addRaw := func(raw []byte) v1.Hash {
		h, n, _ := v1.SHA256(bytes.NewReader(raw))
		blobs[h] = blob{digest: h, size: n, open: bytesBlob(raw)}
		return h
	}
	var docker []dockerManifest
	for i, pi := range b.images {
		raw, err := pi.image.RawManifest()
		if err != nil {
			return err
		}
		addRaw(raw)
		cfg, err := pi.image.RawConfigFile()
		if err != nil {
			return err
		}
		dm := dockerManifest{Config: blobPath(addRaw(cfg))}
		layers, err := pi.image.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			d, err := l.Digest()
			if err != nil {
				return err
			}
			size, err := l.Size()
			if err != nil {
				return err
			}
			blobs[d] = blob{digest: d, size: size, open: l.Compressed}
			dm.Layers = append(dm.Layers, blobPath(d))
		}
		// docker load keeps one image per tag: the first platform's.
		if i == 0 {
			dm.RepoTags = []string{b.name}
			docker = append(docker, dm)
		}
	}

	top := v1.Descriptor{
		Digest:      b.digest,
		Annotations: map[string]string{annotationContainerdName: b.name, annotationRefName: b.name},
	}
	if b.index != nil {
		raw, err := b.index.RawManifest()
		if err != nil {
			return err
		}
		addRaw(raw)
		top.MediaType, top.Size = types.OCIImageIndex, int64(len(raw))
	} else {
		img := b.images[0]
		size, err := img.image.Size()
		if err != nil {
			return err
		}
		p := img.platform
		top.MediaType, top.Size, top.Platform = types.OCIManifestSchema1, size, &p
	}
	index, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests:     []v1.Descriptor{top},
	})
	if err != nil {
		return err
	}
	manifestJSON, err := json.Marshal(docker)
	if err != nil {
		return err
	}

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	// Written beside out and renamed: a reader never sees half an archive.
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	file := func(name string, size int64, open func() (io.ReadCloser, error)) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: mtime}); err != nil {
			return err
		}
		r, err := open()
		if err != nil {
			return err
		}
		defer r.Close()
		if n, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		} else if n != size {
			return fmt.Errorf("%s: %d bytes, want %d", name, n, size)
		}
		return nil
	}
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime})
	}
	layout := []byte(`{"imageLayoutVersion":"1.0.0"}`)
	if err := file("oci-layout", int64(len(layout)), bytesBlob(layout)); err != nil {
		return err
	}
	if err := file("index.json", int64(len(index)), bytesBlob(index)); err != nil {
		return err
	}
	if err := file("manifest.json", int64(len(manifestJSON)), bytesBlob(manifestJSON)); err != nil {
		return err
	}
	if err := dir("blobs/"); err != nil {
		return err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return err
	}
	sorted := make([]blob, 0, len(blobs))
	for _, bl := range blobs {
		sorted = append(sorted, bl)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].digest.String() < sorted[j].digest.String() })
	for _, bl := range sorted {
		if err := file(blobPath(bl.digest), bl.size, bl.open); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), out)
}
