package main

import (
	"archive/tar"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// built is what the archive holds: one image per platform, and over them an
// index when there is more than one.
type built struct {
	name   string
	images []platformImage // in --platform order
	index  v1.ImageIndex   // nil for a single platform
	digest v1.Hash         // of index, else of the one image's manifest
}

type platformImage struct {
	platform v1.Platform
	image    v1.Image
}

// build makes the layers (each --tar or --dir once, however many platforms
// share it) in dir, then the images and the index.
func build(o *options, dir string, log io.Writer) (*built, error) {
	mtime := o.epochTime()
	layers := make([]*fileLayer, len(o.layers))
	for i, src := range o.layers {
		file := filepath.Join(dir, "layer-"+strconv.Itoa(i)+".tar.gz")
		var err error
		layers[i], err = newFileLayer(file, func(tw *tar.Writer) error {
			if src.kind == "dir" {
				return writeDir(tw, src.path, mtime)
			}
			return writeTar(tw, src.path, mtime)
		})
		if err != nil {
			return nil, fmt.Errorf("--%s %s=%s: %w", src.kind, src.platform, src.path, err)
		}
		fmt.Fprintf(log, "hack/image: layer %s=%s: %s, %d bytes\n", src.platform, src.path, layers[i].digest, layers[i].size)
	}

	b := &built{name: o.name}
	for _, p := range o.platforms {
		var adds []mutate.Addendum
		for i, src := range o.layers {
			if src.appliesTo(p) {
				adds = append(adds, mutate.Addendum{
					Layer: layers[i],
					// No host path: the same files from another directory give the same image.
					History: v1.History{Created: v1.Time{Time: mtime}, CreatedBy: "hack/image --" + src.kind},
				})
			}
		}
		img, err := image(o, p, adds)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", p, err)
		}
		b.images = append(b.images, platformImage{platform: p, image: img})
	}

	if len(b.images) == 1 {
		d, err := b.images[0].image.Digest()
		b.digest = d
		return b, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, pi := range b.images {
		p := pi.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        pi.image,
			Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: &p},
		})
	}
	b.index = idx
	d, err := idx.Digest()
	b.digest = d
	return b, err
}

// image is the OCI image of platform p with the given layers and o's config.
func image(o *options, p v1.Platform, adds []mutate.Addendum) (v1.Image, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	cfg := &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Variant:      p.Variant,
		OSVersion:    p.OSVersion,
		Created:      v1.Time{Time: o.epochTime()},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: o.entrypoint,
			Cmd:        o.cmd,
			Env:        o.env,
			WorkingDir: o.workdir,
			User:       o.user,
		},
	}
	if len(o.labels) > 0 {
		cfg.Config.Labels = o.labels
	}
	img, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, adds...)
}
