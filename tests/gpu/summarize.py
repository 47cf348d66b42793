"""Summarises tests/gpu/run.sh's results.jsonl: check counts, failures, and
the benchmark table (ours vs PyTorch, ratio, TFLOP/s against the peak) in
the form docs/BENCHMARKS.md records.  Usage: summarize.py RESULTS [SUMMARY.md]"""
import json
import sys


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    checks = [r for r in rows if "check" in r]
    failed = [r for r in checks if not r.get("pass")]
    res = {r["result"]: r for r in rows if "result" in r}
    out = [f"checks: {len(checks) - len(failed)} passed, {len(failed)} failed"]
    out += [f"  FAILED {r['check']}: " + ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("check", "pass"))
            for r in failed]
    dev = res.get("device", {})
    out.append(f"device: {dev.get('device0', '?')}")
    out.append("")
    out.append("| model (bf16, batch, px) | vflclip CUDA img/s | PyTorch SDPA img/s | ratio | vflclip TFLOP/s (of peak) | PyTorch TFLOP/s | encode from host img/s |")
    out.append("|---|---|---|---|---|---|---|")
    for name, r in res.items():
        if not name.startswith("vit_forward "):
            continue
        label = name.split(" ", 1)[1]
        t = res.get("torch_vit_forward " + label, {})
        ratio = f"{r['images_per_s'] / t['images_per_s']:.2f}" if t.get("images_per_s") else "n/a"
        out.append(f"| {label} ({r['batch']}, {r['image_size']}) | {r['images_per_s']} | {t.get('images_per_s', 'n/a')} | {ratio} "
                   f"| {r['tflops']} ({100 * r['fraction_of_peak']:.0f}% of {r['peak_tflops']:.0f}) | {t.get('tflops', 'n/a')} "
                   f"| {r['encode_from_host_images_per_s']} |")
    for name, r in res.items():
        if name.startswith("vit_forward ") and r.get("profile_ms"):
            out.append(f"{name} one forward by kind of op (ms): " + ", ".join(f"{k} {v}" for k, v in r["profile_ms"].items()))
    out.append("")
    for name, r in res.items():
        if name.startswith("coop_step "):
            out.append(f"{name} ({r['precision']}, {r['classes']} classes x {r['T']} tokens, {r['images']} images): "
                       f"GPU {r['gpu_step_ms']} ms, C {r['c_step_ms']} ms, {r['speedup']}x")
    text = "\n".join(out)
    print(text)
    if len(sys.argv) > 2:
        open(sys.argv[2], "w").write(text + "\n")


if __name__ == "__main__":
    main()
