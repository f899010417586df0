// Command image assembles an OCI image from files, without Docker: static
// binaries laid out in a directory, or an existing rootfs tarball (debootstrap
// output), become layers; the result is an OCI image layout written as one tar
// archive (oci-layout, index.json, blobs/sha256/...) plus a docker-style
// manifest.json, so that `ctr -n k8s.io images import`, `kind load
// image-archive` and `docker load` all accept it.
//
// The output is byte-reproducible: tar entries in a fixed order, owners 0:0
// for --dir layers, every timestamp set to --epoch, deterministic gzip, and no
// time taken from the clock.
//
//	go -C hack/image run . --name ghcr.io/wgmesh/wgmesh:0.1.0 \
//	  --platform linux/amd64 --platform linux/arm64 \
//	  --dir linux/amd64=rootfs-amd64 --dir linux/arm64=rootfs-arm64 \
//	  --env PATH=/usr/local/bin:/usr/bin:/bin --cmd '["wgmesh-agent"]' \
//	  --out wgmesh.oci.tar --print-digest
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hack/image:", err)
		os.Exit(1)
	}
}

// run parses args, builds the image and writes the archive; stdout gets only
// the digest (with --print-digest), stderr the progress.
func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err == flag.ErrHelp {
		return nil
	}
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "hack-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	top, err := build(o, tmp, stderr)
	if err != nil {
		return err
	}
	if err := writeArchive(o.out, top, o.epochTime()); err != nil {
		return fmt.Errorf("writing %s: %w", o.out, err)
	}
	fmt.Fprintf(stderr, "hack/image: %s %s -> %s\n", top.name, top.digest, o.out)
	if o.printDigest {
		fmt.Fprintln(stdout, top.digest)
	}
	return nil
}
