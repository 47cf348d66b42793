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
# DEMO_BATCH (16), DEMO_LR (0.01), DEMO_NCTX (4), DEMO_LOSS_AT (aggregator, the
# paper's way; image-parties: embeddings and labels stay at the hospitals and
# the aggregator receives only secure sums, docs/threat-model.md),
# SKIP_DEPS=1 / SKIP_BUILD=1 (skip steps 1), VFLCLIP_BUILD (where the programs are,
# default build/). The steps are the functions of deploy/lib-federation.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${VFLCLIP_BUILD:-$ROOT/build}
say() { printf '\n== %s\n' "$*"; }
# shellcheck source=deploy/lib-federation.sh
. "$ROOT/deploy/lib-federation.sh"

if [ -z "${SKIP_DEPS:-}" ]; then say "dependencies"; deploy/install-deps.sh; fi
if [ -z "${SKIP_BUILD:-}" ]; then say "build"; make -j"$(nproc)" all >/dev/null; fi

# Python with numpy for the demo data: Debian's (install-deps), else the test virtualenv.
PY=${PYTHON:-python3}
"$PY" -c 'import numpy' 2>/dev/null || PY=/usr/bin/python3
"$PY" -c 'import numpy' 2>/dev/null || PY=$ROOT/.venv/bin/python
WORK=${DEMO_DIR:-$(mktemp -d /tmp/vflclip-demo.XXXXXX)}
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
PORT=${DEMO_PORT:-$(fed_free_port)}
EPOCHS=${DEMO_EPOCHS:-8}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
trap fed_stop_daemons EXIT

say "certificates (work directory $WORK, aggregator on localhost:$PORT)"
fed_provision "$WORK/fed" "$PORT"

if [ -n "${MODEL_DIR:-}" ]; then
    MODEL=$(cd "$MODEL_DIR" && pwd)
    say "model: $MODEL"
else
    MODEL=$WORK/model
    say "model: a tiny RANDOM-weight CLIP (set MODEL_DIR for a real checkpoint)"
    "$B/vflclip" make-model --like tiny --seed 3 --out "$MODEL"
fi

say "demo data"
# deploy/demo_data.py: the synthetic shapes (or DATA_NPZ) cut in three, and
# the random model's encoder matrices rescaled so it can learn them.
set -- --out "$WORK"
if [ -n "${DATA_NPZ:-}" ]; then set -- "$@" --npz "$DATA_NPZ"; fi
if [ -z "${MODEL_DIR:-}" ]; then set -- "$@" --rescale-model "$MODEL"; fi
"$PY" "$ROOT/deploy/demo_data.py" "$@"

say "configuration"
FED=$WORK/fed
fed_configure "$FED" "$MODEL" "$WORK"
KP_INI=$FED/knowledge-party-derm-centre/knowledge-party.ini
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
loss_at = ${DEMO_LOSS_AT:-aggregator}
EOF
echo "kits in $FED; run configuration $WORK/run.ini"

say "starting the daemons (logs in $WORK/logs)"
fed_start_daemons "$FED" "$WORK/logs"
export VFLCLIP_ADMIN_CONFIG=$FED/admin-operator/admin.ini
fed_wait_parties 4 300 || true
"$B/vflclip" status 2>/dev/null

if [ "${DEMO_LOSS_AT:-aggregator}" = image-parties ]; then
    say "training run, loss at the image parties: embeddings and labels stay at each hospital; the aggregator sees only secure sums"
else
    say "training run, loss at the aggregator (the paper's way: it receives embeddings and labels)"
fi
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
p = json.load(open(f"{d}/privacy.json")).get("loss_at", {})
print(f"loss at {p.get('mode', 'aggregator')}: {p.get('note', '')}")
EOF
echo "plots:   $WORK/results/auc_acc.png $WORK/results/loss.png $WORK/results/confusion_test.png"
echo "context: $WORK/results/context.safetensors (the learned prompt context)"
[ -n "${MODEL_DIR:-}" ] || echo "NOTE: the model has RANDOM weights: these metrics say nothing about dermatology."

say "stopping the daemons"
fed_stop_daemons
echo "done; everything is in $WORK"
