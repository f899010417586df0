package image_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// archive is an OCI image archive read whole into memory: every regular
// file by name, in the order of the tar.
type archive struct {
	file  string
	names []string
	files map[string][]byte
}

func readArchive(file string) (*archive, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a := &archive{file: file, files: map[string][]byte{}}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return a, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		a.names = append(a.names, hdr.Name)
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if a.files[hdr.Name], err = io.ReadAll(tr); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", file, hdr.Name, err)
		}
	}
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	} `json:"platform"`
}

type index struct {
	MediaType string       `json:"mediaType"`
	Manifests []descriptor `json:"manifests"`
}

type manifest struct {
	MediaType string       `json:"mediaType"`
	Config    descriptor   `json:"config"`
	Layers    []descriptor `json:"layers"`
}

type imageConfig struct {
	OS           string    `json:"os"`
	Architecture string    `json:"architecture"`
	Created      time.Time `json:"created"`
	Config       struct {
		Entrypoint []string          `json:"Entrypoint"`
		Cmd        []string          `json:"Cmd"`
		Env        []string          `json:"Env"`
		User       string            `json:"User"`
		WorkingDir string            `json:"WorkingDir"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// blob returns the blob d points at, checking its size and presence.
func (a *archive) blob(d descriptor) ([]byte, error) {
	name := "blobs/" + strings.Replace(d.Digest, ":", "/", 1)
	b, ok := a.files[name]
	if !ok {
		return nil, fmt.Errorf("%s: blob %s (%s) is missing", a.file, d.Digest, d.MediaType)
	}
	if int64(len(b)) != d.Size {
		return nil, fmt.Errorf("%s: blob %s has %d bytes, its descriptor says %d", a.file, d.Digest, len(b), d.Size)
	}
	return b, nil
}

func (a *archive) json(d descriptor, v any) error {
	b, err := a.blob(d)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: blob %s: %w", a.file, d.Digest, err)
	}
	return nil
}

// entry is one file of a layer.
type entry struct {
	hdr  tar.Header
	body []byte
}

// layerEntries reads a gzip-compressed layer blob.
func (a *archive) layerEntries(d descriptor) ([]entry, error) {
	b, err := a.blob(d)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", d.Digest, err)
	}
	var entries []entry
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return entries, nil
		}
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", d.Digest, err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %s: %w", d.Digest, hdr.Name, err)
		}
		entries = append(entries, entry{hdr: *hdr, body: body})
	}
}
