#!/usr/bin/env bash
# deploy/table1.sh: the seed paper's Table I in one command (docs/reproduce-table1.md).
#
#   deploy/table1.sh --models DIR --data dermamnist_224.npz --out DIR
#                    [--federated] [--epochs N] [--batch-size N] [--device auto|cpu|cuda]
#
# For every model directory under --models (Hugging Face or OpenCLIP layout),
# CoOp prompt tuning with the paper's settings (16 random context vectors,
# Adam at 1e-3) and the settings the guide chose where the paper is silent,
# then OUT/table1.md and OUT/table1.csv: backbone, test AUC and ACC, the
# paper's numbers, the difference, wall time, images/s of encoding, device,
# and each run's plots (OUT/runs/<model>/). A backbone already done with the
# same settings is not redone, so an interrupted invocation resumes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() {
    cat <<'EOF'
usage: deploy/table1.sh --models DIR --data NPZ --out DIR [options]
  --models DIR       a directory of CLIP model directories, one per backbone (Hugging Face:
                     config.json + model.safetensors; OpenCLIP: open_clip_config.json +
                     open_clip_model.safetensors). The paper's seven backbones are recognised by
                     their configs; a file backbone.txt in a model directory names its backbone
                     instead (e.g. "ViT-B/16"); other models run too, without the paper's numbers.
  --data NPZ         DermaMNIST npz (MedMNIST layout; the guide uses dermamnist_224.npz)
  --out DIR          where runs/<model>/, table1.md and table1.csv go (created if missing)
  --federated        three image parties + knowledge party + aggregator on loopback, the npz split
                     over the three hospitals (default: one process, `vflclip train`)
  --epochs N         default 50          --batch-size N   default 32
  --seed N           default 1           --device D       auto (default) | cpu | cuda
  --tokenizer PATH   vocabulary for model directories without one (vocab.json + merges.txt, or
                     bpe_simple_vocab_16e6.txt.gz)
  --cache-dir DIR    image-embedding cache of the one-process runs (default OUT/cache)
  --bin DIR          where vflclip and the daemons are (default $VFLCLIP_BUILD, else build/)
  --list             only show which backbone each model directory is, and stop
Fixed (the paper's): --n-ctx 16, random context init, Adam, lr 1e-3, class token at the end.
Fixed (CoOp's defaults, the paper being silent): cosine schedule, one warm-up epoch at a constant
1e-5. Each model encodes at its own input size (224/288/336/384/448) with CLIP's preprocessing.
EOF
}

MODELS='' DATA='' OUT='' FEDERATED=0 EPOCHS=50 BATCH=32 SEED=1 DEVICE=auto TOKENIZER='' CACHE='' BIN='' LIST=0
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --federated) FEDERATED=1; shift; continue ;;
        --list) LIST=1; shift; continue ;;
    esac
    [ $# -ge 2 ] || { echo "table1: $1 needs a value" >&2; exit 2; }
    case $1 in
        --models) MODELS=$2 ;;
        --data) DATA=$2 ;;
        --out) OUT=$2 ;;
        --epochs) EPOCHS=$2 ;;
        --batch-size) BATCH=$2 ;;
        --seed) SEED=$2 ;;
        --device) DEVICE=$2 ;;
        --tokenizer) TOKENIZER=$2 ;;
        --cache-dir) CACHE=$2 ;;
        --bin) BIN=$2 ;;
        *) echo "table1: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift 2
done
[[ $EPOCHS =~ ^[1-9][0-9]*$ ]] || { echo "table1: --epochs $EPOCHS is not a positive integer" >&2; exit 2; }
[[ $BATCH =~ ^[1-9][0-9]*$ ]] || { echo "table1: --batch-size $BATCH is not a positive integer" >&2; exit 2; }
[[ $SEED =~ ^[0-9]+$ ]] || { echo "table1: --seed $SEED is not a non-negative integer" >&2; exit 2; }
case $DEVICE in auto|cpu|cuda) ;; *) echo "table1: --device $DEVICE is not auto, cpu or cuda" >&2; exit 2 ;; esac
[ -n "$MODELS" ] || { usage >&2; exit 2; }
[ -d "$MODELS" ] || { echo "table1: --models $MODELS is not a directory" >&2; exit 2; }
MODELS=$(cd "$MODELS" && pwd)

