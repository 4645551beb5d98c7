// Command image builds fledge's container image without Docker: the static
// binary of ./cmd/fledge alone in one layer, written under bin/ as a docker
// archive and an OCI image layout, and pushed to a registry on request.
// `make image` runs it; its -help says what it makes.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	module = "github.com/fledge-dev/fledge"
	source = "https://" + module
	// DefaultImage is the name manifests/kustomization.yaml renders.
	defaultImage = "ghcr.io/fledge-dev/fledge:dev"
	// The image's only file, and who runs it: the nonroot user of
	// distroless images, which manifests/deployment.yaml also asks for.
	entrypoint = "/fledge"
	user       = "65532:65532"
	// The outputs, under the checkout's bin/.
	archiveName = "fledge-image.tar"
	layoutName  = "fledge-image"
)

// options are the flags.
type options struct {
	image   string
	push    string
	arch    string
	binary  string
	version string
}

func main() {
	var o options
	fs := flag.CommandLine
	fs.StringVar(&o.image, "image", defaultImage, "the image's name, its tag in bin/"+archiveName+" and bin/"+layoutName+"/ (the default is what manifests/kustomization.yaml renders)")
	fs.StringVar(&o.push, "push", "", "also push the image to this REGISTRY/REPOSITORY:TAG (credentials from ~/.docker/config.json; plain HTTP to localhost, loopback and private 10/8, 172.16/12, 192.168/16 addresses, HTTPS to any other)")
	fs.StringVar(&o.arch, "arch", runtime.GOARCH, "the GOARCH to build ./cmd/fledge for and the image's architecture; the default is this machine's")
	fs.StringVar(&o.binary, "binary", "", "use this already built linux binary of ./cmd/fledge instead of building it; it must be static and for -arch")
	fs.StringVar(&o.version, "version", "", "the org.opencontainers.image.version label (default: git describe --tags --always --dirty, or \"unknown\" outside git)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `image builds fledge's container image without Docker and writes it under bin/.

It builds ./cmd/fledge as a static binary (CGO_ENABLED=0 GOOS=linux
GOARCH=<-arch> go build -trimpath -ldflags "-s -w"), or takes -binary, and makes
an image of one layer holding only that binary at /fledge (mode 0555, owner
0:0) on an empty base: no shell, no libc, nothing else (the binary carries its
own CA roots, golang.org/x/crypto/x509roots/fallback, for HTTPS to Prometheus).
The image runs /fledge as user %s and carries the OCI labels title,
description, version (-version), revision (the git commit), source, and
licenses only if the checkout has a LICENSE it recognises (Apache-2.0, MIT).

The same binary and commit give the same digest: the file's time is
1970-01-01 and the image's creation time is SOURCE_DATE_EPOCH if set, else the
last commit's time, else 1970-01-01.

It writes, each replacing the old one once the new one is complete:
  bin/%s  a docker archive tagged -image: docker load -i, kind load image-archive
  bin/%s/    an OCI image layout: crane push bin/%s REF
With -push it also pushes the image (HTTPS, or plain HTTP to a registry on
this machine or a private address), then prints its name, digest, sizes and
what it wrote. make image [IMAGE=NAME] [PUSH=REF] runs it.

Flags:
`, user, archiveName, layoutName, layoutName)
		fs.PrintDefaults()
	}
	flag.Parse()
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "image: unexpected argument %q: every input is a flag (see -help)\n", fs.Arg(0))
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	tag, err := name.NewTag(o.image)
	if err != nil {
		return fmt.Errorf("-image %q: %w; want REGISTRY/REPOSITORY:TAG, such as %s", o.image, err, defaultImage)
	}
	var pushTo name.Tag
	if o.push != "" {
		if pushTo, err = pushTag(o.push); err != nil {
			return err
		}
	}
	root, err := checkout()
	if err != nil {
		return err
	}
	m, err := gather(ctx, root, o)
	if err != nil {
		return err
	}

	bin, cleanup, err := binary(ctx, root, o)
	defer cleanup()
	if err != nil {
		return err
	}
	img, err := build(bin, m)
	if err != nil {
		return err
	}
	s, err := summarize(tag, img)
	if err != nil {
		return err
	}

	dir := filepath.Join(root, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	archive := filepath.Join(dir, archiveName)
	if err := writeArchive(archive, tag, img); err != nil {
		return err
	}
	oci := filepath.Join(dir, layoutName)
	if err := writeLayout(oci, tag, img); err != nil {
		return err
	}
	s.wrote = []string{relative(archive), relative(oci) + "/"}

	if o.push != "" {
		if err := push(ctx, pushTo, img, s.digest); err != nil {
			return err
		}
		s.pushed = pushTo.String() + "@" + s.digest.String()
	}
	s.print(out, m)
	return nil
}

// meta is what the image says about itself besides its binary.
type meta struct {
	arch     string
	created  time.Time
	version  string
	revision string // "" outside git: no revision label
	licenses string // "" without a recognised LICENSE: no licenses label
}

// gather reads the image's metadata from the environment and the checkout.
func gather(ctx context.Context, root string, o options) (meta, error) {
	m := meta{arch: o.arch, version: o.version, created: time.Unix(0, 0).UTC()}
	if m.arch == "" {
		return m, errors.New("-arch is empty: give a GOARCH such as amd64 or arm64")
	}
	m.revision, _ = git(ctx, root, "rev-parse", "HEAD")
	if m.version == "" {
		m.version = "unknown"
		if v, err := git(ctx, root, "describe", "--tags", "--always", "--dirty"); err == nil {
			m.version = v
		}
	}
	if epoch, ok := os.LookupEnv("SOURCE_DATE_EPOCH"); ok && epoch != "" {
		sec, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil || sec < 0 {
			return m, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want whole seconds since 1970-01-01 UTC, such as $(git log -1 --format=%%ct)", epoch)
		}
		m.created = time.Unix(sec, 0).UTC()
	} else if ct, err := git(ctx, root, "log", "-1", "--format=%ct"); err == nil {
		if sec, err := strconv.ParseInt(ct, 10, 64); err == nil {
			m.created = time.Unix(sec, 0).UTC()
		}
	}
	m.licenses = license(root)
	return m, nil
}

// git runs git in the checkout and returns its trimmed output.
func git(ctx context.Context, root string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", root}, args...)...)
	b, err := cmd.Output()
	return strings.TrimSpace(string(b)), err
}

// license is the SPDX identifier of the checkout's LICENSE, or "" when it
// has none or one this program does not recognise: a wrong licenses label
// is worse than none.
func license(root string) string {
	for _, f := range []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		text := string(b)
		switch {
		case strings.Contains(text, "Apache License") && strings.Contains(text, "Version 2.0"):
			return "Apache-2.0"
		case strings.Contains(text, "MIT License") || strings.Contains(text, "Permission is hereby granted, free of charge"):
			return "MIT"
		}
		return ""
	}
	return ""
}

// checkout is the root of the fledge checkout around the working directory.
func checkout() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for ; ; d = filepath.Dir(d) {
		if mod, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(string(mod), "module "+module+"\n") {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", errors.New("the working directory is not inside the fledge checkout: run make image (or go run ./hack/image) from it")
		}
	}
}

// binary returns the manager's binary: -binary, checked, or one built now
// into a temporary directory that cleanup removes.
func binary(ctx context.Context, root string, o options) (bin []byte, cleanup func(), err error) {
	cleanup = func() {}
	path := o.binary
	if path == "" {
		tmp, err := os.MkdirTemp("", "fledge-image-")
		if err != nil {
			return nil, cleanup, err
		}
		cleanup = func() { os.RemoveAll(tmp) }
		path = filepath.Join(tmp, "fledge")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", path, "./cmd/fledge")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.arch)
		var said bytes.Buffer
		cmd.Stdout, cmd.Stderr = os.Stderr, io.MultiWriter(os.Stderr, &said)
		if err := cmd.Run(); err != nil {
			if strings.Contains(said.String(), "unsupported GOOS/GOARCH") {
				return nil, cleanup, fmt.Errorf("-arch %s: go cannot build for linux/%s; go tool dist list shows the linux GOARCH values", o.arch, o.arch)
			}
			return nil, cleanup, fmt.Errorf("build ./cmd/fledge for linux/%s: %w; go build says why above", o.arch, err)
		}
	}
	if err := static(path, o.arch); err != nil {
		if o.binary == "" {
			return nil, cleanup, fmt.Errorf("the built ./cmd/fledge: %w", err)
		}
		return nil, cleanup, fmt.Errorf("-binary %s: %w; build one with CGO_ENABLED=0 GOOS=linux GOARCH=%s go build -trimpath -ldflags \"-s -w\" ./cmd/fledge, or leave -binary out", o.binary, err, o.arch)
	}
	bin, err = os.ReadFile(path)
	if err != nil {
		return nil, cleanup, fmt.Errorf("read %s: %w", path, err)
	}
	return bin, cleanup, nil
}

// machines are the ELF machines of the GOARCH values images are published for.
var machines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM, "386": elf.EM_386,
	"ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV, "loong64": elf.EM_LOONGARCH,
}

// static checks that path is a linux ELF binary for arch that needs no
// loader and no shared library: the image has neither.
func static(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("not a linux (ELF) binary: %w", err)
	}
	defer f.Close()
	if want, ok := machines[arch]; ok && f.Machine != want {
		return fmt.Errorf("built for %s, not %s (-arch)", f.Machine, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked (it names a program interpreter), and the image has no libc")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("needs shared libraries %v, and the image has none", libs)
	}
	return nil
}

// build makes the image: bin at /fledge in the only layer of an empty base,
// with m's config. Nothing in it depends on the time it is built.
func build(bin []byte, m meta) (v1.Image, error) {
	gz, err := layerBlob(bin)
	if err != nil {
		return nil, err
	}
	// Docker's media types (go-containerregistry's default), which every
	// registry and runtime reads: a docker archive holds no manifest, and
	// read back it is given these, so the archive, the layout and the
	// pushed image all have one digest.
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.ConfigFile(empty.Image, configFile(m))
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: m.created}, CreatedBy: "go run ./hack/image: " + entrypoint + ", the static binary of ./cmd/fledge"},
	})
}

// layerBlob is the gzipped tar of one entry, bin at fledge, with fixed
// owner, mode and time, so that the same binary gives the same blob.
func layerBlob(bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	// Best compression: built once, pulled by every node.
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(entrypoint, "/"),
		Mode:     0o555,
		Size:     int64(len(bin)),
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// configFile is the image's configuration: what runs, as whom, and the
// OCI labels.
func configFile(m meta) *v1.ConfigFile {
	labels := map[string]string{
		"org.opencontainers.image.title":       "fledge",
		"org.opencontainers.image.description": "fledge's in-cluster manager: progressive delivery for plain Kubernetes Deployments",
		"org.opencontainers.image.version":     m.version,
		"org.opencontainers.image.source":      source,
	}
	if m.revision != "" {
		labels["org.opencontainers.image.revision"] = m.revision
	}
	if m.licenses != "" {
		labels["org.opencontainers.image.licenses"] = m.licenses
	}
	return &v1.ConfigFile{
		Architecture: m.arch,
		OS:           "linux",
		Created:      v1.Time{Time: m.created},
		Config: v1.Config{
			Entrypoint: []string{entrypoint},
			User:       user,
			Labels:     labels,
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
}

// writeArchive writes img as a docker archive tagged tag, replacing path
// only once it is complete.
func writeArchive(path string, tag name.Tag, img v1.Image) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tarball.WriteToFile(tmp.Name(), tag, img); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// writeLayout writes img as an OCI image layout at dir, naming it tag the
// way BuildKit's OCI exporter does (the tag in ref.name, the whole name in
// containerd's annotation), and replaces the old layout once it is complete.
func writeLayout(dir string, tag name.Tag, img v1.Image) error {
	parent := filepath.Dir(dir)
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+"-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("write %s: %w", dir, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
		"io.containerd.image.name":          tag.Name(),
	})); err != nil {
		return fmt.Errorf("write %s: %w", dir, err)
	}
	// Readable by all, as bin/ is (the layout is written 0600 and 0755).
	if err := filepath.WalkDir(tmp, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(path, mode)
	}); err != nil {
		return err
	}
	// A directory cannot be renamed over a full one: move the old one
	// aside first, and remove it once the new one is in place.
	old := tmp + ".old"
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	return os.RemoveAll(old)
}

// pushTag parses -push. go-containerregistry speaks plain HTTP to
// localhost:PORT, 127.0.0.1 and private addresses by itself; a loopback
// registry it would still try over HTTPS (localhost without a port,
// 127.0.0.2) is made plain HTTP too.
func pushTag(ref string) (name.Tag, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return tag, fmt.Errorf("-push %q: %w; want REGISTRY/REPOSITORY:TAG, such as registry.example.com/fledge:v1", ref, err)
	}
	if tag.Scheme() == "https" && loopback(tag.RegistryStr()) {
		return name.NewTag(ref, name.Insecure)
	}
	return tag, nil
}

// loopback reports whether a registry's host is this machine.
func loopback(registry string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// push writes img to tag and checks that the registry holds it at digest.
func push(ctx context.Context, tag name.Tag, img v1.Image, digest v1.Hash) error {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	if err := remote.Write(tag, img, opts...); err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
			return fmt.Errorf("-push %s: %w; credentials come from ~/.docker/config.json: docker login %s (or crane auth login)", tag, err, tag.RegistryStr())
		}
		return fmt.Errorf("-push %s: %w", tag, err)
	}
	desc, err := remote.Head(tag, opts...)
	if err != nil {
		return fmt.Errorf("-push %s: pushed, but reading it back failed: %w", tag, err)
	}
	if desc.Digest != digest {
		return fmt.Errorf("-push %s: the registry holds %s, not the pushed %s", tag, desc.Digest, digest)
	}
	return nil
}

// summary is what the program prints.
type summary struct {
	name         string
	digest       v1.Hash
	compressed   int64 // what a pull downloads: manifest, config, layer
	uncompressed int64 // the layer's tar
	wrote        []string
	pushed       string
}

func summarize(tag name.Tag, img v1.Image) (summary, error) {
	s := summary{name: tag.String()}
	var err error
	if s.digest, err = img.Digest(); err != nil {
		return s, err
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return s, err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return s, err
	}
	s.compressed = int64(len(manifest) + len(config))
	layers, err := img.Layers()
	if err != nil {
		return s, err
	}
	for _, l := range layers {
		size, err := l.Size()
		if err != nil {
			return s, err
		}
		s.compressed += size
		rc, err := l.Uncompressed()
		if err != nil {
			return s, err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return s, err
		}
		s.uncompressed += n
	}
	return s, nil
}

func (s summary) print(w io.Writer, m meta) {
	fmt.Fprintf(w, "image   %s (linux/%s, version %s)\n", s.name, m.arch, m.version)
	fmt.Fprintf(w, "digest  %s\n", s.digest)
	fmt.Fprintf(w, "size    %s compressed, %s uncompressed: one layer, %s alone\n", megabytes(s.compressed), megabytes(s.uncompressed), entrypoint)
	fmt.Fprintf(w, "wrote   %s (docker load -i, kind load image-archive)\n", s.wrote[0])
	fmt.Fprintf(w, "        %s (OCI image layout)\n", s.wrote[1])
	if s.pushed != "" {
		fmt.Fprintf(w, "pushed  %s\n", s.pushed)
	}
}

func megabytes(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// relative is path relative to the working directory when it is below it.
func relative(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	if r, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}
