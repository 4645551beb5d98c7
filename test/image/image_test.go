// Package image_test checks `make image` end to end: the target builds the
// manager's image, pushes it to a real registry (the CNCF distribution
// registry of `make tools`), and the image pulled back is the one the
// manifests run: /fledge alone, static, as 65532:65532, with the same
// digest as the docker archive and the OCI layout written under bin/.
package image_test

import (
	"archive/tar"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	// The name `make image` gives by default, which
	// manifests/kustomization.yaml renders.
	imageName = "ghcr.io/fledge-dev/fledge:dev"
	// maxCompressed bounds what a pull of the image downloads. Measured:
	// 14.1 MB (the 44.0 MB stripped binary, gzipped at best compression).
	// The bound leaves 40% for the manager to grow, and is crossed by an
	// unstripped binary (27.5 MB gzipped) or any distribution base with a
	// shell and libc (debian-slim adds about 28 MB).
	maxCompressed = 20_000_000
)

func TestMakeImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the manager's image and runs a registry")
	}
	root := checkout(t)
	registry := startRegistry(t, filepath.Join(root, "bin", "registry"))
	pushTo := registry + "/fledge:test"

	versionBefore := git(t, root, "describe", "--tags", "--always", "--dirty")
	start := time.Now()
	cmd := exec.Command("make", "-C", root, "image", "PUSH="+pushTo)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "make image:\n%s", out)
	t.Logf("make image PUSH=%s in %s:\n%s", pushTo, time.Since(start).Round(time.Millisecond), out)
	versions := []string{versionBefore, git(t, root, "describe", "--tags", "--always", "--dirty")}

	said := regexp.MustCompile(`(?m)^digest +(sha256:[0-9a-f]{64})$`).FindSubmatch(out)
	require.NotNil(t, said, "make image printed no digest line")
	digest := string(said[1])
	assert.Contains(t, string(out), "\npushed  "+pushTo+"@"+digest+"\n")

	ref, err := name.NewTag(pushTo)
	require.NoError(t, err)
	pulled, err := remote.Image(ref)
	require.NoError(t, err)
	pulledDigest, err := pulled.Digest()
	require.NoError(t, err)
	assert.Equal(t, digest, pulledDigest.String(), "the pushed image's digest is the one make image printed")

	t.Run("config", func(t *testing.T) {
		cf, err := pulled.ConfigFile()
		require.NoError(t, err)
		assert.Equal(t, "65532:65532", cf.Config.User)
		assert.Equal(t, []string{"/fledge"}, cf.Config.Entrypoint)
		assert.Empty(t, cf.Config.Cmd, "no Cmd: nothing for a shell to run")
		assert.Empty(t, cf.Config.Shell)
		assert.Equal(t, "linux", cf.OS)
		assert.Equal(t, runtime.GOARCH, cf.Architecture, "make image builds for this machine's architecture")
		assert.Equal(t, created(t, root), cf.Created.UTC(), "created at SOURCE_DATE_EPOCH or the last commit, not at build time")

		labels := cf.Config.Labels
		assert.Equal(t, "fledge", labels["org.opencontainers.image.title"])
		assert.Contains(t, versions, labels["org.opencontainers.image.version"], "git describe --tags --always --dirty")
		assert.Equal(t, git(t, root, "rev-parse", "HEAD"), labels["org.opencontainers.image.revision"])
		assert.Equal(t, "https://github.com/fledge-dev/fledge", labels["org.opencontainers.image.source"])
		assert.NotEmpty(t, labels["org.opencontainers.image.description"])
		if _, err := os.Stat(filepath.Join(root, "LICENSE")); errors.Is(err, os.ErrNotExist) {
			assert.NotContains(t, labels, "org.opencontainers.image.licenses", "the checkout has no LICENSE")
		}
	})

	// The one layer holds one file: /fledge, and so no shell (no bin/sh).
	layers, err := pulled.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	bin := filepath.Join(t.TempDir(), "fledge")
	hdrs := extract(t, layers[0], bin)
	require.Len(t, hdrs, 1, "the layer's entries: %v", names(hdrs))
	h := hdrs[0]
	assert.Equal(t, "fledge", h.Name)
	assert.Equal(t, byte(tar.TypeReg), h.Typeflag)
	assert.Equal(t, int64(0o555), h.Mode)
	assert.Equal(t, 0, h.Uid)
	assert.Equal(t, 0, h.Gid)
	assert.Equal(t, time.Unix(0, 0).UTC(), h.ModTime.UTC(), "a fixed time: the same binary gives the same layer")

	t.Run("size", func(t *testing.T) {
		manifest, err := pulled.Manifest()
		require.NoError(t, err)
		raw, err := pulled.RawManifest()
		require.NoError(t, err)
		compressed := int64(len(raw)) + manifest.Config.Size
		for _, l := range manifest.Layers {
			compressed += l.Size
		}
		t.Logf("compressed %d bytes (%.1f MB; bound %.1f MB), uncompressed %d bytes (%.1f MB): %.0f%%",
			compressed, float64(compressed)/1e6, float64(maxCompressed)/1e6, h.Size, float64(h.Size)/1e6, 100*float64(compressed)/float64(h.Size))
		assert.Less(t, compressed, int64(maxCompressed))
	})

	t.Run("the archive and the layout hold the pushed image", func(t *testing.T) {
		archive := filepath.Join(root, "bin", "fledge-image.tar")
		tag, err := name.NewTag(imageName)
		require.NoError(t, err)
		fromArchive, err := tarball.ImageFromPath(archive, &tag)
		require.NoError(t, err)
		assert.Equal(t, digest, digestOf(t, fromArchive), "bin/fledge-image.tar")
		assert.Equal(t, []string{imageName}, repoTags(t, archive), "bin/fledge-image.tar's manifest.json RepoTags")

		index, err := layout.ImageIndexFromPath(filepath.Join(root, "bin", "fledge-image"))
		require.NoError(t, err)
		im, err := index.IndexManifest()
		require.NoError(t, err)
		require.Len(t, im.Manifests, 1)
		assert.Equal(t, digest, im.Manifests[0].Digest.String(), "bin/fledge-image/index.json")
		assert.Equal(t, map[string]string{
			"org.opencontainers.image.ref.name": "dev",
			"io.containerd.image.name":          imageName,
		}, im.Manifests[0].Annotations)
		fromLayout, err := index.Image(im.Manifests[0].Digest)
		require.NoError(t, err)
		assert.Equal(t, digest, digestOf(t, fromLayout), "the image in bin/fledge-image/")
	})

	t.Run("the binary is static", func(t *testing.T) {
		f, err := elf.Open(bin)
		require.NoError(t, err)
		defer f.Close()
		for _, p := range f.Progs {
			assert.NotEqual(t, elf.PT_INTERP, p.Type, "a program interpreter (the image has no libc)")
		}
		libs, err := f.ImportedLibraries()
		require.NoError(t, err)
		assert.Empty(t, libs, "DT_NEEDED libraries (the image has none)")
	})

	t.Run("the binary runs", func(t *testing.T) {
		if runtime.GOOS != "linux" {
			t.Skipf("the image's binary is for linux, this is %s", runtime.GOOS)
		}
		out, err := exec.Command(bin, "--help").CombinedOutput()
		require.NoError(t, err, "/fledge --help:\n%s", out)
		assert.Contains(t, string(out), "fledge is the in-cluster manager")
	})
}