# The programs: --bin, $VFLCLIP_BUILD, build/, else vflclip on PATH.
B=${BIN:-${VFLCLIP_BUILD:-$ROOT/build}}
if [ ! -x "$B/vflclip" ] && [ -z "$BIN" ] && command -v vflclip >/dev/null; then B=$(dirname "$(command -v vflclip)"); fi
[ -x "$B/vflclip" ] || { echo "table1: $B/vflclip not found: build first (make), or give --bin DIR" >&2; exit 2; }
B=$(cd "$B" && pwd)
# Python for this script's bookkeeping (standard library) and, federated, for splitting the npz (numpy).
PY=${PYTHON:-python3}
"$PY" -c 'import numpy' 2>/dev/null || PY=/usr/bin/python3
"$PY" -c 'import numpy' 2>/dev/null || PY=$ROOT/.venv/bin/python
"$PY" -c 'import json' 2>/dev/null || { echo "table1: no python3 found (set PYTHON)" >&2; exit 2; }

# ---- bookkeeping in Python: recognising backbones, reading logs, writing the table ----
t1py() {
    "$PY" - "$@" <<'PYEOF'
import csv, datetime, glob, hashlib, json, os, re, sys

PAPER = {  # seed paper, Table I: test AUC, ACC
    "RN50x4": (0.931, 0.776), "RN50x16": (0.929, 0.776), "RN50x64": (0.884, 0.675),
    "ViT-B/16": (0.923, 0.771), "ViT-B/32": (0.914, 0.755), "ViT-L/14": (0.933, 0.793),
    "ViT-L/14-336": (0.934, 0.780)}
ORDER = list(PAPER)
# (layers, width, patch, image size) of the image tower; ResNets: (stage depths, width, None, size)
SHAPES = {
    "ViT-B/32": (12, 768, 32, 224), "ViT-B/16": (12, 768, 16, 224), "ViT-L/14": (24, 1024, 14, 224),
    "ViT-L/14-336": (24, 1024, 14, 336), "RN50x4": ((4, 6, 10, 6), 80, None, 288),
    "RN50x16": ((6, 8, 18, 8), 96, None, 384), "RN50x64": ((3, 15, 36, 10), 128, None, 448)}
MEDMNIST_MD5 = {"0744692d530f8e62ec473284d019b0c7": "dermamnist.npz (28 px)",
                "b70a2f5635c6199aeaa28c31d7202e1f": "dermamnist_64.npz", "2defd784463fa5243564e855ed717de1": "dermamnist_128.npz",
                "8974907d8e169bef5f5b96bc506ae45d": "dermamnist_224.npz"}


def recognise(d):
    """(layout, name or '', how, random_weights, problem)"""
    hf, oc = os.path.join(d, "config.json"), os.path.join(d, "open_clip_config.json")
    layout, shape, rnd, problem = None, None, False, ""
    try:
        if os.path.exists(oc):
            layout = "open_clip"
            c = json.load(open(oc))
            rnd = bool(c.get("vflclip_random_weights"))
            v = c.get("model_cfg", c).get("vision_cfg", {})
            layers = v.get("layers")
            layers = tuple(layers) if isinstance(layers, list) else layers
            shape = (layers, v.get("width"), v.get("patch_size"), v.get("image_size"))
            weights, binary = "open_clip_model.safetensors", "open_clip_pytorch_model.bin"
        elif os.path.exists(hf):
            layout = "hf"
            c = json.load(open(hf))
            rnd = bool(c.get("vflclip_random_weights"))
            v = c.get("vision_config") or c.get("vision_config_dict") or {}
            shape = (v.get("num_hidden_layers", 12), v.get("hidden_size", 768), v.get("patch_size", 32),
                     v.get("image_size", 224))
            weights, binary = "model.safetensors", "pytorch_model.bin"
        else:
            return None
    except (OSError, ValueError, AttributeError) as e:
        return (layout or "?", "", "", False, f"unreadable config: {e}")
    name = next((n for n, s in SHAPES.items() if s == shape), "")
    how = "config" if name else ""
    label = os.path.join(d, "backbone.txt")
    if os.path.exists(label):
        name, how = open(label).read().strip(), "backbone.txt"
    if not os.path.exists(os.path.join(d, weights)):
        if os.path.exists(os.path.join(d, binary)):
            problem = (f"only {binary}: convert it to {weights} first "
                       "(docs/reproduce-table1.md, 'Checkpoints that ship only a .bin')")
        else:
            problem = f"no {weights}"
    return (layout, name, how, rnd, problem)


def has_tokenizer(d):
    return (os.path.exists(os.path.join(d, "vocab.json")) and os.path.exists(os.path.join(d, "merges.txt"))) \
        or bool(glob.glob(os.path.join(d, "*.txt.gz")))


def slug(s):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


def cmd_inventory(models, tokenizer):
    rows = []
    for e in sorted(os.listdir(models)):
        d = os.path.join(models, e)
        if not os.path.isdir(d):
            continue
        r = recognise(d)
        if r is None:
            continue
        layout, name, how, rnd, problem = r
        if not problem and not tokenizer and not has_tokenizer(d):
            problem = "no vocabulary (vocab.json + merges.txt): copy one in or give --tokenizer"
        rows.append((slug(e), d, name, how, layout, int(rnd), problem))
    rank = lambda r: (ORDER.index(r[2]) if r[2] in ORDER else len(ORDER), r[0])
    for r in sorted(rows, key=rank):  # '-' for an empty field: bash's read collapses adjacent tabs
        print("\t".join(str(x) if str(x) else "-" for x in r))


def ts(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ", line)
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp() if m else None


def field(line, key):
    m = re.search(rf'\b{key}=("[^"]*"|\S+)', line)
    return m.group(1).strip('"') if m else None


def hardware(kind, gpu):
    if kind.startswith("cuda"):
        return f"{kind} ({gpu})" if gpu else kind
    model = ""
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = os.environ.get("T1_THREADS") or f"{os.environ.get('OMP_NUM_THREADS') or os.cpu_count()} threads"
    return f"{kind} ({model}, {threads})" if model else f"{kind} ({threads})"


def encoding_from_logs(logs):
    """images encoded, seconds, compute label, gpu name over one or more logs (the
    hospitals encode at the same time: from the earliest device choice to the last split)"""
    n, t0, t1, kind, gpu = 0, None, None, None, None
    for path in logs:
        for line in open(path, errors="replace"):
            t = ts(line)
            if "event=device " in line:
                t0 = t if t0 is None else min(t0, t)
                gpu = field(line, "gpu") or gpu
                kind = kind or field(line, "device")
            elif "event=embed_encoded " in line or ("event=split_encoded " in line):
                n += int(field(line, "encoded") or 0)
                if int(field(line, "encoded") or 0) > 0:
                    kind = field(line, "compute") or kind
                t1 = t if t1 is None else max(t1, t)
            elif "event=embeddings_ready " in line:
                t1 = t if t1 is None else max(t1, t)
    secs = (t1 - t0) if (t0 is not None and t1 is not None) else None
    return n, secs, kind or "?", gpu


def cmd_row(run, mode, name, how, model, t0, settings):
    wall = __import__("time").time() - float(t0)
    logs = [os.path.join(run, "train.log")] if mode == "single" else \
        sorted(glob.glob(os.path.join(run, "federation", "logs", "hospital-*.log")))
    n, secs, kind, gpu = encoding_from_logs(logs)
    t = json.load(open(os.path.join(run, "test_metrics.json")))
    row = {"backbone": name, "recognised_by": how, "model_dir": model, "mode": mode,
           "settings": json.loads(settings), "wall_s": round(float(wall), 1), "images_encoded": n,
           "encode_s": None if secs is None else round(secs, 3),
           "images_per_s": round(n / secs, 3) if n and secs and secs > 0 else None,
           "device": hardware(kind, gpu), "test_auc": t["auc"], "test_acc": t["acc"],
           "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")}
    tmp = os.path.join(run, "row.json.tmp")
    json.dump(row, open(tmp, "w"), indent=1)
    os.replace(tmp, os.path.join(run, "row.json"))
    print(f"test AUC {t['auc']:.4f}  ACC {t['acc']:.4f}  ({row['wall_s']:.0f} s"
          + (f", encoding {row['images_per_s']:.3g} images/s on {kind})" if row["images_per_s"] else ", embeddings from the cache)"))


def cmd_done(run, settings):
    """exit 0: done with these settings; 1: not done; 3: done with other settings"""
    p = os.path.join(run, "row.json")
    if not (os.path.exists(p) and os.path.exists(os.path.join(run, "test_metrics.json"))):
        sys.exit(1)
    row = json.load(open(p))
    if row.get("settings") != json.loads(settings):
        print(f"{run} was made with other settings ({json.dumps(row.get('settings'))}); "
              "use another --out, or delete that directory to redo it", file=sys.stderr)
        sys.exit(3)
    t = json.load(open(os.path.join(run, "test_metrics.json")))
    print(f"already done: test AUC {t['auc']:.4f}  ACC {t['acc']:.4f} (skipped)")


def md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def name_known(r):
    return not r["backbone"].endswith("(not one of the seven)")


def fmt(x, nd=3, sign=False):
    return "-" if x is None else (f"{x:+.{nd}f}" if sign else f"{x:.{nd}f}")


def cmd_table(out, inventory, settings, data, failed):
    s = json.loads(settings)
    failed = set(failed.split(",")) if failed else set()
    rows = []
    for line in open(inventory):
        sl, d, name, how, layout, rnd, problem = ("" if x == "-" else x for x in line.rstrip("\n").split("\t"))
        run = os.path.join(out, "runs", sl)
        r = {"model": sl, "backbone": name or f"{sl} (not one of the seven)", "recognised_by": how or "-", "layout": layout,
             "random_weights": rnd == "1", "run": os.path.join("runs", sl), "status": "not run"}
        if os.path.exists(os.path.join(run, "row.json")) and os.path.exists(os.path.join(run, "test_metrics.json")):
            row = json.load(open(os.path.join(run, "row.json")))
            t = json.load(open(os.path.join(run, "test_metrics.json")))
            r.update(status="done", auc=t["auc"], acc=t["acc"], wall_s=row["wall_s"], images_per_s=row["images_per_s"],
                     images_encoded=row["images_encoded"], device=row["device"], mode=row["mode"])
        elif sl in failed:
            r["status"] = f"failed (see {r['run']}/*.log)"
        paper = PAPER.get(name)
        r["paper_auc"], r["paper_acc"] = paper if paper else (None, None)
        r["d_auc"] = r["auc"] - paper[0] if paper and "auc" in r else None
        r["d_acc"] = r["acc"] - paper[1] if paper and "acc" in r else None
        rows.append(r)
    cols = ["backbone", "model", "test_auc", "test_acc", "paper_auc", "paper_acc", "diff_auc", "diff_acc", "wall_s",
            "encode_images_per_s", "images_encoded", "device", "recognised_by", "random_weights", "status", "plots"]
    with open(os.path.join(out, "table1.csv.tmp"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            g = lambda k: "" if r.get(k) is None else r.get(k)
            w.writerow([r["backbone"] if name_known(r) else "-", r["model"], g("auc"), g("acc"), g("paper_auc"), g("paper_acc"), g("d_auc"),
                        g("d_acc"), g("wall_s"), g("images_per_s"), g("images_encoded"), g("device"),
                        r["recognised_by"], r["random_weights"], r["status"],
                        os.path.join(r["run"], "auc_acc.png") if r["status"] == "done" else ""])
    os.replace(os.path.join(out, "table1.csv.tmp"), os.path.join(out, "table1.csv"))

    digest = md5(data)
    official = MEDMNIST_MD5.get(digest)
    L = ["# Table I, reproduced", "",
         f"Data: `{data}` (MD5 {digest}: " + (f"MedMNIST's official {official})" if official else
                                              "NOT one of MedMNIST's official DermaMNIST files)") + ".",
         f"Mode: {'federated (three image parties, knowledge party, aggregator on loopback)' if s['federated'] else 'one process (vflclip train)'}.",
         f"Settings: {s['n_ctx']} random context vectors, Adam, lr {s['lr']}, {s['epochs']} epochs, batch {s['batch_size']}, "
         f"cosine schedule with {s['warmup_epochs']} warm-up epoch at a constant {s['warmup_lr']}, seed {s['seed']}; "
         "the context with the best validation AUC is evaluated on the test split.", "",
         "AUC and ACC: test split, MedMNIST v2 definitions (macro one-vs-rest AUC of the softmax, argmax accuracy), "
         "from each run's `test_metrics.json`; diff = this run - paper. "
         "Wall: the whole backbone (encoding, training, evaluation; federated: also provisioning and start-up). "
         "Encoding images/s: images encoded / time from the device choice to the last embedded split in the run's "
         "log(s): decoding, preprocessing and the image tower; federated, the three hospitals encoding at the same "
         "time on this machine. '-' where the embeddings came from the cache (nothing encoded).", "",
         "| backbone | test AUC | test ACC | paper AUC | paper ACC | diff AUC | diff ACC | wall | encoding images/s | device | plots |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["backbone"] + (" (label: backbone.txt)" if r["recognised_by"] == "backbone.txt" else "") \
            + (" **RANDOM weights**" if r["random_weights"] else "")
        if r["status"] == "done":
            wall = r["wall_s"]
            wall_s = f"{wall / 3600:.1f} h" if wall >= 5400 else f"{wall / 60:.1f} min" if wall >= 90 else f"{wall:.0f} s"
            ips = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.3g}"
            L.append(f"| {name} | {fmt(r['auc'])} | {fmt(r['acc'])} | {fmt(r['paper_auc'])} | {fmt(r['paper_acc'])} | "
                     f"{fmt(r['d_auc'], sign=True)} | {fmt(r['d_acc'], sign=True)} | {wall_s} | {ips} | {r['device']} | "
                     f"[curves]({r['run']}/auc_acc.png), [loss]({r['run']}/loss.png), "
                     f"[confusion]({r['run']}/confusion_test.png) |")
        else:
            L.append(f"| {name} | - | - | {fmt(r['paper_auc'])} | {fmt(r['paper_acc'])} | - | - | - | - | {r['status']} | - |")
    L += ["", "Model directories: " + ", ".join(f"`{r['model']}` ({r['layout']})" for r in rows) + "."]
    if any(r["random_weights"] for r in rows):
        L += ["", "RANDOM weights (made by `vflclip make-model`): those rows say nothing about dermatology."]
    with open(os.path.join(out, "table1.md.tmp"), "w") as f:
        f.write("\n".join(L) + "\n")
    os.replace(os.path.join(out, "table1.md.tmp"), os.path.join(out, "table1.md"))
    print("\n".join(l for l in L if l.startswith("|")))


cmd, args = sys.argv[1], sys.argv[2:]
{"inventory": cmd_inventory, "row": cmd_row, "done": cmd_done, "table": cmd_table}[cmd](*args)
PYEOF
}

undash() { [ "$name" != - ] || name=; [ "$how" != - ] || how=; [ "$problem" != - ] || problem=; }
INV=$(mktemp /tmp/vflclip-table1.XXXXXX)
trap 'rm -f "$INV"' EXIT
t1py inventory "$MODELS" "$TOKENIZER" > "$INV"
if [ ! -s "$INV" ]; then
    echo "table1: no model directory under $MODELS (each needs config.json or open_clip_config.json)" >&2
    exit 2
fi
if [ "$LIST" = 1 ]; then
    printf '%-24s %-14s %-13s %-10s %s\n' model backbone "recognised by" layout notes
    while IFS=$'\t' read -r slug dir name how layout rnd problem; do
        undash
        note=$problem; [ "$rnd" = 1 ] && note="RANDOM weights${note:+; $note}"
        printf '%-24s %-14s %-13s %-10s %s\n' "$slug" "${name:--}" "${how:--}" "$layout" "$note"
    done < "$INV"
    exit 0
fi
if [ -z "$DATA" ] || [ -z "$OUT" ]; then usage >&2; exit 2; fi
[ -f "$DATA" ] || { echo "table1: --data $DATA: no such file" >&2; exit 2; }
DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")
bad=0
while IFS=$'\t' read -r slug dir name how layout rnd problem; do
    undash
    if [ -n "$problem" ]; then echo "table1: $dir: $problem" >&2; bad=1; fi
done < "$INV"
[ "$bad" = 0 ] || exit 2
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CACHE=${CACHE:-$OUT/cache}

# What a finished backbone must have been made with to count as done.
SETTINGS=$(printf '{"federated": %s, "epochs": %d, "batch_size": %d, "seed": %d, "n_ctx": 16, "optimizer": "adam", "lr": 0.001, "warmup_epochs": 1, "warmup": "constant", "warmup_lr": 1e-05, "device": "%s", "data": "%s"}' \
    "$([ "$FEDERATED" = 1 ] && echo true || echo false)" "$EPOCHS" "$BATCH" "$SEED" "$DEVICE" "$DATA")
MODE=single; [ "$FEDERATED" = 1 ] && MODE=federated
# A finished run made with other settings is never mixed into this table: stop before anything runs.
while IFS=$'\t' read -r slug dir name how layout rnd problem; do
    rc=0
    t1py "done" "$OUT/runs/$slug" "$SETTINGS" >/dev/null || rc=$?
    [ "$rc" != 3 ] || bad=1
done < "$INV"
[ "$bad" = 0 ] || exit 2
T1_THREADS=

. "$ROOT/deploy/lib-federation.sh"
trap 'fed_stop_daemons; rm -f "$INV"' EXIT

indent() { sed -u 's/^/    /'; }

# One process: vflclip train, its stderr to RUN/train.log; progress lines shown.
run_single() {
    local dir=$1 run=$2 tok=()
    [ -n "$TOKENIZER" ] && tok=(--tokenizer "$TOKENIZER")
    local rc=0
    "$B/vflclip" train --model "$dir" --data "$DATA" --out "$run" "${tok[@]}" \
        --n-ctx 16 --optimizer adam --lr 1e-3 --warmup-epochs 1 --warmup constant --warmup-lr 1e-5 \
        --epochs "$EPOCHS" --batch-size "$BATCH" --seed "$SEED" --device "$DEVICE" --cache-dir "$CACHE" \
        2>&1 >"$run/train.json" | tee "$run/train.log" \
        | { grep --line-buffered -E '^encoding |done: train loss|event=train_done|WARNING|error|vflclip train:' || true; } \
        | indent || rc=$?
    return "$rc"
}

# Federated: a fresh federation on loopback for this backbone (RUN/federation),
# the npz split over three hospitals (OUT/split, made once), their embedding
# caches in RUN/party-state (kept if the backbone is redone).
run_federated() {
    local dir=$1 run=$2 w=$2/federation h port n started
    rm -rf "$w"
    mkdir -p "$w/logs" "$OUT/split"
    if [ ! -f "$OUT/split/source" ] || [ "$(cat "$OUT/split/source")" != "$DATA $(stat -c %s.%Y "$DATA")" ]; then
        echo "    splitting $DATA over the three hospitals ($OUT/split)"
        fed_split_npz "$DATA" "$OUT/split" | indent
        echo "$DATA $(stat -c %s.%Y "$DATA")" > "$OUT/split/source"
    fi
    port=$(fed_free_port)
    fed_provision "$w/fed" "$port" >"$w/logs/provision.log" 2>&1
    fed_configure "$w/fed" "$dir" "$OUT/split" "$DEVICE"
    for h in $FED_HOSPITALS; do
        sed -i "s|^dir = state\$|dir = $run/party-state/$h|" "$w/fed/image-party-$h/image-party.ini"
    done
    if [ -n "$TOKENIZER" ]; then
        sed -i "s|^dir = $dir\$|dir = $dir\ntokenizer = $TOKENIZER|" "$w/fed/knowledge-party-derm-centre/knowledge-party.ini"
    fi
    cat > "$w/run.ini" <<EOF
[run]
epochs = $EPOCHS
batch_size = $BATCH
seed = $SEED
n_ctx = 16
optimizer = adam
lr = 0.001
warmup_epochs = 1
warmup = constant
warmup_lr = 1e-5
EOF
    export VFLCLIP_ADMIN_CONFIG=$w/fed/admin-operator/admin.ini
    # Three hospitals encode at once: share the cores among them unless told otherwise.
    FED_IMAGE_THREADS=${OMP_NUM_THREADS:-$(( ($(nproc) + 2) / 3 ))}
    T1_THREADS="3 hospitals x $FED_IMAGE_THREADS threads"
    fed_start_daemons "$w/fed" "$w/logs"
    echo "    daemons started (logs in $w/logs); the hospitals encode their images"
    local last=-1 t_last=0
    while :; do
        for p in "${FED_PIDS[@]}"; do
            kill -0 "$p" 2>/dev/null || { echo "    a daemon exited: see $w/logs" >&2; tail -n 3 "$w"/logs/*.log >&2; return 1; }
        done
        started=0
        for h in $FED_HOSPITALS; do grep -q 'event=started ' "$w/logs/$h.log" && started=$((started + 1)); done
        n=$(cat "$w"/logs/hospital-*.log | grep -c 'event=split_encoded ' || true)
        if [ "$n" != "$last" ] || [ $((SECONDS - t_last)) -ge 60 ]; then
            echo "    encoding: $n of 9 hospital splits done"
            last=$n t_last=$SECONDS
        fi
        [ "$started" = 3 ] && break
        sleep 1
    done
    fed_wait_parties 4 600 || { echo "    the parties did not all connect: see $w/logs" >&2; return 1; }
    local rc=0
    "$B/vflclip" run start --config "$w/run.ini" --watch 2>&1 | grep --line-buffered -v 'event=rpc_conn' \
        | tee "$w/logs/watch.txt" | indent || rc=$?
    [ "$rc" = 0 ] || return "$rc"
    "$B/vflclip" run results --out "$run" >"$w/logs/results.log" 2>&1 || { cat "$w/logs/results.log" >&2; return 1; }
    fed_stop_daemons
}

TOTAL=$(wc -l < "$INV")
i=0 FAILED=()
echo "Table I: $TOTAL model directories under $MODELS, $MODE, $EPOCHS epochs, batch $BATCH, device $DEVICE; results in $OUT"
while IFS=$'\t' read -r slug dir name how layout rnd problem <&3; do
    undash
    i=$((i + 1))
    run=$OUT/runs/$slug
    label=${name:-"$slug (not one of the seven)"}
    [ "$how" = backbone.txt ] && label="$label (label from backbone.txt)"
    [ "$rnd" = 1 ] && label="$label, RANDOM weights"
    echo
    echo "== [$i/$TOTAL] $label: $dir"
    rc=0
    t1py "done" "$run" "$SETTINGS" || rc=$?
    if [ "$rc" = 0 ]; then continue; fi
    if [ "$rc" = 3 ]; then FAILED+=("$slug"); continue; fi
    rm -f "$run/row.json" "$run/test_metrics.json"
    mkdir -p "$run"
    t0=$EPOCHREALTIME
    rc=0
    if [ "$FEDERATED" = 1 ]; then run_federated "$dir" "$run" || rc=$?; fed_stop_daemons
    else run_single "$dir" "$run" || rc=$?; fi
    if [ "$rc" = 0 ] && [ -f "$run/test_metrics.json" ]; then
        echo "    $(T1_THREADS=$T1_THREADS t1py row "$run" "$MODE" "$name" "$how" "$dir" "$t0" "$SETTINGS")"
    else
        echo "    FAILED (exit $rc): see $run" >&2
        FAILED+=("$slug")
    fi
done 3< "$INV"

echo
t1py table "$OUT" "$INV" "$SETTINGS" "$DATA" "$(IFS=,; echo "${FAILED[*]}")"
echo
echo "table: $OUT/table1.md, $OUT/table1.csv; plots and logs: $OUT/runs/<model>/"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "not done: ${FAILED[*]} (run the same command again to retry them)" >&2
    exit 1
fi
