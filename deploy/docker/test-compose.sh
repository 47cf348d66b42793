#!/bin/sh
# deploy/docker/test-compose.sh: the Compose demo end to end with the engine
# it finds, in this order: Docker Compose v2 (`docker compose`) with a running
# Docker daemon, else the standalone docker-compose (v1, e.g. 1.29 from
# Debian 12) with a running Docker daemon, else podman with podman-compose:
# builds the image, provisions (kits, model, the hospitals'
# data), starts the aggregator and waits for its health check (the Admin
# API), starts the parties, waits until all four are connected, runs a short
# training run, fetches the results into a temporary results directory,
# checks them, and tears everything down (containers, network, volumes, the
# temporary host directories; KEEP=1 keeps them).
# Without an engine it prints one SKIP line and exits 0.
#
# Environment:
#   VFLCLIP_ENGINE=docker|docker-compose|podman   force one: docker (with
#                                    `docker compose` if it exists, else docker-compose),
#                                    docker-compose (docker with the v1 tool), podman
#   VFLCLIP_BASE_BUILD / VFLCLIP_BASE_RUN   base images (default debian:bookworm /
#                                    debian:bookworm-slim; deploy/docker/make-base-image.sh
#                                    makes them without a registry)
#   VFLCLIP_OCI_RUNTIME=runc         podman: the OCI runtime (a sandbox where crun
#                                    cannot set rlimits)
#   DEMO_EPOCHS (2), VFLCLIP_PORT (a free one), KEEP=1 (leave it running)
set -eu
cd "$(dirname "$0")"
HERE=$PWD
say() { printf '\n== %s\n' "$*"; }

has() { command -v "$1" >/dev/null 2>&1; }
compose_v2() { has docker && docker compose version >/dev/null 2>&1; }
engine=${VFLCLIP_ENGINE:-}
compose=""
case $engine in
    "")
        if compose_v2 && docker info >/dev/null 2>&1; then
            engine=docker compose="docker compose"
        elif has docker && has docker-compose && docker info >/dev/null 2>&1; then
            engine=docker compose=docker-compose
        elif has podman && has podman-compose; then
            engine=podman
        else
            echo "SKIP: no Compose engine (a running Docker daemon with docker compose or docker-compose, or podman + podman-compose)"
            exit 0
        fi ;;
    docker) compose_v2 && compose="docker compose" || compose=docker-compose ;;
    docker-compose) engine=docker compose=docker-compose ;;
    podman) ;;
    *) echo "VFLCLIP_ENGINE=$engine: docker, docker-compose or podman" >&2; exit 2 ;;
esac
PROJECT=vflclip-test-$$
export COMPOSE_PROJECT_NAME=$PROJECT
if [ "$engine" = docker ]; then
    C="$compose -p $PROJECT -f docker-compose.yml"
else
    C="podman-compose -p $PROJECT -f docker-compose.yml"
    if [ -n "${VFLCLIP_OCI_RUNTIME:-}" ]; then
        conf=$(mktemp)
        printf '[engine]\nruntime = "%s"\n' "$VFLCLIP_OCI_RUNTIME" > "$conf"
        export CONTAINERS_CONF=$conf
    fi
