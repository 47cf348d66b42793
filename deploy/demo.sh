#!/usr/bin/env bash
# deploy/demo.sh: the three-hospital federation on this machine, end to end.
#
#   1. installs the Debian packages (deploy/install-deps.sh) and builds (make)
#   2. provisions a CA and certificates for an aggregator on loopback, three
#      image parties (hospitals), one knowledge party and an admin
#   3. makes a tiny random-weight CLIP model, or uses $MODEL_DIR (a real
#      Hugging Face CLIP checkpoint directory) if set
#   4. makes demo data: coloured shapes in four classes, split over the three
#      hospitals (or $DATA_NPZ, a dermamnist*.npz, split the same way)
#   5. starts the three kinds of daemon, starts a run with `vflclip run start`,
#      shows its progress, fetches the results, prints the final metrics and
#      where the plots are, and stops every daemon it started.
#
# Environment: MODEL_DIR, DATA_NPZ, DEMO_DIR (work directory, default a new
# /tmp/vflclip-demo.*), DEMO_PORT (default: a free port), DEMO_EPOCHS (8),
# DEMO_BATCH (16), DEMO_LR (0.01), DEMO_NCTX (4),
# SKIP_DEPS=1 / SKIP_BUILD=1 (skip steps 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=$ROOT/build
say() { printf '\n== %s\n' "$*"; }

if [ -z "${SKIP_DEPS:-}" ]; then say "dependencies"; deploy/install-deps.sh; fi
if [ -z "${SKIP_BUILD:-}" ]; then say "build"; make -j"$(nproc)" all >/dev/null; fi

