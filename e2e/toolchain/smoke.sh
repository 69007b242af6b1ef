#!/usr/bin/env bash
# Smoke test for the toolchain that build.sh produces: starts etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler in a temp dir,
# talks to them with kubectl and helm, then tears everything down.
#
# Env:
#   SWITCHYARD_K8S_ADDR  address everything binds to / advertises (default
#                        127.0.0.1; the e2e harness uses a 10.244.x.y address
#                        inside its network namespace)
#   SWITCHYARD_CACHE     cache root, as for build.sh
#   SMOKE_ETCD_PORT, SMOKE_ETCD_PEER_PORT, SMOKE_APISERVER_PORT,
#   SMOKE_KCM_PORT, SMOKE_SCHED_PORT
#                        ports (default: random free ports)
#   SMOKE_KEEP=1         keep the temp dir (certs, logs, kubeconfig)
#   SMOKE_NO_BUILD=1     do not run build.sh; fail if binaries are missing
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ADDR="${SWITCHYARD_K8S_ADDR:-127.0.0.1}"
SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1" # first IP of SERVICE_CIDR: the `kubernetes` Service

log() { printf '[smoke.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	printf '\n[smoke.sh] ERROR: %s\n' "$*" >&2
	exit 1
}

command -v openssl >/dev/null 2>&1 || die "openssl not found (Debian: apt-get install openssl)"

if [ "${SMOKE_NO_BUILD:-0}" = 1 ]; then
	BIN="$("$HERE/build.sh" --print-bin-dir)"
else
	BIN="$("$HERE/build.sh" | tail -n1)" || die "build.sh failed"
fi
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm; do
	[ -x "$BIN/$b" ] || die "$BIN/$b missing: run $HERE/build.sh"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-smoke.XXXXXX")"
