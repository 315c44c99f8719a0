#!/bin/sh
# The service as a fleet on this machine's Docker Engine in swarm mode: 3 replicas behind HAProxy
# (deploy/swarm/stack.yml). `make fleet` and `make fleet-down` run this.
#
#   deploy/swarm/fleet.sh up      make this machine a one-node swarm if it is in none, build the
#                                 balancer's image, fill the model volume if it is new, deploy the
#                                 stack and wait until every replica is ready behind the balancer
#   deploy/swarm/fleet.sh down    remove the stack and wait until its containers are gone; the model
#                                 volume and the swarm are kept
#
# Environment:
#   IMAGE          the service's image (default inception-v2-service:demo); a name without a tag means
#                  its :demo, as `make image IMAGE=name` tags it
#   MODELS         a model repository folder to copy into the model volume when it is made; unset: the
#                  image's own /models (the demo image's demo model)
#   MODELS_VOLUME  the volume holding the model repository (default inception-v2_models)
#   MODEL_NAME     the model the replicas serve from it (default inception_v2)
#   FLEET_PORT     the balancer's port on this host (default 8080)
#   BASE_IMAGE     the balancer image's base (default inception-v2-base:bookworm, which `make image` makes)
#   LB_IMAGE       the balancer's image tag (default inception-v2-haproxy:bookworm)
#   FLEET_TIMEOUT  seconds to wait for the fleet to be ready, or gone (default 600)
#   DOCKER         docker command (default docker)
set -eu
cd "$(dirname "$0")/../.."
STACK=inception-v2
DOCKER="${DOCKER:-docker}"
IMAGE="${IMAGE:-inception-v2-service:demo}"
case "${IMAGE##*/}" in *:* | *@*) ;; *) IMAGE="$IMAGE:demo" ;; esac
MODELS="${MODELS:-}"
MODELS_VOLUME="${MODELS_VOLUME:-inception-v2_models}"
MODEL_NAME="${MODEL_NAME:-inception_v2}"
FLEET_PORT="${FLEET_PORT:-8080}"
BASE_IMAGE="${BASE_IMAGE:-inception-v2-base:bookworm}"
LB_IMAGE="${LB_IMAGE:-inception-v2-haproxy:bookworm}"
FLEET_TIMEOUT="${FLEET_TIMEOUT:-600}"
export IMAGE MODELS_VOLUME MODEL_NAME FLEET_PORT LB_IMAGE

fail() {
    echo "error: $*" >&2
    exit 1
}

# Each service of the stack as "name running/desired".
replicas() {
    $DOCKER service ls --filter "label=com.docker.stack.namespace=$STACK" --format '{{.Name}} {{.Replicas}}'
}

# Each service's rolling update, if one was ever made: updating, completed, rollback_completed, ...
update_states() {
    for service in $($DOCKER service ls --quiet --filter "label=com.docker.stack.namespace=$STACK"); do
        $DOCKER service inspect --format '{{.Spec.Name}} {{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$service"
    done
}

# True once every service runs as many tasks as it wants (a task runs once its health check passed)
# and no update is still rolling; an update rolled back or paused is an error.
converged() {
    states="$(update_states)"
    if echo "$states" | grep -E ' (rollback_[a-z]+|paused)$' >&2; then
        fail "the update did not complete (docker service ps --no-trunc ${STACK}_api says why)"
    fi
    ! echo "$states" | grep -q ' updating$' && [ -n "$(replicas)" ] &&
        replicas | awk '{ split($2, n, "/"); if (n[1] != n[2] || n[2] == 0) bad = 1 } END { exit bad }'
}

# GET a path of the balancer from inside its container: the host needs no HTTP client.
balancer_get() {
    lb="$($DOCKER ps --quiet --filter "label=com.docker.swarm.service.name=${STACK}_lb" | head -n 1)"
    [ -n "$lb" ] && $DOCKER exec "$lb" python3 -c \
        "import sys, urllib.request as u; sys.stdout.write(u.urlopen('http://127.0.0.1:$1', timeout=5).read().decode())" \
        2>/dev/null
}

wait_until() {
    what="$1"
    shift
    deadline=$(($(date +%s) + FLEET_TIMEOUT))
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within $FLEET_TIMEOUT s"
        sleep 2
    done
}

