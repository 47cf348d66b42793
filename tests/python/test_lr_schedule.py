"""CoOp's learning-rate schedule (issue 14 item 7): `vflclip coop-lr` prints the
learning rate of each epoch as the trainer uses it (vf_lr_at_epoch); the
reference is torch.optim.lr_scheduler.CosineAnnealingLR behind Dassl's warm-up
wrappers (dassl/optim/lr_scheduler.py, rewritten below as Dassl has them), stepped
once per epoch as Dassl's trainer does (after the epoch's last batch). With
warm-up the cosine restarts at the base learning rate on the first epoch after
warm-up, because the wrapper steps its successor only once warm-up is over."""
import pytest
import torch

from conftest import run

_LRScheduler = getattr(torch.optim.lr_scheduler, "LRScheduler", None) or torch.optim.lr_scheduler._LRScheduler


class _BaseWarmupScheduler(_LRScheduler):
    """Dassl's _BaseWarmupScheduler: its own epoch counter during warm-up, then it
    steps the successor and takes the successor's lr."""

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        raise NotImplementedError

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    def __init__(self, optimizer, successor, warmup_epoch, min_lr, last_epoch=-1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def reference_lrs(base_lr, max_epochs, warmup, warmup_epochs, warmup_lr, steps_per_epoch=3):
    """Dassl's build_lr_scheduler (cosine, WARMUP_RECOUNT True) driven by a
    training loop: the lr of every optimizer step, and the lr of each epoch."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=float(max_epochs))
    if warmup == "constant":
        sched = ConstantWarmupScheduler(opt, sched, warmup_epochs, warmup_lr)
    elif warmup == "linear":
        sched = LinearWarmupScheduler(opt, sched, warmup_epochs, warmup_lr)
    per_step, per_epoch = [], []
    for _ in range(max_epochs):
        per_epoch.append(opt.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            per_step.append(opt.param_groups[0]["lr"])
            opt.step()
        sched.step()
    return per_step, per_epoch


def vf_lrs(vflclip, base_lr, max_epochs, warmup, warmup_epochs, warmup_lr):
    out = run([vflclip, "coop-lr", "--lr", repr(base_lr), "--max-epochs", str(max_epochs), "--warmup", warmup,
               "--warmup-epochs", str(warmup_epochs), "--warmup-lr", repr(warmup_lr)]).stdout
    rows = [line.split() for line in out.strip().splitlines()]
    assert [int(r[0]) for r in rows] == list(range(max_epochs))
    return [float(r[1]) for r in rows]


CASES = [
    ("none", 0, 10), ("constant", 1, 10), ("constant", 3, 10), ("linear", 1, 10), ("linear", 4, 12),
    ("constant", 1, 50),   # CoOp's few-shot setting: SGD 2e-3, 50 epochs, 1 constant warm-up epoch at 1e-5
]


@pytest.mark.parametrize("warmup,warmup_epochs,max_epochs", CASES)
def test_lr_per_epoch_and_step_matches_dassl(vflclip, warmup, warmup_epochs, max_epochs):
    base_lr, warmup_lr = 2e-3, 1e-5
    steps_per_epoch = 3
    per_step, per_epoch = reference_lrs(base_lr, max_epochs, warmup, warmup_epochs, warmup_lr, steps_per_epoch)
    got = vf_lrs(vflclip, base_lr, max_epochs, warmup, warmup_epochs, warmup_lr)
    got_steps = [lr for lr in got for _ in range(steps_per_epoch)]   # the trainer holds an epoch's lr for its steps
    for i, (a, b) in enumerate(zip(got_steps, per_step)):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-12), f"step {i} (epoch {i // steps_per_epoch}): vf {a} torch {b}"
    assert len(got_steps) == len(per_step)
    if warmup != "none":
        # the cosine restarts at the base lr on the first epoch after warm-up
        assert per_epoch[warmup_epochs] == pytest.approx(base_lr, rel=1e-7)
        assert got[warmup_epochs] == pytest.approx(base_lr, rel=1e-6)
        assert got[warmup_epochs + 1] == pytest.approx(per_epoch[warmup_epochs + 1], rel=1e-6)
