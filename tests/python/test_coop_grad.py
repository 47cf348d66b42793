"""CoOp maths against independent references.

- dL/dctx from `vflclip coop-grad` vs PyTorch autograd through transformers'
  own CLIP text modules (embeddings.position_embedding, encoder,
  final_layer_norm, text_projection) loaded from the directory
  `vflclip make-model` wrote, with the prompt assembled around them the way
  the CoOp repository does (tokenize "X X .. X name.", splice the context
  vectors over the X embeddings; middle/front rearrange prefix/class/suffix
  embeddings as CoOp's PromptLearner does), causal mask, EOT pooling by argmax.
  The reference runs in float64; tolerance 1e-4 relative to max |grad|.
- loss, logits and dL/dtext of `vflclip coop-loss` vs torch autograd.
- Adam/SGD (+ CoOp's cosine schedule with warm-up) of `vflclip coop-optim`
  vs torch.optim on the same gradients.
"""
import math
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import run

REL_TOL = 1e-4


def rel_err(a, ref):
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    diff = float(np.max(np.abs(a - ref)))
    return diff, diff / max(float(np.max(np.abs(ref))), 1e-30)


# ---------------------------------------------------------------- models ----
_MODELS = {}


def make_model(vflclip, tmp_path_factory, like):
    if like not in _MODELS:
        d = tmp_path_factory.mktemp(f"model-{like}")
        run([vflclip, "make-model", "--like", like, "--seed", "7", "--out", d])
        _MODELS[like] = d
    return _MODELS[like]


def load_reference(model_dir, text_only=False):
    """transformers' CLIP in float64.  text_only: CLIPTextModelWithProjection
    (the same text_model + text_projection weights, without the vision tower's
    memory) with logit_scale read from the checkpoint."""
    from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPTokenizerFast
    tok = CLIPTokenizerFast.from_pretrained(str(model_dir))
    if not text_only:
        model = CLIPModel.from_pretrained(str(model_dir)).double().eval()
        model.logit_scale_value = float(model.logit_scale)
        model.projection_dim = model.config.projection_dim
        return model, tok
    from safetensors import safe_open
    model = CLIPTextModelWithProjection.from_pretrained(str(model_dir)).double().eval()
    with safe_open(str(pathlib.Path(model_dir) / "model.safetensors"), framework="pt") as f:
        model.logit_scale_value = float(f.get_tensor("logit_scale"))
    model.projection_dim = model.config.projection_dim
    return model, tok


def coop_reference_grad(model, tok, classes, template, ctx, csc, class_pos, image, labels):
    """CoOp's PromptLearner + TextEncoder + eq.1 loss in float64; returns
    (loss, dL/dctx, text features)."""
    tm = model.text_model
    n_ctx = ctx.shape[0] // (len(classes) if csc else 1)
    placeholder = " ".join(["X"] * n_ctx)
    x_id = tok.convert_tokens_to_ids("x</w>")
    prompts, name_lens = [], []
    for name in classes:
        text = template.replace("{ctx}", placeholder).replace("{class}", name)
        prompts.append(tok(text)["input_ids"])
        name_lens.append(len(tok(name, add_special_tokens=False)["input_ids"]))
    T = max(len(p) for p in prompts)
    eot = tok.eos_token_id
    ids = torch.tensor([p + [eot] * (T - len(p)) for p in prompts])
    with torch.no_grad():
        emb = tm.embeddings.token_embedding(ids)                       # (C, T, W)
    ctx_t = torch.tensor(ctx, dtype=torch.float64, requires_grad=True)
    rows = []
    for k, p in enumerate(prompts):
        first = p.index(x_id)                                          # prefix = [SOT] + template text before {ctx}
        assert p[first:first + n_ctx] == [x_id] * n_ctx
        prefix, suffix = emb[k, :first], emb[k, first + n_ctx:]        # suffix = class tokens + rest + EOT + pad
        c = ctx_t[k * n_ctx:(k + 1) * n_ctx] if csc else ctx_t
        nl = name_lens[k]
        if class_pos == "end":
            rows.append(torch.cat([prefix, c, suffix]))
        elif class_pos == "middle":
            h = n_ctx // 2
            rows.append(torch.cat([prefix, c[:h], suffix[:nl], c[h:], suffix[nl:]]))
        else:
            rows.append(torch.cat([prefix, suffix[:nl], c, suffix[nl:]]))
    x = torch.stack(rows)                                              # (C, T, W)
    x = x + tm.embeddings.position_embedding.weight[:T]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1).expand(len(classes), 1, T, T)
    h = tm.encoder(inputs_embeds=x, causal_attention_mask=mask).last_hidden_state
    h = tm.final_layer_norm(h)
    pooled = h[torch.arange(len(classes)), ids.argmax(dim=-1)]        # EOT has the largest id
    text = model.text_projection(pooled)                               # (C, D)
    img = torch.tensor(image, dtype=torch.float64)
    logits = math.exp(model.logit_scale_value) * F.normalize(img, dim=-1) @ F.normalize(text, dim=-1).t()
    loss = F.cross_entropy(logits, torch.tensor(labels, dtype=torch.long))
    loss.backward()
    return float(loss), ctx_t.grad.numpy(), text.detach().numpy()


