#!/usr/bin/env bash
# Builds an OCI container image from one executable, without Docker: a minimal root filesystem (the
# executable, exactly the shared libraries `ldd` lists for it, CA certificates, /etc/passwd and /etc/group
# with the image's user, /tmp; no shell, no package manager), made into an image with umoci and written as
# one archive that `ctr images import`, `docker load` and `kind load image-archive` all accept (an OCI
# image layout with index.json, plus the manifest.json that docker-archive readers look for).
#
#   scripts/image.sh                                  # switchyard from target/release/switchyard
#   scripts/image.sh --binary target/debug/switchyard --name registry.local/switchyard:dev
#   scripts/image.sh --binary target/release/game-node --name registry.local/game-node:0.1.0
#   scripts/image.sh --redis                          # Debian's redis-server, user 999, workdir /data
#
# Options:
#   --binary PATH       the executable (default target/release/switchyard; built with cargo when missing)
#   --name REF          fully qualified image name (default registry.local/<binary name>:<version>); a
#                       short name like `switchyard:1` is refused: containerd and the kubelet would read
#                       it as docker.io/library/switchyard:1 and try to pull it
#   --out FILE          archive to write (default target/images/<binary name>-<tag>.tar)
#   --version V         org.opencontainers.image.version (default: the tag of --name)
#   --user UID          user and group the image runs as (default 65532, 999 with --redis)
#   --workdir DIR       working directory (default /; /data with --redis)
#   --title T, --description D   labels (defaults: the binary name, a generic description)
#   --redis             the Redis image the operator runs when a GameCluster names no Redis
#   --print-digest      print only the manifest digest (sha256:...) on stdout
#   --rootfs DIR        only lay out the root filesystem in DIR (empty or missing) and stop: what the
#                       Dockerfile does, so an image built with Docker has the same files
#
# Reproducible: every timestamp is SOURCE_DATE_EPOCH (default: the last commit's time, else 0), files are
# owned by 0:0 with fixed modes, tar members are sorted, so the same binary gives the same digest. The
# digest is printed, and written next to the archive as <archive>.digest.
#
# Needs: umoci, jq, tar, gzip, ldd (Debian: umoci jq tar gzip libc-bin; `--install-deps` installs them).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
	printf 'image.sh: %s\n' "$*" >&2
	exit 1
}
log() { printf 'image.sh: %s\n' "$*" >&2; }

binary="" name="" out="" version="" user="" workdir="" title="" description="" redis=false print_digest=false
install_deps=false rootfs_only=""
while [ $# -gt 0 ]; do
	case "$1" in
	--binary) binary="${2:?--binary needs a path}"; shift 2 ;;
	--name) name="${2:?--name needs an image name}"; shift 2 ;;
	--out) out="${2:?--out needs a path}"; shift 2 ;;
	--version) version="${2:?--version needs a value}"; shift 2 ;;
	--user) user="${2:?--user needs a uid}"; shift 2 ;;
	--workdir) workdir="${2:?--workdir needs a path}"; shift 2 ;;
	--title) title="${2:?--title needs a value}"; shift 2 ;;
	--description) description="${2:?--description needs a value}"; shift 2 ;;
	--redis) redis=true; shift ;;
	--print-digest) print_digest=true; shift ;;
	--rootfs) rootfs_only="${2:?--rootfs needs a directory}"; shift 2 ;;
	--install-deps) install_deps=true; shift ;;
	-h | --help) sed -n '2,33p' "$0"; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done

missing=()
tools=(ldd install)
[ -n "$rootfs_only" ] || tools+=(umoci jq tar gzip sha256sum git)
for tool in "${tools[@]}"; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$install_deps" = true ] && command -v apt-get >/dev/null 2>&1; then
		export DEBIAN_FRONTEND=noninteractive
		apt-cache show umoci >/dev/null 2>&1 || apt-get update -qq
		apt-get install -y -qq umoci jq tar gzip libc-bin coreutils >/dev/null
	else
		die "missing ${missing[*]} (Debian: apt-get install umoci jq; or rerun with --install-deps)"
	fi
fi

workspace_version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)"
license="Apache-2.0"
source_url="$(sed -n 's/^repository = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)"