join_swarm() {
    state="$($DOCKER info --format '{{.Swarm.LocalNodeState}}')"
    if [ "$state" = inactive ]; then
        echo "This Docker Engine is in no swarm: making it a one-node swarm (docker swarm leave --force undoes it)" >&2
        $DOCKER swarm init --advertise-addr 127.0.0.1 >/dev/null
    elif [ "$state" != active ]; then
        fail "this Docker Engine's swarm state is '$state': see docker info"
    fi
    [ "$($DOCKER info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
        fail "this node is a swarm worker: deploy from a manager"
}

build_balancer() {
    $DOCKER image inspect "$BASE_IMAGE" >/dev/null 2>&1 ||
        fail "no base image $BASE_IMAGE: make image makes it (or BASE_IMAGE=debian:bookworm-slim where a registry is reachable)"
    echo "Building the balancer's image $LB_IMAGE" >&2
    DOCKER_BUILDKIT=1 $DOCKER build --quiet --build-arg BASE_IMAGE="$BASE_IMAGE" --tag "$LB_IMAGE" \
        deploy/swarm/haproxy >/dev/null
}

# A new volume gets the model repository from MODELS, or from the image (Docker copies an image's
# files into an empty volume mounted over them). An existing one is the repository: it is left alone.
fill_model_volume() {
    $DOCKER volume inspect "$MODELS_VOLUME" >/dev/null 2>&1 && return
    $DOCKER volume create "$MODELS_VOLUME" >/dev/null
    if [ -n "$MODELS" ]; then
        [ -d "$MODELS" ] || fail "MODELS=$MODELS is not a folder"
        echo "Copying the model repository $MODELS into the volume $MODELS_VOLUME" >&2
        $DOCKER run --rm --network none --user 0 --entrypoint sh \
            --volume "$(cd "$MODELS" && pwd):/incoming:ro" --volume "$MODELS_VOLUME:/models:nocopy" "$IMAGE" \
            -c 'cp -R /incoming/. /models/ && chmod -R a+rX /models'
    else
        echo "Filling the volume $MODELS_VOLUME with the models of $IMAGE" >&2
        $DOCKER run --rm --network none --volume "$MODELS_VOLUME:/models" "$IMAGE" true
    fi
}

check_model_volume() {
    versions="$($DOCKER run --rm --network none --entrypoint sh --volume "$MODELS_VOLUME:/models:ro" "$IMAGE" \
        -c "ls /models/$MODEL_NAME 2>/dev/null | grep -E '^[0-9]+$' || true")"
    [ -n "$versions" ] || fail "the volume $MODELS_VOLUME has no version of $MODEL_NAME: remove it" \
        "(docker volume rm $MODELS_VOLUME) and run again with MODELS=<a model repository folder>," \
        "or with the demo image"
    echo "The volume $MODELS_VOLUME holds versions $(echo "$versions" | tr '\n' ' ')of $MODEL_NAME" >&2
}

# Every replica of the stack in HAProxy's pool and UP (HAProxy's CSV: name is field 2, status 18).
balanced() {
    running="$(replicas | awk -v api="${STACK}_api" '$1 == api { split($2, n, "/"); print n[1] }')"
    up="$(balancer_get 8404/stats\;csv | awk -F, '$1 == "api" && $2 != "BACKEND" && $18 == "UP"' | wc -l)"
    [ "$up" -eq "$running" ]
}

up() {
    $DOCKER image inspect "$IMAGE" >/dev/null 2>&1 ||
        fail "no image $IMAGE here: make image builds inception-v2-service:demo (IMAGE= chooses another)"
    join_swarm
    build_balancer
    fill_model_volume
    check_model_volume
    echo "Deploying the stack $STACK: $IMAGE behind $LB_IMAGE" >&2
    $DOCKER stack deploy --resolve-image never --prune --compose-file deploy/swarm/stack.yml "$STACK"
    wait_until "every replica running and healthy" converged
    wait_until "every replica UP in the balancer" balanced
    replicas
    echo "Ready: http://127.0.0.1:$FLEET_PORT (curl -F file=@image.jpg http://127.0.0.1:$FLEET_PORT/predict)" >&2
}

# Engine 20.10's `stack rm` removes the network right after the services and gives up, exit status 1,
# while a task is still draining ("network ... is in use by task"): once the containers are gone, the
# network left behind is removed here, again until it goes.
gone() {
    [ -z "$($DOCKER ps --all --quiet --filter "label=com.docker.stack.namespace=$STACK")" ] || return 1
    networks="$($DOCKER network ls --quiet --filter "label=com.docker.stack.namespace=$STACK")"
    [ -z "$networks" ] && return 0
    # shellcheck disable=SC2086 # one id a word
    $DOCKER network rm $networks >/dev/null 2>&1 || true
    return 1
}

down() {
    if $DOCKER info --format '{{.Swarm.ControlAvailable}}' | grep -q true && [ -n "$(replicas)" ]; then
        $DOCKER stack rm "$STACK" || echo "Waiting for the stack's last tasks to let go of its network" >&2
    fi
    # The replicas drain before they stop (up to a minute each, in parallel).
    wait_until "the stack's containers and network gone" gone
    echo "Removed the stack $STACK. Kept: the volume $MODELS_VOLUME (docker volume rm $MODELS_VOLUME)" \
        "and the swarm (docker swarm leave --force)" >&2
}

case "${1:-}" in
up) up ;;
down) down ;;
*) fail "usage: $0 up|down" ;;
esac