def check_coop_grad(vflclip, tmp_path, model_dir, model, tok, classes, template, class_pos="end", csc=False,
                    n_ctx=4, n_images=12, seed=0, init_words=None):
    rng = np.random.default_rng(seed)
    W = model.text_model.config.hidden_size
    D = model.projection_dim
    if init_words:   # C init from word embeddings; the reference starts from the same vectors
        ids = tok(init_words, add_special_tokens=False)["input_ids"]
        n_ctx = len(ids)
        ctx = model.text_model.embeddings.token_embedding.weight[ids].detach().numpy().astype(np.float32)
        if csc:
            ctx = np.concatenate([ctx] * len(classes))
    else:
        ctx = rng.normal(0, 0.5, size=((len(classes) if csc else 1) * n_ctx, W)).astype(np.float32)
    image = rng.normal(size=(n_images, D)).astype(np.float32)
    labels = rng.integers(0, len(classes), size=n_images)
    np.save(tmp_path / "emb.npy", image)
    np.save(tmp_path / "labels.npy", labels.astype(np.int64))
    cmd = [vflclip, "coop-grad", "--model", model_dir, "--classes", ",".join(classes), "--template", template,
           "--class-pos", class_pos, "--image-emb", tmp_path / "emb.npy", "--labels", tmp_path / "labels.npy",
           "--out", tmp_path / "grad.npy", "--out-features", tmp_path / "text.npy"]
    if init_words:
        cmd += ["--init-words", init_words]
    else:
        np.save(tmp_path / "ctx.npy", ctx)
        cmd += ["--n-ctx", str(n_ctx), "--init-ctx", tmp_path / "ctx.npy"]
    if csc:
        cmd.append("--csc")
    out = run(cmd).stdout
    loss_c = float(out.split("loss ")[1].split()[0])
    grad_c = np.load(tmp_path / "grad.npy")
    loss_ref, grad_ref, text_ref = coop_reference_grad(model, tok, classes, template, ctx.astype(np.float64), csc,
                                                       class_pos, image, labels)
    assert grad_c.shape == grad_ref.shape
    d_text, r_text = rel_err(np.load(tmp_path / "text.npy"), text_ref)
    d_grad, r_grad = rel_err(grad_c, grad_ref)
    print(f"[{class_pos}{' csc' if csc else ''} '{template}'] loss C {loss_c:.7f} ref {loss_ref:.7f}; "
          f"text max abs diff {d_text:.3g} (rel {r_text:.3g}); dctx max abs diff {d_grad:.3g} (rel {r_grad:.3g}), "
          f"max |dctx| {np.abs(grad_ref).max():.3g}")
    assert abs(loss_c - loss_ref) <= REL_TOL * max(1.0, abs(loss_ref))
    assert r_text <= REL_TOL
    assert r_grad <= REL_TOL


