#!/bin/sh
# The Compose file's provisioning step: a CA and kits for the aggregator
# ("aggregator", the Compose service name, which the parties dial), three
# hospitals, the knowledge party and an admin, in /fed (a shared volume); the
# starter INIs filled in for the containers' paths.  A real federation
# provisions on an administrator's machine and copies one kit to each site
# (docs/deploy.md, docs/pki.md); this step is for the demo on one host.
# Without a model in /models/clip it writes a tiny RANDOM-weight one there.
set -eu
FED=/fed/federation
if [ -f "$FED/federation.ini" ]; then echo "provision: $FED exists, kept"; exit 0; fi
vflclip provision --out "$FED" --aggregator aggregator --image-party hospital-a hospital-b hospital-c \
    --knowledge-party derm-centre --admin operator
MODEL=/models/clip
if [ ! -f "$MODEL/config.json" ]; then
    MODEL=/fed/tiny-model
    vflclip make-model --like tiny --seed 3 --out "$MODEL"
fi
sed -i 's|^dir = state$|dir = /state|' "$FED"/*/*.ini
for h in hospital-a hospital-b hospital-c; do
    sed -i "s|^dir =\$|dir = $MODEL|; s|^path =\$|path = /data/$h.npz|" "$FED/image-party-$h/image-party.ini"
done
sed -i "s|^dir =\$|dir = $MODEL|" "$FED/knowledge-party-derm-centre/knowledge-party.ini"
echo "provision: kits in $FED, model $MODEL"