# Python with numpy for the demo data: Debian's (install-deps), else the test virtualenv.
PY=${PYTHON:-python3}
"$PY" -c 'import numpy' 2>/dev/null || PY=/usr/bin/python3
"$PY" -c 'import numpy' 2>/dev/null || PY=$ROOT/.venv/bin/python
WORK=${DEMO_DIR:-$(mktemp -d /tmp/vflclip-demo.XXXXXX)}
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
PORT=${DEMO_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
EPOCHS=${DEMO_EPOCHS:-8}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
HOSPITALS="hospital-a hospital-b hospital-c"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

say "certificates (work directory $WORK, aggregator on localhost:$PORT)"
# shellcheck disable=SC2086
"$B/vflclip" provision --out "$WORK/fed" --aggregator localhost,127.0.0.1 --port "$PORT" \
    --image-party $HOSPITALS --knowledge-party derm-centre --admin operator

if [ -n "${MODEL_DIR:-}" ]; then
    MODEL=$(cd "$MODEL_DIR" && pwd)
    say "model: $MODEL"
else
    MODEL=$WORK/model
    say "model: a tiny RANDOM-weight CLIP (set MODEL_DIR for a real checkpoint)"
    "$B/vflclip" make-model --like tiny --seed 3 --out "$MODEL"
fi

say "demo data"
"$PY" - "$WORK" "$MODEL" "${DATA_NPZ:-}" "${MODEL_DIR:-}" "$ROOT/deploy" <<'EOF'
import json, struct, sys
import numpy as np
work, model, data_npz, real_model, deploy_dir = sys.argv[1:6]
sys.path.insert(0, deploy_dir)
from demo_shapes import shapes
rng = np.random.default_rng(0)


if data_npz:
    src = np.load(data_npz)
    full = {k: src[k] for k in src.files}
else:
    full = {}
    for split, n in [("train", 240), ("val", 60), ("test", 120)]:
        full[f"{split}_images"], full[f"{split}_labels"] = shapes(rng, n)
for h, part in enumerate(["hospital-a", "hospital-b", "hospital-c"]):
    out = {}
    for split in ("train", "val", "test"):
        idx = np.array_split(np.arange(len(full[f"{split}_labels"])), 3)[h]
        out[f"{split}_images"], out[f"{split}_labels"] = full[f"{split}_images"][idx], full[f"{split}_labels"][idx]
    np.savez_compressed(f"{work}/{part}.npz", **out)
    print(f"{part}: " + ", ".join(f"{s} {len(out[s + '_labels'])}" for s in ("train", "val", "test")))

if not real_model:
    # make-model draws every matrix with std 0.02, which leaves a 2-layer tower
    # nearly blind to its input; rescale the encoder matrices to transformers'
    # own initialisation scales so the random model can learn the shapes.
    path = f"{model}/model.safetensors"
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    cfg = json.load(open(f"{model}/config.json"))
    data = bytearray(raw[8 + n:])
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        c = cfg["vision_config" if name.startswith("vision_model") else "text_config"]
        w, L = c["hidden_size"], c["num_hidden_layers"]
        if any(name.endswith(f"{p}_proj.weight") for p in "qkv") or name.endswith("fc2.weight"):
            std = w ** -0.5 * (2 * L) ** -0.5
        elif name.endswith("out_proj.weight"):
            std = w ** -0.5
        elif name.endswith("fc1.weight"):
            std = (2 * w) ** -0.5
        else:
            continue
        a, b = t["data_offsets"]
        x = np.frombuffer(bytes(data[a:b]), np.float32)
        data[a:b] = (x * (std / x.std())).astype(np.float32).tobytes()
    open(path, "wb").write(raw[:8 + n] + bytes(data))
EOF

say "configuration"
FED=$WORK/fed
sed -i 's/^host = 0.0.0.0$/host = 127.0.0.1/' "$FED/aggregator-localhost/aggregator.ini"
for h in $HOSPITALS; do
    sed -i "s|^dir =\$|dir = $MODEL|; s|^path =\$|path = $WORK/$h.npz|" "$FED/image-party-$h/image-party.ini"
done
KP_INI=$FED/knowledge-party-derm-centre/knowledge-party.ini
sed -i "s|^dir =\$|dir = $MODEL|" "$KP_INI"
if [ -z "${DATA_NPZ:-}" ]; then
    printf '\n[prompt]\nclasses = red disc,green square,blue stripe,yellow cross\ntemplate = a photo of {ctx} {class}.\n' >> "$KP_INI"
fi
cat > "$WORK/run.ini" <<EOF
[run]
epochs = $EPOCHS
batch_size = ${DEMO_BATCH:-16}
lr = ${DEMO_LR:-0.01}
n_ctx = ${DEMO_NCTX:-4}
seed = 1
EOF
echo "kits in $FED; run configuration $WORK/run.ini"

say "starting the daemons (logs in $WORK/logs)"
"$B/vflclip-aggregator" --config "$FED/aggregator-localhost/aggregator.ini" >"$WORK/logs/aggregator.log" 2>&1 &
PIDS+=($!)
"$B/vflclip-knowledge-party" --config "$KP_INI" >"$WORK/logs/knowledge-party.log" 2>&1 &
PIDS+=($!)
for h in $HOSPITALS; do
    "$B/vflclip-image-party" --config "$FED/image-party-$h/image-party.ini" >"$WORK/logs/$h.log" 2>&1 &
    PIDS+=($!)
done
export VFLCLIP_ADMIN_CONFIG=$FED/admin-operator/admin.ini
for _ in $(seq 1 300); do
    n=$("$B/vflclip" status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["parties_connected"])' || echo 0)
    [ "$n" = 4 ] && break
    sleep 0.2
done
"$B/vflclip" status 2>/dev/null

say "training run"
"$B/vflclip" run start --config "$WORK/run.ini" --watch 2>&1 | grep -v 'event=rpc_conn' | tee "$WORK/logs/watch.txt"

say "results"
"$B/vflclip" run results --out "$WORK/results" 2>/dev/null >/dev/null
"$PY" - "$WORK/results" <<'EOF'
import json, sys
d = sys.argv[1]
t = json.load(open(f"{d}/test_metrics.json"))
epochs = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
print(f"epochs {len(epochs)}, train loss {epochs[0]['train_loss']:.4f} -> {epochs[-1]['train_loss']:.4f}, "
      f"best epoch {epochs[-1]['best_epoch']}")
print(f"test ({t['n']} images): AUC {t['auc']:.4f}  ACC {t['acc']:.4f}  balanced ACC {t['balanced_acc']:.4f}")
EOF
echo "plots:   $WORK/results/auc_acc.png $WORK/results/loss.png $WORK/results/confusion_test.png"
echo "context: $WORK/results/context.safetensors (the learned prompt context)"
[ -n "${MODEL_DIR:-}" ] || echo "NOTE: the model has RANDOM weights: these metrics say nothing about dermatology."

say "stopping the daemons"
cleanup
PIDS=()
echo "done; everything is in $WORK"
