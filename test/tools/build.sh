#!/usr/bin/env bash
# Builds the lab's programs from source at pinned versions, once per machine.
#
# Each program is built into a per-user cache directory keyed by its version
# (so a fresh clone on the same machine, as CI uses, finds it) and linked into
# the checkout's git-ignored bin/. A program already built at its pinned
# version is not built again.
#
#   FLEDGE_TOOLS_CACHE  where built programs are kept
#                       (default: ${XDG_CACHE_HOME:-$HOME/.cache}/fledge/tools)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="$root/bin"
cache="${FLEDGE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fledge/tools}"
platform="$(go env GOOS)-$(go env GOARCH)"

# The pinned versions. The control plane's and etcd's are also fixed by the
# go.mod files beside this script; keep them in step.
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
PROMETHEUS_VERSION=v0.316.0
GOTESTSUM_VERSION=v1.13.0
REGISTRY_VERSION=v3.1.2

mkdir -p "$cache" "$bin"

# Two builds at once (two clones, two shells) would do the work twice and
# race on the cache: take a lock where flock(1) exists.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$cache/.lock"
	flock 9
fi

ldflags_kube="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"

# dir NAME VERSION: where a program of that version is kept.
dir() { echo "$cache/$1-$2-$platform"; }

missing=()
for spec in "kube-apiserver $KUBE_VERSION" "kube-controller-manager $KUBE_VERSION" "kube-scheduler $KUBE_VERSION" \
	"kube-proxy $KUBE_VERSION" "etcd $ETCD_VERSION" "kwok $KWOK_VERSION" "prometheus $PROMETHEUS_VERSION" "gotestsum $GOTESTSUM_VERSION" \
	"registry $REGISTRY_VERSION"; do
	set -- $spec
	[ -x "$(dir "$1" "$2")/$1" ] || missing+=("$1")
done

if [ ${#missing[@]} -gt 0 ]; then
	echo "fledge: building the lab's programs from source: ${missing[*]}"
	echo "fledge: the first build takes about 25 minutes on 2 cores; later runs reuse $cache"
fi

# build NAME VERSION COMMAND...: runs COMMAND with $out set to an empty
# directory, then moves it into the cache in one rename, so a build that is
# interrupted leaves nothing that looks finished.
build() {
	local name=$1 version=$2
	shift 2
	local dest
	dest=$(dir "$name" "$version")
	if [ ! -x "$dest/$name" ]; then
		local start=$SECONDS
		echo "fledge: building $name $version ..."
		out=$(mktemp -d "$cache/.build-$name.XXXXXX")
		if ! "$@"; then
			rm -rf "$out"
			echo "fledge: building $name $version failed" >&2
			exit 1
		fi
		rm -rf "$dest"
		mv "$out" "$dest"
		echo "fledge: built $name $version in $((SECONDS - start))s"
	fi
	ln -sfn "$dest/$name" "$bin/$name"
}

build_kube() {
	(cd "$here/kube" && go build -ldflags "$ldflags_kube" -o "$out/$1" "k8s.io/kubernetes/cmd/$1")
}

# gotestsum runs `make test`'s go test and prints its summary.
build_gotestsum() {
	GOBIN="$out" go install -ldflags "-s -w" "gotest.tools/gotestsum@$GOTESTSUM_VERSION"
}

build_etcd() {
	(cd "$here/etcd" && go build -ldflags "-s -w" -o "$out/etcd" .)
}

# kwok refuses to start without Stage files; keep the ones the lab uses
# beside the binary, taken from the same module version.
build_kwok() {
	GOBIN="$out" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
	local src
	src=$(cd "$out" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	mkdir -p "$out/stages"
	cp "$src/kustomize/stage/node/fast/node-initialize.yaml" \
		"$src/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
		"$src/kustomize/stage/pod/fast/pod-ready.yaml" \
		"$src/kustomize/stage/pod/fast/pod-complete.yaml" \
		"$src/kustomize/stage/pod/fast/pod-delete.yaml" \
		"$src/kustomize/stage/pod/chaos/pod-container-running-failed.yaml" \
		"$out/stages/"
	chmod u+w "$out/stages/"*.yaml
}

build_prometheus() {
	GOBIN="$out" go install -ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}" \
		"github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
}

# The CNCF distribution registry: test/image pushes `make image`'s image to
# it and pulls it back.
build_registry() {
	GOBIN="$out" go install -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION" \
		"github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION"
}

build gotestsum "$GOTESTSUM_VERSION" build_gotestsum
build etcd "$ETCD_VERSION" build_etcd
build kwok "$KWOK_VERSION" build_kwok
ln -sfn "$(dir kwok "$KWOK_VERSION")/stages" "$bin/kwok-stages"
build kube-apiserver "$KUBE_VERSION" build_kube kube-apiserver
build kube-controller-manager "$KUBE_VERSION" build_kube kube-controller-manager
build kube-scheduler "$KUBE_VERSION" build_kube kube-scheduler
# kube-proxy is the lab's real data plane, run in a network namespace.
build kube-proxy "$KUBE_VERSION" build_kube kube-proxy
build prometheus "$PROMETHEUS_VERSION" build_prometheus
build registry "$REGISTRY_VERSION" build_registry

echo "fledge: lab programs ready in $bin"

# The data plane also needs nft, iptables, ip and root: installed on Debian as
# root, else said in one line (the unit tests need none of it).
bash "$here/dataplane.sh"