// checkout is the root of the fledge checkout around the test's directory.
func checkout(t *testing.T) string {
	t.Helper()
	d, err := os.Getwd()
	require.NoError(t, err)
	for ; ; d = filepath.Dir(d) {
		if mod, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			strings.HasPrefix(string(mod), "module github.com/fledge-dev/fledge\n") {
			return d
		}
		require.NotEqual(t, d, filepath.Dir(d), "not inside the fledge checkout")
	}
}

// cleanEnv is the test's environment without what would make the make run
// differ from `make image` typed in a shell: the variables of an enclosing
// make (make test IMAGE=... would pass IMAGE on) and IMAGE or PUSH.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "IMAGE", "PUSH":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func git(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", root}, args...)...).Output()
	require.NoError(t, err, "git %v", args)
	return strings.TrimSpace(string(out))
}

// created is the creation time the image must carry.
func created(t *testing.T, root string) time.Time {
	t.Helper()
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		epoch = git(t, root, "log", "-1", "--format=%ct")
	}
	sec, err := strconv.ParseInt(epoch, 10, 64)
	require.NoError(t, err)
	return time.Unix(sec, 0).UTC()
}

// startRegistry runs the registry at bin on 127.0.0.1 with its storage in
// a temporary directory, waits until /v2/ answers, and stops it when the
// test ends. It returns the registry's host:port.
func startRegistry(t *testing.T, bin string) string {
	t.Helper()
	_, err := os.Stat(bin)
	require.NoError(t, err, "the registry is built by make tools")
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	config := filepath.Join(dir, "config.yml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: fledge-test-image
`, filepath.Join(dir, "storage"), addr), 0o644))

	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	defer logFile.Close() // the registry holds its own descriptor
	logs := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	cmd := exec.Command(bin, "serve", config)
	// No OpenTelemetry exporter: it would send traces to localhost:4318.
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("registry (pid %d) said:\n%s", cmd.Process.Pid, logs())
		}
	})

	start := time.Now()
	for deadline := time.Now().Add(30 * time.Second); ; {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the registry exited before answering: %v\n%s", err, logs())
		default:
		}
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		require.True(t, time.Now().Before(deadline), "the registry did not answer /v2/ within 30s:\n%s", logs())
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("registry (pid %d) answers on %s after %s", cmd.Process.Pid, addr, time.Since(start).Round(time.Millisecond))
	return addr
}

// freePort is a port that was free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// extract reads the layer's tar, writes its regular file fledge to path,
// and returns every entry's header.
func extract(t *testing.T, l v1.Layer, path string) []*tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	require.NoError(t, err)
	defer rc.Close()
	var hdrs []*tar.Header
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs
		}
		require.NoError(t, err)
		hdrs = append(hdrs, h)
		if h.Name == "fledge" && h.Typeflag == tar.TypeReg {
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
			require.NoError(t, err)
			_, err = io.Copy(f, tr)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}
	}
}

func names(hdrs []*tar.Header) []string {
	var n []string
	for _, h := range hdrs {
		n = append(n, h.Name)
	}
	return n
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	require.NoError(t, err)
	return d.String()
}

// repoTags is the RepoTags of a docker archive's manifest.json, what
// docker load and kind load image-archive name the image.
func repoTags(t *testing.T, archive string) []string {
	t.Helper()
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(archive) })
	require.NoError(t, err)
	require.Len(t, m, 1)
	return m[0].RepoTags
}