PIDS=()
cleanup() {
	local rc=$?
	set +e
	# Stop in reverse start order (kube-apiserver before etcd, else its
	# graceful shutdown hangs on the missing etcd); SIGKILL after 10s.
	local i p
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		p="${PIDS[$i]}"
		kill -TERM "$p" 2>/dev/null
		for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	if [ $rc -ne 0 ]; then
		for f in "$WORK"/*.log; do
			[ -f "$f" ] || continue
			printf '\n----- last lines of %s -----\n' "$f" >&2
			tail -n 25 "$f" >&2
		done
		printf '\n[smoke.sh] FAILED (exit %s)\n' "$rc" >&2
	fi
	if [ "${SMOKE_KEEP:-0}" = 1 ]; then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nobody listens on at $ADDR (racy, but good enough for a smoke test).
free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 20000))
		if ! (exec 3<>"/dev/tcp/$ADDR/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found on $ADDR"
}
ETCD_PORT="${SMOKE_ETCD_PORT:-$(free_port)}"
ETCD_PEER_PORT="${SMOKE_ETCD_PEER_PORT:-$(free_port)}"
API_PORT="${SMOKE_APISERVER_PORT:-$(free_port)}"
KCM_PORT="${SMOKE_KCM_PORT:-$(free_port)}"
SCHED_PORT="${SMOKE_SCHED_PORT:-$(free_port)}"

# URL host part (brackets for IPv6).
HOST="$ADDR"
case "$ADDR" in *:*) HOST="[$ADDR]" ;; esac
SAN_ADDR="IP:$ADDR"

log "work dir $WORK, address $ADDR"

# ---- certificates ---------------------------------------------------------------
PKI="$WORK/pki"
mkdir -p "$PKI"
log "generating CA, serving/client certs and service-account key with openssl"
(
	set -e
	cd "$PKI"
	exec 2>>"$WORK/openssl.out"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
		-subj "/CN=switchyard-smoke-ca" >/dev/null
	# sign NAME SUBJECT EXTENSIONS
	sign() {
		openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" >/dev/null
		printf '%s\n' "$3" >"$1.ext"
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
			-extfile "$1.ext" -out "$1.crt" >/dev/null
	}
	sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$SAN_ADDR,IP:$SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	client_ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
	sign admin "/O=system:masters/CN=switchyard-admin" "$client_ext"
	sign front-proxy-client "/CN=front-proxy-client" "$client_ext"
	sign kcm "/CN=system:kube-controller-manager" "$client_ext"
	sign scheduler "/CN=system:kube-scheduler" "$client_ext"
	openssl genrsa -out sa.key 2048 >/dev/null
	openssl rsa -in sa.key -pubout -out sa.pub >/dev/null
) || die "openssl failed, see $WORK/openssl.out"

kubeconfig() { # NAME CERTNAME
	local kc="$WORK/$1.kubeconfig"
	"$BIN/kubectl" config --kubeconfig="$kc" set-cluster smoke --server="https://$HOST:$API_PORT" \
		--certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
	"$BIN/kubectl" config --kubeconfig="$kc" set-credentials "$1" \
		--client-certificate="$PKI/$2.crt" --client-key="$PKI/$2.key" --embed-certs=true >/dev/null
	"$BIN/kubectl" config --kubeconfig="$kc" set-context smoke --cluster=smoke --user="$1" >/dev/null
	"$BIN/kubectl" config --kubeconfig="$kc" use-context smoke >/dev/null
}
kubeconfig admin admin
kubeconfig kcm kcm
kubeconfig scheduler scheduler
export KUBECONFIG="$WORK/admin.kubeconfig"
k() { "$BIN/kubectl" "$@"; }

start() { # NAME CMD...
	local name="$1"
	shift
	"$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=("$!")
	log "started $name (pid $!), log $WORK/$name.log"
}
alive() { kill -0 "$1" 2>/dev/null; }

# wait_for WHAT SECONDS PID CMD...: retry CMD until it succeeds, the process
# dies or time runs out.
wait_for() {
	local what="$1" secs="$2" pid="$3"
	shift 3
	local t0=$SECONDS
	until "$@" >/dev/null 2>&1; do
		alive "$pid" || die "$what: process $pid exited"
		[ $((SECONDS - t0)) -lt "$secs" ] || die "$what: not ready after ${secs}s"
		sleep 0.5
	done
	log "$what: ready after $((SECONDS - t0))s"
}

# ---- etcd -------------------------------------------------------------------------
start etcd "$BIN/etcd" \
	--name=smoke \
	--data-dir="$WORK/etcd" \
	--listen-client-urls="http://$HOST:$ETCD_PORT" \
	--advertise-client-urls="http://$HOST:$ETCD_PORT" \
	--listen-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
	--initial-advertise-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
	--initial-cluster="smoke=http://$HOST:$ETCD_PEER_PORT" \
	--initial-cluster-state=new \
	--unsafe-no-fsync \
	--log-level=warn
ETCD_PID="${PIDS[-1]}"
etcd_healthy() { (exec 3<>"/dev/tcp/$ADDR/$ETCD_PORT") 2>/dev/null; }
wait_for etcd 60 "$ETCD_PID" etcd_healthy

# ---- kube-apiserver -----------------------------------------------------------------
# kube-apiserver refuses a loopback --advertise-address with the default
# (lease) endpoint reconciler: "cannot use public IP 127.0.0.1 with endpoint
# reconciler ... may not be in the loopback range". On loopback, switch the
# reconciler off (the `default/kubernetes` Endpoints are then not maintained);
# on a non-loopback address (the e2e network namespace) keep `lease`.
case "$ADDR" in
127.* | ::1) ENDPOINT_RECONCILER="${SMOKE_ENDPOINT_RECONCILER:-none}" ;;
*) ENDPOINT_RECONCILER="${SMOKE_ENDPOINT_RECONCILER:-lease}" ;;
esac
APISERVER_FLAGS=(
	--etcd-servers="http://$HOST:$ETCD_PORT"
	--bind-address="$ADDR"
	--advertise-address="$ADDR"
	--secure-port="$API_PORT"
	--tls-cert-file="$PKI/apiserver.crt"
	--tls-private-key-file="$PKI/apiserver.key"
	--client-ca-file="$PKI/ca.crt"
	--service-account-issuer="https://kubernetes.default.svc.cluster.local"
	--service-account-key-file="$PKI/sa.pub"
	--service-account-signing-key-file="$PKI/sa.key"
	--service-cluster-ip-range="$SERVICE_CIDR"
	--authorization-mode=RBAC
	--requestheader-client-ca-file="$PKI/ca.crt"
	--requestheader-allowed-names=front-proxy-client
	--requestheader-username-headers=X-Remote-User
	--requestheader-group-headers=X-Remote-Group
	--requestheader-extra-headers-prefix=X-Remote-Extra-
	--proxy-client-cert-file="$PKI/front-proxy-client.crt"
	--proxy-client-key-file="$PKI/front-proxy-client.key"
	--endpoint-reconciler-type="$ENDPOINT_RECONCILER"
	--allow-privileged=true
	--profiling=false
	--v=1
)
start kube-apiserver "$BIN/kube-apiserver" "${APISERVER_FLAGS[@]}"
API_PID="${PIDS[-1]}"
wait_for "kube-apiserver /readyz" 180 "$API_PID" k get --raw /readyz

# ---- controller-manager and scheduler -------------------------------------------------
start kube-controller-manager "$BIN/kube-controller-manager" \
	--kubeconfig="$WORK/kcm.kubeconfig" \
	--authentication-kubeconfig="$WORK/kcm.kubeconfig" \
	--authorization-kubeconfig="$WORK/kcm.kubeconfig" \
	--bind-address="$ADDR" --secure-port="$KCM_PORT" \
	--leader-elect=false \
	--use-service-account-credentials=true \
	--service-account-private-key-file="$PKI/sa.key" \
	--root-ca-file="$PKI/ca.crt" \
	--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--v=1
KCM_PID="${PIDS[-1]}"
start kube-scheduler "$BIN/kube-scheduler" \
	--kubeconfig="$WORK/scheduler.kubeconfig" \
	--authentication-kubeconfig="$WORK/scheduler.kubeconfig" \
	--authorization-kubeconfig="$WORK/scheduler.kubeconfig" \
	--bind-address="$ADDR" --secure-port="$SCHED_PORT" \
	--leader-elect=false \
	--v=1
SCHED_PID="${PIDS[-1]}"
wait_for "kube-controller-manager /healthz" 120 "$KCM_PID" \
	k --server="https://$HOST:$KCM_PORT" --insecure-skip-tls-verify=true get --raw /healthz
wait_for "kube-scheduler /healthz" 120 "$SCHED_PID" \
	k --server="https://$HOST:$SCHED_PORT" --insecure-skip-tls-verify=true get --raw /healthz

# ---- the checks -----------------------------------------------------------------------
log "kubectl get --raw /version"
k get --raw /version
echo
log "kubectl version"
k version
log "kubectl api-resources | head"
# (not piped straight into head: kubectl would die of SIGPIPE under pipefail)
k api-resources >"$WORK/api-resources.txt"
head "$WORK/api-resources.txt"
log "kubectl create namespace smoke"
k create namespace smoke

# The controller-manager creates the default ServiceAccount; the scheduler
# marks a pod Unschedulable (there are no nodes). Together they prove both run.
sa_exists() { k -n smoke get serviceaccount default; }
wait_for "kube-controller-manager: ServiceAccount smoke/default" 120 "$KCM_PID" sa_exists
k -n smoke run smoke-pod --image=registry.invalid/none:0 --restart=Never >/dev/null
pod_unschedulable() {
	[ "$(k -n smoke get pod smoke-pod -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}')" = Unschedulable ]
}
wait_for "kube-scheduler: pod smoke/smoke-pod Unschedulable (no nodes)" 120 "$SCHED_PID" pod_unschedulable

# With the lease reconciler (non-loopback address) the apiserver publishes
# itself in the default/kubernetes EndpointSlice, as in a real cluster.
if [ "$ENDPOINT_RECONCILER" = lease ]; then
	kubernetes_endpoint() {
		k -n default get endpointslice kubernetes -o jsonpath='{.endpoints[*].addresses[*]}' | grep -qxF "$ADDR"
	}
	wait_for "EndpointSlice default/kubernetes -> $ADDR" 60 "$API_PID" kubernetes_endpoint
fi

log "helm version"
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"
"$BIN/helm" version
log "helm create + helm install (no --wait) + helm list"
"$BIN/helm" create "$WORK/smoke-chart" >/dev/null
"$BIN/helm" install smoke-chart "$WORK/smoke-chart" --namespace smoke
"$BIN/helm" list --namespace smoke
k -n smoke get deployment,service

log "OK: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and helm work (address $ADDR)"
