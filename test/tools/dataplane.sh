#!/usr/bin/env bash
# Makes sure the lab's real data plane (kube-proxy in a network namespace, see
# LAB.md in the design folder) can run here: it needs Linux, root, and the
# programs nft, iptables and ip.
#
# As root on Debian or Ubuntu, a missing nft or iptables (or ip) is installed
# with apt-get. Otherwise what is missing is said in one line and the script
# still succeeds: the unit tests need none of it.
#
# With --check it installs nothing and fails after that line: make demo, lab
# and test stop there at once, before anything starts.
set -uo pipefail

check=false
[ "${1:-}" = --check ] && check=true
status=0
$check && status=1

if [ "$(uname -s)" != Linux ]; then
	echo "fledge: the lab's data plane needs Linux with nft, iptables and ip, and root"
	exit $status
fi

root=false
[ "$(id -u)" = 0 ] && root=true

# missing: sets need (programs) and pkgs (their Debian packages) to what is
# not on PATH.
missing() {
	need=()
	pkgs=()
	command -v nft >/dev/null 2>&1 || { need+=(nft); pkgs+=(nftables); }
	command -v iptables >/dev/null 2>&1 || { need+=(iptables); pkgs+=(iptables); }
	command -v ip >/dev/null 2>&1 || { need+=(ip); pkgs+=(iproute2); }
}
missing

if [ ${#need[@]} -gt 0 ] && $root && ! $check && command -v apt-get >/dev/null 2>&1; then
	echo "fledge: installing ${pkgs[*]} for the lab's data plane"
	apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"; }
	apt_install || { DEBIAN_FRONTEND=noninteractive apt-get update && apt_install; } ||
		echo "fledge: apt-get install ${pkgs[*]} failed" >&2
	missing
fi

# join_and A B C: "A, B and C".
join_and() {
	local s=$1
	shift
	while [ $# -gt 1 ]; do s="$s, $1"; shift; done
	[ $# -eq 1 ] && s="$s and $1"
	echo "$s"
}

if [ ${#need[@]} -gt 0 ]; then
	line="fledge: the lab's data plane needs $(join_and "${need[@]}") (Debian: apt-get install ${pkgs[*]})"
	$root || line="$line and root"
	echo "$line"
	exit $status
elif ! $root; then
	echo "fledge: the lab's data plane needs root"
	exit $status
fi
exit 0