if [ "$redis" = true ]; then
	[ -z "$binary" ] || die "--redis takes no --binary (it packs Debian's redis-server)"
	command -v redis-server >/dev/null 2>&1 || die "redis-server not found (Debian: apt-get install redis-server)"
	binary="$(command -v redis-server)"
	exe_name=redis-server # Debian's /usr/bin/redis-server is a link to redis-check-rdb; Redis picks its mode by argv[0]
	redis_version="$(redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')"
	name="${name:-registry.local/redis:$redis_version}"
	user="${user:-999}"
	workdir="${workdir:-/data}"
	title="${title:-redis}"
	description="${description:-Redis $redis_version (Debian's redis-server) for a Switchyard cluster's managed locator}"
	license="BSD-3-Clause"
	source_url="https://packages.debian.org/redis-server"
else
	if [ -z "$binary" ]; then
		binary="$root/target/release/switchyard"
		if [ ! -x "$binary" ]; then
			log "building the release binary (cargo build --release --locked --bin switchyard)"
			(cd "$root" && cargo build --release --locked --bin switchyard) >&2
		fi
	fi
	exe_name="$(basename "$binary")"
	name="${name:-registry.local/$exe_name:$workspace_version}"
	user="${user:-65532}"
	workdir="${workdir:-/}"
	title="${title:-$exe_name}"
	if [ -z "$description" ]; then
		case "$exe_name" in
		switchyard) description="Switchyard: Kubernetes-native distributed game-server cluster (operator, gate, demo node)" ;;
		*) description="$exe_name, a Switchyard game node" ;;
		esac
	fi
fi
[ -f "$binary" ] && [ -x "$binary" ] || die "$binary is not an executable file"
binary="$(readlink -f "$binary")"

