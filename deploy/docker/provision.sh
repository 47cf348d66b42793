#!/bin/sh
# The Compose file's one-shot provisioning step (vflclip-compose-provision in
# the image).  Idempotent: a second run keeps what is there.
#   1. a CA and kits in /fed/federation (a shared volume) for the aggregator
#      ("aggregator", the Compose service name the parties dial), three
#      hospitals, the knowledge party and two admins: "operator" (runs) and
#      "monitor" (the containers' health checks); starter INIs filled in for
#      the containers' paths;
#   2. the model: /models/clip if it holds a Hugging Face CLIP checkpoint, else
#      a tiny RANDOM-weight one in /fed/tiny-model, rescaled as deploy/demo.sh
#      does so that it can learn the demo's shapes;
#   3. the hospitals' data in /data (a volume the parties mount read-only):
#      /import/hospital-{a,b,c}.npz if given, else one /import/*.npz split in
#      three, else the demo's synthetic shapes (deploy/demo_data.py, as
#      deploy/demo.sh makes them), with the shapes' class names for the
#      knowledge party;
#   4. /fed/run.ini, the demo's run configuration (DEMO_EPOCHS, default 2).
# A real federation provisions on an administrator's machine and copies one
# kit to each site (docs/deploy.md, docs/pki.md); this is for one host.
set -eu
FED=/fed/federation
DEMO=/usr/local/share/vflclip/demo
if [ -f "$FED/federation.ini" ]; then
    echo "provision: $FED exists, kept"
else
    rm -rf "$FED.tmp"
    vflclip provision --out "$FED.tmp" --aggregator aggregator,localhost,127.0.0.1 \
        --image-party hospital-a hospital-b hospital-c --knowledge-party derm-centre --admin operator monitor
    MODEL=/models/clip
    RANDOM_MODEL=
    if [ ! -f "$MODEL/config.json" ]; then
        MODEL=/fed/tiny-model
        RANDOM_MODEL=1
        rm -rf "$MODEL"
        vflclip make-model --like tiny --seed 3 --out "$MODEL"
        python3 "$DEMO/demo_data.py" --out /tmp/unused-data --rescale-model "$MODEL" >/dev/null
        echo "provision: model: a tiny RANDOM-weight CLIP in $MODEL (put a Hugging Face CLIP directory in models/clip for a real one)"
    fi
    sed -i 's|^dir = state$|dir = /state|' "$FED.tmp"/*/*.ini
    for h in hospital-a hospital-b hospital-c; do
        sed -i "s|^dir =\$|dir = $MODEL|; s|^path =\$|path = /data/$h.npz|" "$FED.tmp/image-party-$h/image-party.ini"
    done
    KP_INI=$FED.tmp/knowledge-party-derm-centre/knowledge-party.ini
    sed -i "s|^dir =\$|dir = $MODEL|" "$KP_INI"
    # the data, unless the hospitals' files are there already
    shapes=
    if [ ! -f /data/hospital-c.npz ]; then
        if [ -f /import/hospital-a.npz ] && [ -f /import/hospital-b.npz ] && [ -f /import/hospital-c.npz ]; then
            cp /import/hospital-a.npz /import/hospital-b.npz /import/hospital-c.npz /data/
            echo "provision: data: /import/hospital-{a,b,c}.npz"
        elif one=$(ls /import/*.npz 2>/dev/null | head -n 1) && [ -n "$one" ]; then
            python3 "$DEMO/demo_data.py" --out /data --npz "$one"
            echo "provision: data: $one split over the three hospitals"
        else
            python3 "$DEMO/demo_data.py" --out /data
            shapes=1
            echo "provision: data: the demo's synthetic shapes (4 classes)"
        fi
    elif [ -f /data/.shapes ]; then
        shapes=1
    fi
    if [ -n "$shapes" ]; then
        touch /data/.shapes
        printf '\n[prompt]\nclasses = red disc,green square,blue stripe,yellow cross\ntemplate = a photo of {ctx} {class}.\n' >> "$KP_INI"
    fi
    cat > "$FED.tmp/run.ini" <<EOF
[run]
epochs = ${DEMO_EPOCHS:-2}
batch_size = 16
lr = 0.01
n_ctx = 4
seed = 1
EOF
    [ -z "$RANDOM_MODEL" ] || echo "RANDOM weights: the metrics of this demo say nothing about dermatology" > "$FED.tmp/NOTE"
    mv "$FED.tmp" "$FED"
fi
cp "$FED/run.ini" /fed/run.ini
echo "provision: kits in $FED; run configuration /fed/run.ini"