CLASSES = ["actinic keratoses", "basal cell carcinoma", "benign keratosis", "dermatofibroma", "melanoma",
           "melanocytic nevi", "vascular lesions"]


@pytest.fixture(scope="module")
def tiny(vflclip, tmp_path_factory):
    d = make_model(vflclip, tmp_path_factory, "tiny")
    return (d,) + load_reference(d)


@pytest.mark.parametrize("class_pos,csc,template", [
    ("end", False, "a dermatoscopic image of {ctx} {class}."),
    ("middle", False, "{ctx} {class}."),
    ("front", True, "a photo of {ctx} {class}, a skin lesion."),
    ("end", True, "Дерматологическое изображение {ctx} {class}."),
])
def test_coop_grad_matches_autograd_tiny(vflclip, tmp_path, tiny, class_pos, csc, template):
    d, model, tok = tiny
    check_coop_grad(vflclip, tmp_path, d, model, tok, CLASSES, template, class_pos=class_pos, csc=csc, n_ctx=5)


def test_coop_grad_init_words_tiny(vflclip, tmp_path, tiny):
    d, model, tok = tiny
    check_coop_grad(vflclip, tmp_path, d, model, tok, CLASSES[:3], "{ctx} {class}.", init_words="a photo of a")


def test_coop_grad_matches_autograd_vit_b16_text_shapes(vflclip, tmp_path, tmp_path_factory):
    """Full ViT-B/16 text tower (12 layers, width 512, 8 heads, D 512), CoOp's 16 context vectors, 7 classes."""
    d = make_model(vflclip, tmp_path_factory, "vit-b-16")
    model, tok = load_reference(d, text_only=True)
    check_coop_grad(vflclip, tmp_path, d, model, tok, CLASSES, "a dermatoscopic image of {ctx} {class}.",
                    n_ctx=16, n_images=32, seed=3)


def test_coop_grad_real_vocabulary_vit_b16(vflclip, tmp_path, tmp_path_factory, shared_data):
    """The random ViT-B/16 with OpenAI's real 49,408-token vocabulary (Hugging
    Face's files for clip-vit-base-patch16): real BPE pieces, EOT 49407, the
    seed paper's Russian template, class in the middle, class-specific contexts."""
    src = make_model(vflclip, tmp_path_factory, "vit-b-16")
    d = tmp_path / "model"
    d.mkdir()
    for f in ("config.json", "model.safetensors", "preprocessor_config.json"):
        (d / f).symlink_to(src / f)
    for f in (shared_data / "clip-tokenizer" / "hf-clip-vit-base-patch16").iterdir():
        (d / f.name).symlink_to(f)
    model, tok = load_reference(d, text_only=True)
    assert tok.vocab_size == 49408 and tok.eos_token_id == 49407
    check_coop_grad(vflclip, tmp_path, d, model, tok, CLASSES, "Дерматологическое изображение {ctx} {class}.",
                    class_pos="middle", csc=True, n_ctx=16, n_images=32, seed=5)


def test_coop_grad_rejects_bad_inputs(vflclip, tmp_path, tiny):
    d = tiny[0]
    np.save(tmp_path / "emb.npy", np.ones((4, 3), np.float32))
    np.save(tmp_path / "labels.npy", np.zeros(4, np.int64))
    p = run([vflclip, "coop-grad", "--model", d, "--classes", "a,b", "--image-emb", tmp_path / "emb.npy",
             "--labels", tmp_path / "labels.npy", "--out", tmp_path / "g.npy"], check=False)
    assert p.returncode != 0 and "emb.npy" in p.stderr and "wide" in p.stderr, p.stderr
    p = run([vflclip, "coop-grad", "--model", d, "--classes", "a,b", "--template", "no slots here",
             "--image-emb", tmp_path / "emb.npy", "--labels", tmp_path / "labels.npy", "--out", tmp_path / "g.npy"],
            check=False)
    assert p.returncode != 0 and "{ctx}" in p.stderr, p.stderr


