"""The CoOp training-step benchmark: the C step (build/bench/bench_coop_step)
against the same step in PyTorch autograd through transformers' CLIP text
modules, on the same random-weight ViT-B/16 directory, same thread count.

Step = text forward of the 7 class prompts (16 context vectors, template
"a dermatoscopic image of {ctx} {class}.") + eq.1 loss on a batch of 32
cached image embeddings + backward to the context + Adam (lr 1e-3).

usage: coop_step_torch.py [--build DIR] [--steps N] [--rounds R] [--threads N] [--model DIR]
C and PyTorch run in interleaved rounds; the figures are the best step of
all rounds (robust on a shared machine), medians shown too.  Prints the
ratio torch / C."""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

CLASSES = ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
           "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"]
TEMPLATE = "a dermatoscopic image of {ctx} {class}."
REAL_VOCAB = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "clip-tokenizer" / "hf-clip-vit-base-patch16"


def make_torch_step(model_dir, threads, batch=32, n_ctx=16):
    """Returns (step function, T)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import CLIPModel, CLIPTokenizerFast
    torch.set_num_threads(threads)
    model = CLIPModel.from_pretrained(str(model_dir)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tok = CLIPTokenizerFast.from_pretrained(str(model_dir))
    tm = model.text_model
    # CoOp's PromptLearner: tokenize "X X .. X name.", keep prefix/suffix embeddings, splice ctx in.
    prompts = [tok(TEMPLATE.replace("{ctx}", " ".join(["X"] * n_ctx)).replace("{class}", c))["input_ids"] for c in CLASSES]
    T = max(len(p) for p in prompts)
    ids = torch.tensor([p + [tok.eos_token_id] * (T - len(p)) for p in prompts])
    x_id = tok.convert_tokens_to_ids("x</w>")
    first = prompts[0].index(x_id)
    with torch.no_grad():
        emb = tm.embeddings.token_embedding(ids)
    prefix, suffix = emb[:, :first], emb[:, first + n_ctx:]
    ctx = torch.nn.Parameter(torch.randn(n_ctx, tm.config.hidden_size) * 0.02)
    opt = torch.optim.Adam([ctx], lr=1e-3)
    image = torch.randn(batch, model.config.projection_dim)
    labels = torch.arange(batch) % len(CLASSES)
    mask = torch.full((T, T), float("-inf")).triu(1).expand(len(CLASSES), 1, T, T)
    eot = ids.argmax(dim=-1)
    img_n = F.normalize(image, dim=-1)
    scale = model.logit_scale.exp()
    def step():
        x = torch.cat([prefix, ctx.unsqueeze(0).expand(len(CLASSES), -1, -1), suffix], dim=1)
        x = x + tm.embeddings.position_embedding.weight[:T]
        h = tm.final_layer_norm(tm.encoder(inputs_embeds=x, causal_attention_mask=mask).last_hidden_state)
        text = model.text_projection(h[torch.arange(len(CLASSES)), eot])
        loss = F.cross_entropy(scale * img_n @ F.normalize(text, dim=-1).t(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step, T


def time_steps(step, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="C and PyTorch rounds, interleaved")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--model", help="ViT-B/16 directory (default: a random-weight one made in a temp dir, with the real "
                    "CLIP vocabulary from ../shared/data when present)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = pathlib.Path(a.model or pathlib.Path(tmp) / "vit-b-16")
        vocab = "as in --model"
        if not a.model:
            subprocess.run([str(pathlib.Path(a.build) / "vflclip"), "make-model", "--like", "vit-b-16", "--seed", "7",
                            "--out", str(model_dir)], check=True, capture_output=True)
            vocab = "make-model's byte-level vocabulary"
            if REAL_VOCAB.is_dir():   # prompts as long as with the real CLIP tokenizer
                for f in REAL_VOCAB.iterdir():
                    shutil.copy(f, model_dir / f.name)
                vocab = f"OpenAI's 49,408-token vocabulary ({REAL_VOCAB})"
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
        c_times, t_times, step, line = [], [], None, ""
        for r in range(a.rounds):
            out = subprocess.run([str(pathlib.Path(a.build) / "bench" / "bench_coop_step"), str(model_dir), str(a.steps)],
                                 env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"bench_coop_step failed: {out.stderr}")
            line = out.stdout.strip()
            c_times.append(float(line.split("min=")[1].split()[0]))
            c_times.append(float(line.split("median=")[1].split()[0]))
            if step is None:
                # PyTorch here links the same OpenBLAS: give it the kernel set the C program chose.
                os.environ.setdefault("OPENBLAS_CORETYPE", line.split("blas=")[1].split()[0])
                step, T = make_torch_step(model_dir, a.threads)
                time_steps(step, 2)   # warm-up
            t_times += time_steps(step, a.steps)
    c_min, t_min = min(c_times), min(t_times)
    t_med = sorted(t_times)[len(t_times) // 2]
    print(line)
    print(f"vocabulary: {vocab}")
    print(f"torch_coop_step_ms min={t_min:.3f} median={t_med:.3f} steps={a.steps}x{a.rounds} T={T} threads={a.threads}")
    print(f"coop_step ratio torch/C = {t_min / c_min:.2f} (best of {a.rounds} interleaved rounds: C {c_min:.1f} ms, "
          f"PyTorch {t_min:.1f} ms; {a.threads} threads, OpenBLAS {os.environ['OPENBLAS_CORETYPE']}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}; ViT-B/16 text tower, 7 classes, 16 ctx, "
          f"batch 32, T={T})")


if __name__ == "__main__":
    main()
