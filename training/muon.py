"""Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) for the hidden matrices, AdamW for the rest,
in one torch optimizer: Composer steps one, checkpoints its ``state_dict`` and schedules every group's lr.

A Muon step on a matrix W (rows x cols) with gradient G: Nesterov momentum (``buf = lerp(buf, G, 1 - mu)``, update
``lerp(G, buf, mu)``), the update orthogonalized by 5 quintic Newton-Schulz steps on its norm-scaled self (all
singular values pushed into about [0.7, 1.2]), scaled by sqrt(max(1, rows / cols)) (``lr_scale: spectral``) or by
0.2 sqrt(max(rows, cols)) (``match_adamw``: the RMS of an AdamW update, Liu et al. 2025, so AdamW's lr and weight
decay carry over), then ``W <- W (1 - lr wd) - lr update``. A parameter holding several matrices stacked by rows
(``c_attn``: Q, K and V) is orthogonalized as that many separate matrices (``split``). Newton-Schulz runs in bf16 on
GPU (as the reference does: it is stable there) and in fp32 on CPU, where bf16 matmuls are slower, not faster.
Under FSDP2 a parameter, its gradient and its momentum buffer are row shards (DTensors): the update is gathered,
orthogonalized whole on every rank, and each rank keeps its rows; the buffer stays sharded (sharded checkpoints).

The AdamW groups are torch's AdamW update (bias-corrected moments, decoupled decay ``lr * weight_decay``), written
out so both kinds share one ``step``. Which parameter goes where is decided by its role in gpt.py (``route``), not by
its number of dimensions: the embeddings and the tied head are matrices that Muon must not touch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from torch.distributed.tensor import DTensor, distribute_tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic's (a, b, c): the steepest slope at 0 that still converges
LR_SCALES = ("spectral", "match_adamw")


def newton_schulz(G: torch.Tensor, steps: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An approximately orthogonal matrix with G's singular vectors (U S' V^T, S' near 1), for G of shape
    (..., rows, cols); a leading dimension orthogonalizes each matrix on its own. In ``dtype``."""
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT  # iterate on the wide side: A = X X^T is the smaller Gram matrix
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.mT if tall else X


@dataclass
class Route:
    """Where each parameter of the GPT goes: Muon (hidden matrices, with their row split) or AdamW (decayed:
    embeddings and head; not decayed: gains and biases)."""

    muon: list[tuple[str, torch.nn.Parameter, int]]
    adamw_decay: list[tuple[str, torch.nn.Parameter]]
    adamw_no_decay: list[tuple[str, torch.nn.Parameter]]

    def describe(self) -> str:
        split = sum(1 for _, _, k in self.muon if k > 1)
        return (f"optimizer: Muon on {len(self.muon)} hidden matrices (c_attn, c_proj, c_fc; the {split} c_attn as "
                f"Q, K, V), AdamW on {len(self.adamw_decay)} embedding/head matrices "
                f"({', '.join(n for n, _ in self.adamw_decay)}) and {len(self.adamw_no_decay)} gains and biases "
                f"(no decay)")


MUON_ROLES = {"attn.c_attn.weight": 3, "attn.c_proj.weight": 1, "mlp.c_fc.weight": 1, "mlp.c_proj.weight": 1}


def route(named: Iterable[tuple[str, torch.nn.Parameter]]) -> Route:
    """By role (gpt.py's names): a block's attention and MLP weight matrices to Muon, ``c_attn`` split in three;
    every other matrix (wte, tied to lm_head; wpe) to decayed AdamW; vectors to undecayed AdamW."""
    r = Route([], [], [])
    for name, p in named:
        if not p.requires_grad:
            continue
        split = next((k for suffix, k in MUON_ROLES.items() if name.endswith(suffix)), 0)
        if split and ".h." in f".{name}":
            r.muon.append((name, p, split))
        elif p.dim() >= 2:
            r.adamw_decay.append((name, p))
        else:
            r.adamw_no_decay.append((name, p))
    return r