# A fully qualified name: registry host (has a dot or a colon, or is localhost) / path : tag.
[[ "$name" =~ ^([a-z0-9.-]+(:[0-9]+)?)/([a-z0-9._/-]+):([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$ ]] ||
	die "--name $name: want a fully qualified name REGISTRY/PATH:TAG, e.g. registry.local/switchyard:0.1.0"
registry="${BASH_REMATCH[1]}"
tag="${BASH_REMATCH[4]}"
[[ "$registry" == *.* || "$registry" == *:* || "$registry" == localhost ]] ||
	die "--name $name: the first part ($registry) is not a registry host (no dot, no port): containerd would read it as a docker.io path"
version="${version:-$tag}"
[[ "$user" =~ ^[0-9]+$ ]] || die "--user $user: want a numeric uid"
[[ "$workdir" == /* ]] || die "--workdir $workdir: want an absolute path"

if [ -z "$out" ]; then
	out="$root/target/images/${exe_name}-${tag}.tar"
fi
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH="$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)"
fi
[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH is not a number of seconds"
export SOURCE_DATE_EPOCH
created="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$redis" = true ]; then
	revision="$(dpkg-query -W -f '${Version}' redis-server 2>/dev/null || echo unknown)"
fi

# ---- the root filesystem ------------------------------------------------------
# populate_rootfs DIR: the image's files, owners, modes and (fixed) times.
ca=/etc/ssl/certs/ca-certificates.crt
populate_rootfs() {
	local rootfs="$1" lib
	install -D -m 0755 "$binary" "$rootfs/usr/local/bin/$exe_name"

	# Exactly the libraries the dynamic loader resolves for this binary, at the paths ldd names (a static
	# binary lists none). The copies are the files, not the symlinks, so each path holds the real library.
	libs=()
	if ldd_out="$(ldd "$binary" 2>&1)"; then
		while read -r lib; do
			[ -n "$lib" ] && libs+=("$lib")
		done < <(printf '%s\n' "$ldd_out" | sed -n -e 's#^[[:space:]]*[^[:space:]]* => \(/[^[:space:]]*\) (0x.*#\1#p' \
			-e 's#^[[:space:]]*\(/[^[:space:]]*\) (0x.*#\1#p')
		if printf '%s\n' "$ldd_out" | grep -q 'not found'; then
			die "ldd $binary: a library is missing on this machine:
	$ldd_out"
		fi
	elif ! printf '%s\n' "$ldd_out" | grep -q -e 'not a dynamic executable' -e 'statically linked'; then
		die "ldd $binary failed: $ldd_out"
	fi
	for lib in "${libs[@]}"; do
		install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
	done
	log "$exe_name: ${#libs[@]} shared libraries (${libs[*]:-static})"

	[ -f "$ca" ] || die "$ca missing (Debian: apt-get install ca-certificates)"
	install -D -m 0644 "$ca" "$rootfs$ca"

	if [ "$user" = 65532 ]; then
		account=nonroot home=/home/nonroot
	elif [ "$redis" = true ]; then
		account=redis home=/data
	else
		account=app home=/home/app
	fi
	install -d -m 0755 "$rootfs/etc"
	printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:%s:/sbin/nologin\n' \
		"$account" "$user" "$user" "$account" "$home" >"$rootfs/etc/passwd"
	printf 'root:x:0:\n%s:x:%s:\n' "$account" "$user" >"$rootfs/etc/group"
	printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
	chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
	install -d -m 1777 "$rootfs/tmp"
	install -d -m 0700 "$rootfs$home"
	[ "$workdir" = / ] || [ "$workdir" = "$home" ] || install -d -m 0755 "$rootfs$workdir"
	chown -R 0:0 "$rootfs"
	chown "$user:$user" "$rootfs$home"
	[ "$workdir" = / ] || [ "$workdir" = "$home" ] || chown "$user:$user" "$rootfs$workdir"
	chmod 0755 "$rootfs"
	# Fixed timestamps everywhere (umoci writes each file's mtime into the layer).
	find "$rootfs" -depth -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

if [ -n "$rootfs_only" ]; then
	mkdir -p "$rootfs_only"
	[ -z "$(ls -A "$rootfs_only")" ] || die "--rootfs $rootfs_only is not empty"
	populate_rootfs "$rootfs_only"
	log "$name: root filesystem in $rootfs_only"
	exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
layout="$work/oci"
bundle="$work/bundle"

umoci init --layout "$layout"
umoci new --image "$layout:build"
umoci unpack --image "$layout:build" "$bundle" >/dev/null
populate_rootfs "$bundle/rootfs"

umoci repack --image "$layout:build" --history.created "$created" --history.created_by "scripts/image.sh" \
	--history.comment "$exe_name and its shared libraries" "$bundle" >/dev/null
config_args=(
	--image "$layout:build" --created "$created" --author "switchyard scripts/image.sh" --os linux
	--architecture "$(go_arch="$(uname -m)"; case "$go_arch" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) echo "$go_arch" ;; esac)"
	--config.user "$user:$user" --config.entrypoint "$exe_name" --config.workingdir "$workdir"
	--config.env "PATH=/usr/local/bin:/usr/bin:/bin" --config.env "SSL_CERT_FILE=$ca"
	--config.label "org.opencontainers.image.title=$title"
	--config.label "org.opencontainers.image.description=$description"
	--config.label "org.opencontainers.image.version=$version"
	--config.label "org.opencontainers.image.licenses=$license"
	--config.label "org.opencontainers.image.source=$source_url"
	--config.label "org.opencontainers.image.revision=$revision"
	--config.label "org.opencontainers.image.created=$created"
	--history.created "$created" --history.created_by "scripts/image.sh" --history.comment "user, entrypoint, labels"
)
umoci config "${config_args[@]}"
umoci gc --layout "$layout"

# ---- the archive ----------------------------------------------------------------
# index.json names the image the way containerd's importer (ctr, kind) and docker load (>= 25) read it;
# manifest.json is the docker-archive view of the same blobs for older docker load.
manifest_desc="$(jq -c '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "build")' "$layout/index.json")"
[ -n "$manifest_desc" ] || die "umoci left no manifest tagged 'build' in $layout/index.json"
manifest_digest="$(jq -r .digest <<<"$manifest_desc")"
manifest_file="$layout/blobs/sha256/${manifest_digest#sha256:}"
config_digest="$(jq -r .config.digest "$manifest_file")"
jq -n --argjson desc "$manifest_desc" --arg name "$name" --arg tag "$tag" '{
	schemaVersion: 2,
	mediaType: "application/vnd.oci.image.index.v1+json",
	manifests: [$desc | .annotations = {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": $tag}]
}' >"$layout/index.json"
jq -n --arg config "blobs/sha256/${config_digest#sha256:}" --arg name "$name" \
	--argjson layers "$(jq -c '[.layers[].digest | "blobs/sha256/" + ltrimstr("sha256:")]' "$manifest_file")" \
	'[{Config: $config, RepoTags: [$name], Layers: $layers}]' >"$layout/manifest.json"

chmod -R u=rwX,go=rX "$layout"
find "$layout" -depth -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
tmp_out="$out.tmp.$$"
(cd "$layout" && tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
	--format=ustar -cf "$tmp_out" oci-layout index.json manifest.json blobs)
mv -f "$tmp_out" "$out"
printf '%s\n' "$manifest_digest" >"$out.digest"

log "$name $manifest_digest -> $out ($(du -h "$out" | cut -f1))"
if [ "$print_digest" = true ]; then
	echo "$manifest_digest"
else
	echo "$out"
fi
