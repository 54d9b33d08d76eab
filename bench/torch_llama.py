#!/usr/bin/env python3
"""PyTorch reference for bench/train_throughput.sh (CPU, fp32) and scripts/gpu_check.sh (GPU, bf16).

A compact LLaMA with the structure of Hugging Face's LlamaForCausalLM
(DESIGN.md section 3): token embedding -> L x [RMSNorm -> attention (separate
q/k/v/o projections, RoPE rotate_half, causal softmax) -> residual -> RMSNorm ->
SwiGLU MLP (gate/up/down) -> residual] -> RMSNorm -> untied lm_head -> mean
cross-entropy. No biases. AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on
matrices only) + clip_grad_norm_(1.0), like llm-train.

Batches are random tokens [micro_batch, seq + 1] (data loading is not what is
measured). Prints per-run statistics; with --json a final machine-readable line
starting with "RESULT " follows.

Run with the Debian system python (python3-torch):
    /usr/bin/python3 bench/torch_llama.py --threads 2 --iters 20
On a GPU, the strongest plain-PyTorch recipe: bf16 autocast over fp32 weights
(PyTorch's AMP: fp32 master weights like llm-train --bf16), SDPA attention
(flash kernels; grouped-query without copies where PyTorch has enable_gqa),
fused AdamW and torch.compile:
    python3 bench/torch_llama.py --device cuda --bf16 --compile --fused-adamw ...
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - reported to the user
    sys.stderr.write(
        "torch_llama.py: PyTorch is not importable by %s.\n"
        "Install it with: apt-get install -y python3-torch  (then run with /usr/bin/python3)\n" % sys.executable)
    sys.exit(3)


def _torch_at_least(major, minor):
    try:
        v = torch.__version__.split("+")[0].split(".")
        return (int(v[0]), int(v[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # HF LlamaRMSNorm: statistics in fp32 (the model is fp32 here anyway).
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Rotary(nn.Module):
    def __init__(self, head_dim, max_pos, theta):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        t = torch.arange(max_pos, dtype=torch.float64)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)  # [S, d]
        self.register_buffer("sin", emb.sin().float(), persistent=False)

    def forward(self, q, k):  # [B, H, S, d]
        s = q.shape[-2]
        # In q's dtype, as HF's LlamaRotaryEmbedding returns them: under bf16 autocast an
        # fp32 table would promote q and k to fp32 (and SDPA would cast them back).
        cos, sin = self.cos[:s].to(q.dtype), self.sin[:s].to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class Attention(nn.Module):
    def __init__(self, cfg, rotary):
        super().__init__()
        d, h, g = cfg.hidden, cfg.heads, cfg.groups
        self.h, self.g, self.hd = h, g, d // h
        self.q_proj = nn.Linear(d, h * self.hd, bias=False)
        self.k_proj = nn.Linear(d, g * self.hd, bias=False)
        self.v_proj = nn.Linear(d, g * self.hd, bias=False)
        self.o_proj = nn.Linear(h * self.hd, d, bias=False)
        self.rotary = rotary
        self.sdpa = getattr(F, "scaled_dot_product_attention", None)
        # PyTorch >= 2.5 shares key/value heads inside SDPA (no repeat_interleave copies).
        self.gqa = self.sdpa is not None and ("enable_gqa" in (getattr(self.sdpa, "__doc__", "") or "") or
                                              _torch_at_least(2, 5))

    def forward(self, x, causal_mask):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.g, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.g, self.hd).transpose(1, 2)
        q, k = self.rotary(q, k)
        if self.sdpa is not None and self.g != self.h and self.gqa:
            o = self.sdpa(q, k, v, is_causal=True, enable_gqa=True)
            return self.o_proj(o.transpose(1, 2).reshape(b, s, -1))
        if self.g != self.h:
            rep = self.h // self.g
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if self.sdpa is not None:  # PyTorch >= 2.0
            o = self.sdpa(q, k, v, is_causal=True)
        else:  # HF's eager path
            w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hd)
            w = w + causal_mask
            w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
            o = torch.matmul(w, v)
        o = o.transpose(1, 2).reshape(b, s, -1)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.ffn, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.ffn, bias=False)
        self.down_proj = nn.Linear(cfg.ffn, cfg.hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg, rotary):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden, cfg.eps)
        self.self_attn = Attention(cfg, rotary)
        self.post_attention_layernorm = RMSNorm(cfg.hidden, cfg.eps)
        self.mlp = MLP(cfg)

    def forward(self, x, mask):
        x = x + self.self_attn(self.input_layernorm(x), mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        rotary = Rotary(cfg.hidden // cfg.heads, cfg.seq, cfg.theta)
        self.layers = nn.ModuleList([Block(cfg, rotary) for _ in range(cfg.layers)])
        self.norm = RMSNorm(cfg.hidden, cfg.eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        mask = torch.full((cfg.seq, cfg.seq), torch.finfo(torch.float32).min).triu(1)
        self.register_buffer("causal_mask", mask, persistent=False)
        # Init as DESIGN.md: normal(0, 0.02), o_proj/down_proj scaled by 1/sqrt(2L).
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = cfg.std / math.sqrt(2 * cfg.layers) if name.endswith(("o_proj.weight", "down_proj.weight")) \
                    else cfg.std
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids, targets):
        x = self.embed_tokens(ids)
        s = ids.shape[1]
        mask = self.causal_mask[:s, :s]
        for blk in self.layers:
            x = blk(x, mask)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def matmul_params(cfg):
    """Weights used in matrix products: block matrices + lm_head (not the input embedding)."""
    hd = cfg.hidden // cfg.heads
    attn = cfg.hidden * (cfg.heads * hd + 2 * cfg.groups * hd) + cfg.heads * hd * cfg.hidden
    mlp = 3 * cfg.hidden * cfg.ffn
    return cfg.layers * (attn + mlp) + cfg.vocab * cfg.hidden


def flops_per_token(cfg):
    return 6 * matmul_params(cfg) + 12 * cfg.layers * cfg.hidden * cfg.seq


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=20, help="timed iterations (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up iterations")
    ap.add_argument("--max-seconds", type=float, default=0.0,
                    help="stop after this long, warm-up included (0: no limit; at least 2 timed iterations run)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--groups", type=int, default=0, help="key/value heads (0: = heads)")
    ap.add_argument("--ffn", type=int, default=688)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--theta", type=float, default=1e4)
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", action="store_true", help="also print a 'RESULT {json}' line")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast over fp32 weights (PyTorch AMP)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) (GPU)")
    cfg = ap.parse_args()
    cfg.groups = cfg.groups or cfg.heads
    if cfg.threads < 1 or cfg.iters < 1 or cfg.warmup < 0:
        ap.error("--threads and --iters must be >= 1, --warmup >= 0")

    torch.set_num_threads(cfg.threads)
    try:
        torch.set_num_interop_threads(1)  # no inter-op parallelism is used in a training step
    except RuntimeError:
        pass
    torch.manual_seed(cfg.seed)

    dev = torch.device(cfg.device)
    model = Llama(cfg).to(dev)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices (embedding included)
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        if cfg.fused_adamw:
            opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
            impl = "fused"
        else:
            opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)
            impl = "foreach"
    except TypeError:  # older PyTorch
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)
        impl = "for-loop"

    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    tokens_per_iter = cfg.micro_batch * cfg.seq
    fwd = torch.compile(model) if cfg.compile else model

    def step():
        batch = torch.randint(0, cfg.vocab, (cfg.micro_batch, cfg.seq + 1), generator=gen, device=dev)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = fwd(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    t_begin = time.perf_counter()
    for _ in range(cfg.warmup):
        step()
    times = []
    loss = float("nan")
    for i in range(cfg.iters):
        t0 = time.perf_counter()
        loss = step()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if cfg.max_seconds > 0 and t1 - t_begin > cfg.max_seconds and i + 1 >= 2:
            break
    tps = [tokens_per_iter / t for t in times]
    blas = ""
    try:  # which BLAS the process loaded (Debian: openblas-pthread or openblas-openmp via alternatives)
        with open("/proc/self/maps") as f:
            libs = sorted({l.split()[-1] for l in f if "blas" in l.split()[-1]})
        blas = next((os.path.basename(os.path.dirname(x)) for x in libs if "openblas" in x), libs[0] if libs else "")
    except (OSError, IndexError):
        pass
    fpt = flops_per_token(cfg)
    res = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "iters": len(times),
        "tokens_per_iter": tokens_per_iter,
        "tokens_per_sec_median": statistics.median(tps),
        "tokens_per_sec_mean": tokens_per_iter * len(times) / sum(times),
        "tokens_per_sec_best": max(tps),
        "ms_per_iter_median": 1000.0 * statistics.median(times),
        "flops_per_token": fpt,
        "matmul_params": matmul_params(cfg),
        "params": sum(p.numel() for p in model.parameters()),
        "attention": "sdpa" if model.layers[0].self_attn.sdpa is not None else "eager",
        "adamw": impl,
        "blas": blas or "unknown",
        "final_loss": loss,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "bf16": cfg.bf16,
        "compiled": cfg.compile,
    }
    print("torch %s, %d threads, %s, %s attention, %s AdamW, %d params: %d timed iters, median %.1f ms/iter, "
          "%.0f tokens/s (mean %.0f), %.2f GFLOP/s, loss %.3f" %
          (res["torch_version"], res["threads"], res["blas"], res["attention"], impl, res["params"], res["iters"],
           res["ms_per_iter_median"], res["tokens_per_sec_median"], res["tokens_per_sec_mean"],
           res["tokens_per_sec_median"] * fpt / 1e9, loss))
    if cfg.json:
        print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
