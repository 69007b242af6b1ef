#!/usr/bin/env bash
# Builds a real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl), a node (kubelet,
# kube-proxy), CoreDNS, crictl and helm from Go modules, at pinned versions,
# into
#   ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/k8s-<version>/bin
#
# Needs only Go (>= 1.26) and the Go module proxy. Idempotent: a stamp per
# binary records what was built, so a rerun with nothing to do is instant.
# See README.md next to this file.
#
# Usage: build.sh [--print-bin-dir] [--force]
#   --print-bin-dir  print the bin directory and exit (builds nothing)
#   --force          rebuild everything, ignoring the stamps
# Env:
#   SWITCHYARD_CACHE  cache root (default $HOME/.cache/switchyard)
#   SWITCHYARD_NICE   niceness for the go commands (default 19)
set -Eeuo pipefail

# ---- pinned versions --------------------------------------------------------
# Kubernetes: newest minor supported by the Rust crate k8s-openapi 0.29
# (feature `latest = v1_37`), newest patch whose module zip the proxy serves.
K8S_VERSION=v1.37.1
# etcd: the version Kubernetes v1.37 recommends (kubeadm DefaultEtcdVersion
# 3.7.0-0; k8s.io/kubernetes go.mod requires go.etcd.io/etcd/*/v3 v3.7.0).
ETCD_VERSION=v3.7.0
# helm v4 (v3.22.0 is served but not an approved release). v4.3.2 requires the
# k8s.io staging modules at v0.37.2, so its own build has them all at v0.37.2.
HELM_VERSION=v4.3.2
# crictl, for looking at pods on the kubelet's containerd (same minor as k8s).
CRI_TOOLS_VERSION=v1.37.0
# CoreDNS: the cluster DNS; v1.15.0 is built against k8s.io/client-go v0.37.1.
COREDNS_VERSION=v1.15.0
# The e2e node's NetworkPolicy controller (nfqueue verdicts); the newest the
# proxy serves. It requires the k8s.io modules at v0.32.3: raised to v0.37.1.
KNP_VERSION=v0.8.0
# Minimum Go; Kubernetes v1.37 declares `go 1.26.0`. If the local Go is older,
# the script asks the go command to fetch this toolchain from the module proxy.
MIN_GO=1.26.0
FALLBACK_TOOLCHAIN=go1.26.8
# Bump when flags/recipe change, so stamps go stale and binaries rebuild.
RECIPE_REV=2

K8S_TAGS="selinux,notest,grpcnotrace" # what hack/lib/golang.sh uses for release builds

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}"
ROOT="$CACHE_ROOT/k8s-$K8S_VERSION"
BIN="$ROOT/bin"
SRC="$ROOT/src"
STAMPS="$ROOT/stamps"
NICE="${SWITCHYARD_NICE:-19}"

log() { printf '[build.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	printf '\n[build.sh] ERROR: %s\n' "$*" >&2
	exit 1
}
trap 'printf "\n[build.sh] ERROR: command failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

FORCE=0
for arg in "$@"; do
	case "$arg" in
	--print-bin-dir)
		echo "$BIN"
		exit 0
		;;
	--force) FORCE=1 ;;
	-h | --help)
		sed -n '2,17p' "$0"
		exit 0
		;;
	*) die "unknown argument: $arg (see --help)" ;;
	esac
done

# ---- preconditions ----------------------------------------------------------
command -v go >/dev/null 2>&1 || die "go not found in PATH. Install Go >= $MIN_GO (Debian: apt-get install golang-go, or any Go >= 1.21 which can fetch $FALLBACK_TOOLCHAIN itself)."

ver_ge() { # ver_ge A B: A >= B (dotted numeric)
	[ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]
}

# Controlled, reproducible go environment (ignore the caller's GOFLAGS/GOWORK).
# go.sum is produced by `go mod tidy` in each generated module, so builds run
# with the default -mod=readonly and fail loudly if anything is missing.
export GOFLAGS="-buildvcs=false"
export GOWORK=off
export CGO_ENABLED=0
export GO111MODULE=on
unset GOOS GOARCH

local_go="$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || true)"
local_go="${local_go#go}"
[ -n "$local_go" ] || die "could not determine the Go version ('go env GOVERSION' failed)"
if ! ver_ge "$local_go" "$MIN_GO"; then
	if ! ver_ge "$local_go" "1.21.0"; then
		die "Go $local_go is too old: need >= $MIN_GO (or >= 1.21 to auto-fetch a toolchain)."
	fi
	if [ -z "${GOTOOLCHAIN:-}" ] || [ "${GOTOOLCHAIN}" = local ]; then
		export GOTOOLCHAIN="$FALLBACK_TOOLCHAIN"
		log "local Go $local_go < $MIN_GO: using GOTOOLCHAIN=$GOTOOLCHAIN (fetched from the Go module proxy)"
	fi