class Muon(torch.optim.Optimizer):
    """Groups with ``muon=True`` (keys: lr, momentum, nesterov, ns_steps, lr_scale, weight_decay, splits, ns_dtype
    as a torch dtype's name) take Muon steps; groups with ``muon=False`` (lr, betas, eps, weight_decay) take AdamW
    steps."""

    def __init__(self, groups: list[dict]) -> None:
        super().__init__(groups, {})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["muon"]:
                self._muon_group(group)
            else:
                self._adamw_group(group)
        return loss

    def _muon_group(self, group: dict) -> None:
        mu, lr = group["momentum"], group["lr"]
        for p, split in zip(group["params"], group["splits"]):
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]  # under FSDP2 a row shard, as p: sharded checkpoints hold it
            buf.lerp_(p.grad, 1 - mu)
            update = p.grad.lerp(buf, mu) if group["nesterov"] else buf
            sharded = isinstance(update, DTensor)
            if sharded:  # FSDP2: gather the rows, orthogonalize the whole matrix (every rank alike), keep our rows
                update = update.full_tensor()
            rows, cols = update.size(0) // split, update.size(1)
            update = newton_schulz(update.view(split, rows, cols), group["ns_steps"], getattr(torch, group["ns_dtype"]))
            update = update.view(split * rows, cols).to(p.dtype)
            if sharded:
                update = distribute_tensor(update, p.device_mesh, p.placements, src_data_rank=None)
            scale = (max(1.0, rows / cols) ** 0.5 if group["lr_scale"] == "spectral"
                     else 0.2 * math.sqrt(max(rows, cols)))
            p.mul_(1 - lr * group["weight_decay"])
            p.add_(update, alpha=-lr * scale)

    def _adamw_group(self, group: dict) -> None:
        (beta1, beta2), lr, eps = group["betas"], group["lr"], group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            step = state["step"].item()
            p.mul_(1 - lr * group["weight_decay"])
            state["exp_avg"].lerp_(p.grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2 ** step)).add_(eps)
            p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** step))


def muon_groups(r: Route, *, lr: float, momentum: float, ns_steps: int, lr_scale: str, weight_decay: float,
                adamw_lr: float, betas: tuple[float, float], eps: float, adamw_weight_decay: float,
                ns_dtype: str, nesterov: bool = True) -> list[dict]:
    """The three groups of a routed GPT: Muon, decayed AdamW, undecayed AdamW (empty ones left out). ``ns_dtype``:
    ``bfloat16`` or ``float32``, a name (the groups are saved in checkpoints and logged)."""
    groups = [
        {"params": [p for _, p, _ in r.muon], "splits": [k for _, _, k in r.muon], "muon": True, "lr": lr,
         "momentum": momentum, "nesterov": nesterov, "ns_steps": ns_steps, "lr_scale": lr_scale,
         "weight_decay": weight_decay, "ns_dtype": ns_dtype},
        {"params": [p for _, p in r.adamw_decay], "muon": False, "lr": adamw_lr, "betas": betas, "eps": eps,
         "weight_decay": adamw_weight_decay},
        {"params": [p for _, p in r.adamw_no_decay], "muon": False, "lr": adamw_lr, "betas": betas, "eps": eps,
         "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


class MomentumWarmup(Callback):
    """Muon's momentum rises linearly from ``start`` to ``end`` over the first ``batches`` (modded-nanogpt: 0.85 ->
    0.95), set before every batch from the timestamp (so a resumed run has the uninterrupted one's) and logged as
    ``optimizer/muon_momentum``."""

    def __init__(self, start: float, end: float, batches: int) -> None:
        self.start, self.end, self.batches = start, end, batches

    def momentum(self, batch: int) -> float:
        return self.end if batch >= self.batches else self.start + (self.end - self.start) * batch / self.batches

    def batch_start(self, state: State, logger: Logger) -> None:
        value = self.momentum(int(state.timestamp.batch))
        for optimizer in state.optimizers:
            for group in optimizer.param_groups:
                if group.get("muon"):
                    group["momentum"] = value
        logger.log_metrics({"optimizer/muon_momentum": value})
