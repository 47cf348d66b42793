"""Prints one gpu_check command line per backbone in an open_clip config
folder (../shared/data/clip-configs/open_clip): image towers ("vit"/"resnet"
lines) and text towers ("coop" lines), the shapes open_clip builds from them
(head width 64, MLP ratio 4, ResNet attention-pool heads width*32/64).
Usage: configs.py DIR"""
import json
import os
import sys


def main():
    d = sys.argv[1]
    for f in sorted(os.listdir(d)):
        if not f.endswith(".json"):
            continue
        c = json.load(open(os.path.join(d, f)))
        label, v, t, D = f[:-5], c["vision_cfg"], c["text_cfg"], c["embed_dim"]
        if isinstance(v["layers"], list):
            w = v["width"]
            print(f"resnet --label {label} --rn-layers {','.join(map(str, v['layers']))} --width {w} "
                  f"--image {v['image_size']} --heads {w * 32 // 64} --proj {D}")
        else:
            w = v["width"]
            hw = v.get("head_width", 64)
            print(f"vit --label {label} --width {w} --layers {v['layers']} --heads {w // hw} "
                  f"--mlp {int(w * v.get('mlp_ratio', 4.0))} --image {v['image_size']} --patch {v['patch_size']} --proj {D}")
        tw = t["width"]
        print(f"coop --label {label}-text --width {tw} --layers {t['layers']} --heads {t['heads']} "
              f"--mlp {4 * tw} --proj {D}")


if __name__ == "__main__":
    main()