fi
GO_VERSION="$(go env GOVERSION)" || die "the go command does not work (GOTOOLCHAIN=${GOTOOLCHAIN:-})"

mkdir -p "$BIN" "$SRC" "$STAMPS"
cd "$SRC" # not inside any other Go module

# One build at a time per cache dir (several engineers / CI jobs share it).
if command -v flock >/dev/null 2>&1; then
	exec 9>"$ROOT/.lock"
	if ! flock -n 9; then
		log "another build.sh holds $ROOT/.lock; waiting..."
		flock 9
	fi
fi

# ---- helpers ----------------------------------------------------------------
# stamp_line NAME -> the recipe that NAME is built with; a binary is current
# iff its stamp file has exactly this first line and the binary exists.
stamp_line() {
	local v
	case "$1" in
	etcd) v="etcd=$ETCD_VERSION" ;;
	helm) v="helm=$HELM_VERSION" ;;
	crictl) v="cri-tools=$CRI_TOOLS_VERSION k8s=$K8S_VERSION" ;;
	coredns) v="coredns=$COREDNS_VERSION k8s=$K8S_VERSION" ;;
	kube-network-policies) v="kube-network-policies=$KNP_VERSION k8s=$K8S_VERSION" ;;
	pause) v="pause=$(sha256sum "$HERE/pause/main.go" | cut -c1-16)" ;;
	*) v="k8s=$K8S_VERSION" ;;
	esac
	echo "recipe=$RECIPE_REV name=$1 $v"
}

is_current() {
	local name="$1"
	[ "$FORCE" = 0 ] && [ -x "$BIN/$name" ] && [ -f "$STAMPS/$name" ] &&
		[ "$(head -n1 "$STAMPS/$name")" = "$(stamp_line "$name")" ]
}

gocmd() { nice -n "$NICE" go "$@"; }

# module_time MODULE@VERSION -> release time (UTC, RFC3339) from the proxy, used
# as a reproducible buildDate.
module_time() {
	go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "$1" 2>/dev/null ||
		true
}

# prepare_module DIR: runs `go mod tidy` in a generated module dir (writes go.sum).
prepare_module() {
	local dir="$1"
	log "resolving modules in $dir (go mod tidy; downloads from the module proxy on first run)"
	(cd "$dir" && gocmd mod tidy) || die "go mod tidy failed in $dir — is the Go module proxy reachable? (GOPROXY=$(go env GOPROXY))"
}