fi
export DEMO_EPOCHS=${DEMO_EPOCHS:-2}
export VFLCLIP_PORT=${VFLCLIP_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
# Host directories of the Compose file, in a temporary directory (nothing is left in the tree).
TMP=$(mktemp -d /tmp/vflclip-compose.XXXXXX)
mkdir -p "$TMP/models" "$TMP/input"
install -d -m 0777 "$TMP/results"
export VFLCLIP_MODELS=$TMP/models VFLCLIP_INPUT=$TMP/input VFLCLIP_RESULTS=$TMP/results
RESULTS=$TMP/results/$PROJECT
server=""
[ "$engine" = docker ] && server="; server $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
echo "engine: $engine ($($engine --version | head -n 1)$server); compose: $($C version 2>/dev/null | grep -i 'compose.*version' | head -n 1)"

down() {
    [ -n "${KEEP:-}" ] && { echo "KEEP=1: left running (project $PROJECT)"; return; }
    say "tear down"
    $C --profile admin down -v >/dev/null 2>&1 || $C down -v >/dev/null 2>&1 || true
    # podman-compose 1.0 leaves the project's network behind
    $engine network rm "${PROJECT}_federation" >/dev/null 2>&1 || true
    left=$( ($engine ps -a --format '{{.Names}}'; $engine volume ls -q; $engine network ls -q) 2>/dev/null | grep "$PROJECT" || true)
    [ -z "$left" ] && echo "no container, volume or network of $PROJECT left" || echo "left: $left"
    rm -rf "$TMP"
}
trap down EXIT
trap 'exit 130' INT TERM

say "build the image ($C build)"
export VFLCLIP_BASE_BUILD=${VFLCLIP_BASE_BUILD:-debian:bookworm} VFLCLIP_BASE_RUN=${VFLCLIP_BASE_RUN:-debian:bookworm-slim}
export BUILDAH_FORMAT=docker   # podman: an OCI image would drop the HEALTHCHECK
# (podman-compose 1.0 exits 0 when the build fails; its last "exit code:" line says it)
if ! $C build > "$TMP/build.log" 2>&1 || grep -q '^exit code: [1-9]' "$TMP/build.log"; then
    tail -n 30 "$TMP/build.log"; echo "FAIL: the image did not build"; exit 1
fi
$engine image inspect vflclip:latest | python3 -c 'import json,sys; i=json.load(sys.stdin)[0]; c=i.get("Config") or {}
print("image", i["Id"].split(":")[-1][:12], "user", c.get("User"), "healthcheck", (c.get("Healthcheck") or i.get("Healthcheck") or {}).get("Test"))'

say "provision (one-shot)"
$C run --rm --no-deps provision

say "aggregator, until its health check (Admin API) passes"
$C up -d aggregator
agg=$($engine ps --filter "name=${PROJECT}[-_]aggregator" --format '{{.Names}}' | head -n 1)
ok=""
for _ in $(seq 1 60); do
    if [ "$engine" = podman ]; then
        podman healthcheck run "$agg" >/dev/null 2>&1 && ok=1
    else
        [ "$(docker inspect --format '{{.State.Health.Status}}' "$agg")" = healthy ] && ok=1
    fi
    [ -n "$ok" ] && break
    sleep 2
done
[ -n "$ok" ] || { $engine logs "$agg" | tail -n 20; echo "FAIL: the aggregator never became healthy"; exit 1; }
echo "$agg: healthy"
echo "published: $($engine port "$agg" | tr '\n' ' ')"

say "the parties, until all four are connected"
$C up -d --no-deps knowledge-party image-party-a image-party-b image-party-c
n=0
for _ in $(seq 1 90); do
    n=$($C run --rm --no-deps admin vflclip status --json 2>/dev/null | python3 -c 'import json,sys
# podman-compose 1.0 writes its own commands to stdout too: the status is the line with the JSON object
print([json.loads(l) for l in sys.stdin if l.startswith("{")][-1]["parties_connected"])' 2>/dev/null || echo 0)
    [ "$n" = 4 ] && break
    sleep 2
done
$C run --rm --no-deps admin vflclip status
[ "$n" = 4 ] || { for s in knowledge-party image-party-a; do $C logs "$s" 2>&1 | tail -n 10; done; echo "FAIL: $n of 4 parties connected"; exit 1; }

say "training run ($DEMO_EPOCHS epochs)"
$C run --rm --no-deps admin vflclip run start --config /fed/run.ini --watch 2>&1 | grep -v 'event=rpc_conn'

say "results"
$C run --rm --no-deps admin vflclip run results --out "/results/$PROJECT" >/dev/null
python3 - "$RESULTS" <<'EOF'
import json, os, sys
d = sys.argv[1]
t = json.load(open(f"{d}/test_metrics.json"))
epochs = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
print(f"epochs {len(epochs)}, train loss {epochs[0]['train_loss']:.4f} -> {epochs[-1]['train_loss']:.4f}")
print(f"test ({t['n']} images): AUC {t['auc']:.4f}  ACC {t['acc']:.4f}")
for f in ("context.safetensors", "auc_acc.png", "loss.png", "confusion_test.png", "transcript.jsonl"):
    assert os.path.getsize(f"{d}/{f}") > 0, f
print("on the host:", d, sorted(os.listdir(d)))
EOF
echo "PASS: Compose demo with $engine"