# ------------------------------------------------------------------ loss ----
def test_loss_and_dtext_match_autograd(vflclip, tmp_path):
    rng = np.random.default_rng(1)
    N, C, D = 33, 7, 48
    image = rng.normal(size=(N, D)).astype(np.float32)
    text = rng.normal(size=(C, D)).astype(np.float32) * 3
    labels = rng.integers(0, C, size=N)
    scale = math.log(1 / 0.07)
    np.save(tmp_path / "img.npy", image)
    np.save(tmp_path / "text.npy", text)
    np.save(tmp_path / "labels.npy", labels.astype(np.int64))
    out = run([vflclip, "coop-loss", "--image-emb", tmp_path / "img.npy", "--text", tmp_path / "text.npy",
               "--labels", tmp_path / "labels.npy", "--logit-scale", repr(scale),
               "--out-dtext", tmp_path / "dtext.npy", "--out-logits", tmp_path / "logits.npy"]).stdout
    t = torch.tensor(text, dtype=torch.float64, requires_grad=True)
    logits = math.exp(scale) * F.normalize(torch.tensor(image, dtype=torch.float64), dim=-1) @ F.normalize(t, dim=-1).t()
    loss = F.cross_entropy(logits, torch.tensor(labels))
    loss.backward()
    loss_c = float(out.split()[1])
    d_l, r_l = rel_err(np.load(tmp_path / "logits.npy"), logits.detach().numpy())
    d_g, r_g = rel_err(np.load(tmp_path / "dtext.npy"), t.grad.numpy())
    print(f"loss C {loss_c:.8f} torch {float(loss):.8f}; logits max abs diff {d_l:.3g}; dtext max abs diff {d_g:.3g} (rel {r_g:.3g})")
    assert abs(loss_c - float(loss)) <= REL_TOL * abs(float(loss))
    assert r_l <= REL_TOL and r_g <= REL_TOL


def test_loss_rejects_out_of_range_label(vflclip, tmp_path):
    np.save(tmp_path / "img.npy", np.ones((2, 4), np.float32))
    np.save(tmp_path / "text.npy", np.ones((3, 4), np.float32))
    np.save(tmp_path / "labels.npy", np.array([0, 3]))
    p = run([vflclip, "coop-loss", "--image-emb", tmp_path / "img.npy", "--text", tmp_path / "text.npy",
             "--labels", tmp_path / "labels.npy"], check=False)
    assert p.returncode != 0 and "labels.npy" in p.stderr and "label 1" in p.stderr, p.stderr