# build_one NAME DIR PKG TAGS LDFLAGS
build_one() {
	local name="$1" dir="$2" pkg="$3" tags="$4" ldflags="$5"
	if is_current "$name"; then
		log "$name: up to date ($(sed -n 2p "$STAMPS/$name"))"
		return 0
	fi
	log "$name: building $pkg (nice -n $NICE, CGO_ENABLED=0, -trimpath, tags='$tags')"
	local t0 t1 secs
	t0=$(date +%s)
	(cd "$dir" && gocmd build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$BIN/.$name.tmp" "$pkg") ||
		die "$name: go build $pkg failed (see the compiler output above)"
	mv -f "$BIN/.$name.tmp" "$BIN/$name"
	t1=$(date +%s)
	secs=$((t1 - t0))
	{
		stamp_line "$name"
		echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in ${secs}s with $GO_VERSION, $(du -h "$BIN/$name" | cut -f1)"
		echo "package=$pkg tags=$tags"
		echo "ldflags=$ldflags"
	} >"$STAMPS/$name"
	log "$name: built in ${secs}s ($(du -h "$BIN/$name" | cut -f1))"
}

K8S_BINARIES="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"
ALL_BINARIES="etcd $K8S_BINARIES crictl coredns kube-network-policies pause helm"

# module_dir NAME GO.MOD-TEXT: writes the generated module <src>/NAME (go.sum is
# dropped when go.mod changed) and prints its path.
module_dir() {
	local dir="$SRC/$1"
	mkdir -p "$dir"
	printf '%s\n' "$2" >"$dir/go.mod.new"
	if ! cmp -s "$dir/go.mod.new" "$dir/go.mod.src" 2>/dev/null; then
		cp "$dir/go.mod.new" "$dir/go.mod"
		cp "$dir/go.mod.new" "$dir/go.mod.src"
		rm -f "$dir/go.sum"
	fi
	rm -f "$dir/go.mod.new"
	echo "$dir"
}

# k8s_staging_modules: the k8s.io modules Kubernetes publishes from its staging
# tree (k8s.io/api, k8s.io/client-go, ...), read from k8s.io/kubernetes' go.mod.
k8s_staging_modules() {
	local dl gomod
	dl="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>&1)" || true
	gomod="$(printf '%s\n' "$dl" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
	[ -n "$gomod" ] && [ -f "$gomod" ] ||
		die "cannot download k8s.io/kubernetes@$K8S_VERSION (GOPROXY=$(go env GOPROXY)):
$dl"
	sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod"
}

# align_k8s DIR [PKG]: every k8s.io staging module in DIR's build list at one
# release, the newest of the Kubernetes release and what the module already
# requires (MVS never goes below a requirement). Fails if they still differ
# after that. With PKG, only the modules that PKG's build uses count (a
# dependency's go.mod may name k8s.io modules that no package of the build
# imports, and `go mod tidy` drops the raised requirement on those again).
align_k8s() {
	local dir="$1" pkg="${2:-}" mods versions target m v get=()
	mods="$(k8s_staging_modules | sort -u)"
	k8s_versions() {
		if [ -n "$pkg" ]; then
			(cd "$dir" && go list -deps -f '{{with .Module}}{{.Path}} {{.Version}}{{end}}' "$pkg" | sort -u)
		else
			(cd "$dir" && go list -m -f '{{.Path}} {{.Version}}' all)
		fi | awk 'NR==FNR { s[$1]=1; next } ($1 in s)' <(echo "$mods") -
	}
	versions="$(k8s_versions)"
	target="$(printf '%s\n' "v0.${K8S_VERSION#v1.}" $(echo "$versions" | awk '{print $2}') | sort -V | tail -n1)"
	while read -r m v; do
		[ -n "$m" ] && [ "$v" != "$target" ] && get+=("$m@$target")
	done <<<"$versions"
	if [ "${#get[@]}" -gt 0 ]; then
		log "$dir: raising ${#get[@]} k8s.io modules to $target"
		(cd "$dir" && gocmd get "${get[@]}" && gocmd mod tidy) || die "go get ${get[*]} failed in $dir"
	fi
	versions="$(k8s_versions)"
	[ "$(echo "$versions" | awk '{print $2}' | sort -u | wc -l)" = 1 ] ||
		die "$dir: k8s.io modules at more than one release:
$versions"
	log "$dir: $(echo "$versions" | wc -l) k8s.io staging modules, all at $target"
}

all_current() {
	local n
	for n in $ALL_BINARIES; do
		is_current "$n" || return 1
	done
}

if all_current; then
	log "all binaries up to date in $BIN (Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION, crictl $CRI_TOOLS_VERSION, CoreDNS $COREDNS_VERSION, kube-network-policies $KNP_VERSION)"
	echo "$BIN"
	exit 0
fi

log "Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION, crictl $CRI_TOOLS_VERSION, CoreDNS $COREDNS_VERSION, kube-network-policies $KNP_VERSION with $GO_VERSION -> $BIN"
log "GOPROXY=$(go env GOPROXY) GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE)"

# ---- Kubernetes ---------------------------------------------------------------
# k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at v0.0.0 and
# replaces them with ./staging/src/...; those replaces do not apply to a module
# that depends on it. So generate a module that requires k8s.io/kubernetes and
# replaces every staging module with its published v0.<minor>.<patch> twin.
k8s_kubernetes_needed=0
for n in $K8S_BINARIES; do
	is_current "$n" || k8s_kubernetes_needed=1
done
if [ "$k8s_kubernetes_needed" = 1 ]; then
	staging_version="v0.${K8S_VERSION#v1.}"
	kdir="$SRC/kubernetes"
	mkdir -p "$kdir"
	log "fetching k8s.io/kubernetes@$K8S_VERSION go.mod"
	dl_json="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>&1)" || true
	k8s_gomod="$(printf '%s\n' "$dl_json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
	[ -n "$k8s_gomod" ] && [ -f "$k8s_gomod" ] ||
		die "cannot download k8s.io/kubernetes@$K8S_VERSION (GOPROXY=$(go env GOPROXY)):
$dl_json"
	mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$k8s_gomod")
	[ "${#staging[@]}" -gt 10 ] || die "found only ${#staging[@]} staging replace directives in $k8s_gomod; layout changed?"
	log "replacing ${#staging[@]} staging modules with their $staging_version releases"
	{
		echo "// Generated by switchyard e2e/toolchain/build.sh; do not edit."
		echo "module switchyard.invalid/k8s-toolchain"
		echo
		echo "go 1.26.0"
		echo
		echo "godebug default=go1.26" # as in k8s.io/kubernetes' own go.mod
		echo
		echo "require k8s.io/kubernetes $K8S_VERSION"
		echo
		echo "tool ("
		echo "	k8s.io/kubernetes/cmd/kube-apiserver"
		echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
		echo "	k8s.io/kubernetes/cmd/kube-scheduler"
		echo "	k8s.io/kubernetes/cmd/kubectl"
		echo "	k8s.io/kubernetes/cmd/kubelet"
		echo "	k8s.io/kubernetes/cmd/kube-proxy"
		echo ")"
		echo
		echo "replace ("
		for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
		echo ")"
	} >"$kdir/go.mod.new"
	if ! cmp -s "$kdir/go.mod.new" "$kdir/go.mod.src" 2>/dev/null; then
		cp "$kdir/go.mod.new" "$kdir/go.mod"
		cp "$kdir/go.mod.new" "$kdir/go.mod.src"
		rm -f "$kdir/go.sum"
	fi
	rm -f "$kdir/go.mod.new"
	prepare_module "$kdir"

	k8s_minor="${K8S_VERSION#v1.}"
	k8s_minor="${k8s_minor%%.*}"
	k8s_date="$(cd "$kdir" && module_time "k8s.io/kubernetes@$K8S_VERSION")"
	k8s_date="${k8s_date:-1970-01-01T00:00:00Z}"
	k8s_ldflags="-s -w"
	for pkgv in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		# gitCommit is set empty (the default is the git-archive placeholder
		# "$Format:%H$"): module zips carry no git metadata, so it is unknown.
		k8s_ldflags+=" -X $pkgv.gitCommit= -X $pkgv.gitVersion=$K8S_VERSION -X $pkgv.gitMajor=1 -X $pkgv.gitMinor=$k8s_minor"
		k8s_ldflags+=" -X $pkgv.gitTreeState=clean -X $pkgv.buildDate=$k8s_date"
	done
	for n in $K8S_BINARIES; do
		build_one "$n" "$kdir" "k8s.io/kubernetes/cmd/$n" "$K8S_TAGS" "$k8s_ldflags"
	done
fi

# ---- etcd ---------------------------------------------------------------------
# go.etcd.io/etcd/server/v3 is the etcd binary's main package; its go.mod
# replaces sibling modules with ../paths (same versions), so build it from a
# generated module too.
if ! is_current etcd; then
	edir="$SRC/etcd"
	mkdir -p "$edir"
	cat >"$edir/go.mod.new" <<EOF
// Generated by switchyard e2e/toolchain/build.sh; do not edit.
module switchyard.invalid/etcd-toolchain

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

tool go.etcd.io/etcd/server/v3
EOF
	if ! cmp -s "$edir/go.mod.new" "$edir/go.mod.src" 2>/dev/null; then
		cp "$edir/go.mod.new" "$edir/go.mod"
		cp "$edir/go.mod.new" "$edir/go.mod.src"
		rm -f "$edir/go.sum"
	fi
	rm -f "$edir/go.mod.new"
	prepare_module "$edir"
	# No -X for version.GitSHA: the commit is unknown, etcd then says "Not provided".
	build_one etcd "$edir" go.etcd.io/etcd/server/v3 "" "-s -w"
fi

# ---- crictl ---------------------------------------------------------------------
if ! is_current crictl; then
	cdir="$(module_dir cri-tools "// Generated by switchyard e2e/toolchain/build.sh; do not edit.
module switchyard.invalid/cri-tools-toolchain

go 1.26.6

require sigs.k8s.io/cri-tools $CRI_TOOLS_VERSION

tool sigs.k8s.io/cri-tools/cmd/crictl")"
	prepare_module "$cdir"
	align_k8s "$cdir"
	build_one crictl "$cdir" sigs.k8s.io/cri-tools/cmd/crictl "" \
		"-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION"
fi

# ---- CoreDNS --------------------------------------------------------------------
if ! is_current coredns; then
	ddir="$(module_dir coredns "// Generated by switchyard e2e/toolchain/build.sh; do not edit.
module switchyard.invalid/coredns-toolchain

go 1.26.0

require github.com/coredns/coredns $COREDNS_VERSION

tool github.com/coredns/coredns")"
	prepare_module "$ddir"
	align_k8s "$ddir"
	build_one coredns "$ddir" github.com/coredns/coredns "" "-s -w -X github.com/coredns/coredns/coremain.GitCommit="
fi

# ---- kube-network-policies -------------------------------------------------------
# The NetworkPolicy controller of the e2e node (sigs.k8s.io/kube-network-policies):
# it judges each new connection of a pod that a policy selects, as an nfqueue verdict.
if ! is_current kube-network-policies; then
	ndir="$(module_dir kube-network-policies "// Generated by switchyard e2e/toolchain/build.sh; do not edit.
module switchyard.invalid/kube-network-policies-toolchain

go 1.26.0

require sigs.k8s.io/kube-network-policies $KNP_VERSION

tool sigs.k8s.io/kube-network-policies/cmd")"
	prepare_module "$ndir"
	align_k8s "$ndir" sigs.k8s.io/kube-network-policies/cmd
	# The release has no version variable to stamp.
	build_one kube-network-policies "$ndir" sigs.k8s.io/kube-network-policies/cmd "" "-s -w"
fi

# ---- pause ----------------------------------------------------------------------
# The node's sandbox container: our own few lines (toolchain/pause/main.go), static.
if ! is_current pause; then # the stamp holds main.go's hash
	pdir="$(module_dir pause "// Generated by switchyard e2e/toolchain/build.sh; do not edit.
module switchyard.invalid/pause

go 1.26.0")"
	cp "$HERE/pause/main.go" "$pdir/main.go"
	build_one pause "$pdir" . "" "-s -w"
fi

# ---- helm ---------------------------------------------------------------------
if ! is_current helm; then
	hdir="$(module_dir helm "// Generated by switchyard e2e/toolchain/build.sh; do not edit.
module switchyard.invalid/helm-toolchain

go 1.26.0

require helm.sh/helm/v4 $HELM_VERSION

tool helm.sh/helm/v4/cmd/helm")"
	prepare_module "$hdir"
	align_k8s "$hdir"
	# As helm's Makefile sets them for a tagged release. helm v4 derives the
	# default Kubernetes version (template .Capabilities without a cluster)
	# from its client-go version at run time, so no -X for that any more.
	helm_ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
	helm_ldflags+=" -X helm.sh/helm/v4/internal/version.metadata="
	helm_ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
	build_one helm "$hdir" helm.sh/helm/v4/cmd/helm "" "$helm_ldflags"
fi

# ---- verify & summary ---------------------------------------------------------
log "verifying binaries"
# reports NAME PATTERN CMD...: CMD's output matches PATTERN (captured first: with pipefail, `| grep -q`
# can fail on the SIGPIPE a chatty --version gets when grep exits early).
reports() {
	local name="$1" pattern="$2" out
	shift 2
	out="$("$@" 2>&1)" || die "$name: '$*' failed: $out"
	grep -q -e "$pattern" <<<"$out" || die "$name does not report $pattern: $out"
}
reports kube-apiserver "^Kubernetes $K8S_VERSION\$" "$BIN/kube-apiserver" --version
reports kubectl "gitVersion: $K8S_VERSION" "$BIN/kubectl" version --client -o yaml
reports etcd "etcd Version: ${ETCD_VERSION#v}" "$BIN/etcd" --version
reports helm "^$HELM_VERSION" "$BIN/helm" version --short
reports kubelet "^Kubernetes $K8S_VERSION\$" "$BIN/kubelet" --version
reports kube-proxy "^Kubernetes $K8S_VERSION\$" "$BIN/kube-proxy" --version
reports crictl "$CRI_TOOLS_VERSION" "$BIN/crictl" --version
reports coredns "CoreDNS-${COREDNS_VERSION#v}" "$BIN/coredns" -version
reports kube-network-policies "Usage: kube-network-policies" "$BIN/kube-network-policies" -help

{
	echo "# Written by e2e/toolchain/build.sh"
	echo "k8s=$K8S_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION cri-tools=$CRI_TOOLS_VERSION coredns=$COREDNS_VERSION kube-network-policies=$KNP_VERSION recipe=$RECIPE_REV"
	for n in $ALL_BINARIES; do
		echo "$n: $(sed -n 2p "$STAMPS/$n")"
	done
} >"$ROOT/BUILD-INFO"
cat "$ROOT/BUILD-INFO" >&2
log "done: $(du -sh "$BIN" | cut -f1) in $BIN"
echo "$BIN"
