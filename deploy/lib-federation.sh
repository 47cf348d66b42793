# deploy/lib-federation.sh: a three-hospital federation on this machine, in
# pieces. Sourced (not run) by deploy/demo.sh and deploy/table1.sh; each
# function does one step of what demo.sh's header describes.
#
# The caller sets B (the directory holding vflclip and the three daemons) and
# PY (a python3 with numpy). Daemons started here are remembered in FED_PIDS
# and stopped by fed_stop_daemons.
# shellcheck shell=bash

FED_HOSPITALS="hospital-a hospital-b hospital-c"
FED_PIDS=()

# A free TCP port on loopback.
fed_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# fed_provision FED PORT: a CA and kits for an aggregator listening on
# 127.0.0.1:PORT, the three hospitals, the knowledge party derm-centre and
# the admin operator, in the directory FED.
fed_provision() {
    local fed=$1 port=$2
    # shellcheck disable=SC2086
    "$B/vflclip" provision --out "$fed" --aggregator localhost,127.0.0.1 --port "$port" \
        --image-party $FED_HOSPITALS --knowledge-party derm-centre --admin operator
    sed -i 's/^host = 0.0.0.0$/host = 127.0.0.1/' "$fed/aggregator-localhost/aggregator.ini"
}

# fed_split_npz NPZ DIR: DIR/hospital-{a,b,c}.npz, each split of NPZ cut in
# three consecutive parts (np.array_split), so that concatenated in party-name
# order they are the original split in its original order.
fed_split_npz() {
    "$PY" "$(dirname "${BASH_SOURCE[0]}")/demo_data.py" --out "$2" --npz "$1"
}

# fed_configure FED MODEL DATA_DIR [DEVICE]: fills the kits' REQUIRED keys:
# every party's model directory, each hospital's DATA_DIR/<hospital>.npz and,
# when DEVICE is given, where the hospitals encode ([encode] device).
fed_configure() {
    local fed=$1 model=$2 data_dir=$3 device=${4:-} h ini
    for h in $FED_HOSPITALS; do
        ini=$fed/image-party-$h/image-party.ini
        sed -i "s|^dir =\$|dir = $model|; s|^path =\$|path = $data_dir/$h.npz|" "$ini"
        if [ -n "$device" ]; then printf '\n[encode]\ndevice = %s\n' "$device" >> "$ini"; fi
    done
    sed -i "s|^dir =\$|dir = $model|" "$fed/knowledge-party-derm-centre/knowledge-party.ini"
}

# fed_start_daemons FED LOGS: the aggregator, the knowledge party and the
# three hospitals in the background, each logging to LOGS/<name>.log. With
# FED_IMAGE_THREADS set, each hospital computes on that many threads (three
# encoding at once on one machine would otherwise each take every core).
fed_start_daemons() {
    local fed=$1 logs=$2 h threads=()
    if [ -n "${FED_IMAGE_THREADS:-}" ]; then
        threads=(env OMP_NUM_THREADS="$FED_IMAGE_THREADS" OPENBLAS_NUM_THREADS="$FED_IMAGE_THREADS")
    fi
    "$B/vflclip-aggregator" --config "$fed/aggregator-localhost/aggregator.ini" >"$logs/aggregator.log" 2>&1 &
    FED_PIDS+=($!)
    "$B/vflclip-knowledge-party" --config "$fed/knowledge-party-derm-centre/knowledge-party.ini" \
        >"$logs/knowledge-party.log" 2>&1 &
    FED_PIDS+=($!)
    for h in $FED_HOSPITALS; do
        "${threads[@]}" "$B/vflclip-image-party" --config "$fed/image-party-$h/image-party.ini" >"$logs/$h.log" 2>&1 &
        FED_PIDS+=($!)
    done
}

# How many parties the aggregator has connected (0 while it does not answer);
# the admin kit is $VFLCLIP_ADMIN_CONFIG.
fed_parties_connected() {
    "$B/vflclip" status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["parties_connected"])' \
        || echo 0
}

# fed_wait_parties N TRIES: polls every 0.2 s, at most TRIES times, until N
# parties are connected; returns 1 if they are not.
fed_wait_parties() {
    local want=$1 tries=$2 n
    for _ in $(seq 1 "$tries"); do
        n=$(fed_parties_connected)
        [ "$n" = "$want" ] && return 0
        sleep 0.2
    done
    return 1
}

# Stops (SIGTERM) and reaps every daemon fed_start_daemons started.
fed_stop_daemons() {
    local p
    for p in "${FED_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${FED_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    FED_PIDS=()
}