# ------------------------------------------------------------ optimizers ----
def torch_schedule(base_lr, max_epochs, warmup, warmup_epochs, warmup_lr, epochs):
    """CoOp/Dassl: CosineAnnealingLR(T_max=max_epochs) with ConstantWarmupScheduler
    (cons_lr) or LinearWarmupScheduler (min_lr at 0, then base * e / warmup_epochs)
    in front for the first warmup_epochs; the cosine is stepped only once warm-up
    is over (Dassl's _BaseWarmupScheduler.step), so it restarts at base_lr
    (test_lr_schedule.py checks this against Dassl's wrapper classes)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    lrs = []
    for e in range(epochs):
        lr = cos.get_last_lr()[0]
        if warmup != "none" and e < warmup_epochs:
            lr = warmup_lr if (warmup == "constant" or e == 0) else base_lr * e / warmup_epochs
        lrs.append(lr)
        opt.step()
        if warmup == "none" or e >= warmup_epochs:
            cos.step()
    return lrs


@pytest.mark.parametrize("kind,wd,warmup", [("adam", 0.0, "none"), ("adam", 1e-2, "linear"), ("sgd", 5e-4, "constant"),
                                            ("sgd", 0.0, "none")])
def test_optimizer_matches_torch(vflclip, tmp_path, kind, wd, warmup):
    rng = np.random.default_rng(2)
    n, steps, base_lr = 300, 6, 2e-3 if kind == "sgd" else 1e-3
    params = rng.normal(size=n).astype(np.float32)
    grads = rng.normal(size=(steps, n)).astype(np.float32)
    np.save(tmp_path / "p.npy", params)
    np.save(tmp_path / "g.npy", grads)
    out = run([vflclip, "coop-optim", "--optimizer", kind, "--params", tmp_path / "p.npy", "--grads", tmp_path / "g.npy",
               "--out", tmp_path / "p2.npy", "--lr", repr(base_lr), "--weight-decay", repr(wd), "--max-epochs", str(steps),
               "--warmup", warmup, "--warmup-epochs", "2", "--warmup-lr", "1e-5"]).stdout
    lrs_c = [float(x) for x in out.split("lr")[1].split()]
    lrs_ref = torch_schedule(base_lr, steps, warmup, 2, 1e-5, steps)
    p = torch.nn.Parameter(torch.tensor(params))
    opt = torch.optim.Adam([p], lr=base_lr, weight_decay=wd) if kind == "adam" else \
        torch.optim.SGD([p], lr=base_lr, momentum=0.9, weight_decay=wd)
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lrs_ref[s]
        p.grad = torch.tensor(grads[s])
        opt.step()
    d_lr, r_lr = rel_err(lrs_c, lrs_ref)
    d_p, _ = rel_err(np.load(tmp_path / "p2.npy"), p.detach().numpy())
    moved = float(np.max(np.abs(p.detach().numpy() - params)))
    print(f"{kind} wd={wd} warmup={warmup}: lr max rel diff {r_lr:.3g}; params max abs diff {d_p:.3g} (moved up to {moved:.3g})")
    assert r_lr <= 1e-6
    assert d_p <= 1e-4 * moved + 4 * float(np.spacing(np.abs(params).max()))   # float32 rounding of the parameters


# ------------------------------------------------------- trainer step ----
def test_train_one_sgd_step_moves_context_by_minus_lr_grad(vflclip, tmp_path, tiny):
    """`vflclip train --max-steps 1 --optimizer sgd --init-ctx F`: the saved
    context is F - lr * dL/dctx, with dL/dctx from autograd through
    transformers (image features from CLIPModel.get_image_features on
    CLIPImageProcessor pixels; the batch is the whole training split)."""
    from safetensors.numpy import load_file
    from transformers import CLIPImageProcessor
    d, model, tok = tiny
    rng = np.random.default_rng(4)
    size = model.config.vision_config.image_size
    split = {"train": 12, "val": 5, "test": 5}
    arrays = {}
    for name, n in split.items():
        arrays[f"{name}_images"] = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        arrays[f"{name}_labels"] = rng.integers(0, 7, size=(n, 1)).astype(np.uint8)
    np.savez(tmp_path / "data.npz", **arrays)
    W = model.text_model.config.hidden_size
    ctx0 = rng.normal(0, 0.5, size=(16, W)).astype(np.float32)
    np.save(tmp_path / "ctx0.npy", ctx0)
    lr = 10.0   # a large step keeps float32 rounding of the context small against it
    run([vflclip, "train", "--model", d, "--data", tmp_path / "data.npz", "--out", tmp_path / "run",
         "--classes", ",".join(CLASSES), "--optimizer", "sgd", "--lr", repr(lr), "--max-steps", "1", "--epochs", "1",
         "--batch-size", "32", "--init-ctx", tmp_path / "ctx0.npy", "--no-cache", "--quiet"])
    ctx1 = load_file(str(tmp_path / "run" / "context.safetensors"))["ctx"].reshape(ctx0.shape)

    proc = CLIPImageProcessor.from_pretrained(str(d))
    pixels = proc(images=list(arrays["train_images"]), return_tensors="pt")["pixel_values"].double()
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels).numpy()
    labels = arrays["train_labels"][:, 0].astype(np.int64)
    _, grad_ref, _ = coop_reference_grad(model, tok, CLASSES, "{ctx} {class}.", ctx0.astype(np.float64), False, "end",
                                         image, labels)
    step, want = ctx1.astype(np.float64) - ctx0, -lr * grad_ref
    diff, rel = rel_err(step, want)
    print(f"one SGD step: max |step| {np.abs(want).max():.3g}; max abs diff to -lr*grad {diff:.3g} (rel {rel:.3g})")
    assert rel <= REL_TOL
