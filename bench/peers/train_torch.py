#!/usr/bin/env python3
"""Full training steps of a tiny Mixtral-architecture MoE LM in PyTorch eager: the peer of `puremoe train`.

Same architecture as PureMoE's MixtralForCausalLM with Mixtral's router (softmax over experts, top-k, renormalise,
dropless): byte vocabulary 256, RMSNorm, grouped-query attention with RoPE (theta 1e6), SwiGLU experts, untied
lm_head. A step = forward, mean next-token cross-entropy, backward, clip_grad_norm_(1.0), AdamW (lr 3e-3,
weight decay 0.1). Batches are random byte windows of the given text. Prints one JSON line.
--device cuda runs it on the GPU (float32, TF32 off); --warmup N untimed steps come first (a GPU's first steps
initialise cuBLAS and the caching allocator), so tokens_per_s is the steady rate over --steps.
"""
import argparse, json, math, os, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tf32 import disable_tf32  # noqa: E402

disable_tf32(torch)


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def rope(x, cos, sin):  # x [B, H, S, hd]
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, d, heads, kv_heads):
        super().__init__()
        self.h, self.kv, self.hd = heads, kv_heads, d // heads
        self.q_proj = nn.Linear(d, heads * self.hd, bias=False)
        self.k_proj = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.v_proj = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.o_proj = nn.Linear(heads * self.hd, d, bias=False)

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = self.h // self.kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        mask = torch.triu(torch.ones(s, s, dtype=torch.bool, device=x.device), 1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(b, s, -1))


class Expert(nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.w1, self.w2, self.w3 = nn.Linear(d, ff, bias=False), nn.Linear(ff, d, bias=False), nn.Linear(d, ff, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoe(nn.Module):
    """Hugging Face's MixtralSparseMoeBlock: per-expert gather, compute, index_add."""

    def __init__(self, d, ff, experts, k):
        super().__init__()
        self.k, self.e = k, experts
        self.gate = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(Expert(d, ff) for _ in range(experts))

    def forward(self, x):
        b, s, d = x.shape
        x = x.view(-1, d)
        probs = self.gate(x).softmax(-1)
        w, idx = probs.topk(self.k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e in range(self.e):
            tok, slot = torch.where(idx == e)
            if tok.numel() == 0:
                continue
            out.index_add_(0, tok, self.experts[e](x[tok]) * w[tok, slot, None])
        return out.view(b, s, d)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(a.hidden), RMSNorm(a.hidden)
        self.self_attn = Attention(a.hidden, a.heads, a.kv_heads)
        self.block_sparse_moe = SparseMoe(a.hidden, a.ff, a.experts, a.k)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.block_sparse_moe(self.post_attention_layernorm(x))


class Model(nn.Module):
    """block: the decoder layer's class (decode_torch.py passes one with a KV cache); positions: RoPE table length."""

    def __init__(self, a, block=None, positions=None):
        super().__init__()
        self.embed = nn.Embedding(256, a.hidden)
        self.layers = nn.ModuleList((block or Block)(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.hidden)
        self.lm_head = nn.Linear(a.hidden, 256, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        hd = a.hidden // a.heads
        inv = 1.0 / (1e6 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(positions or a.seq).float(), inv)
        ang = torch.cat((ang, ang), -1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, ids):
        x = self.embed(ids)
        s = ids.shape[1]
        for layer in self.layers:
            x = layer(x, self.cos[:s], self.sin[:s])
        return self.lm_head(self.norm(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--ff", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--json", action="store_true", help="accepted for the bench scripts; the output is always one JSON line")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    data = torch.tensor(list(open(a.data, "rb").read()), dtype=torch.long)
    model = Model(a).to(a.device)
    # PyTorch's default AdamW on a GPU is its multi-tensor (foreach) form, as ours.
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    losses = []

    def step():
        starts = torch.randint(0, len(data) - a.seq - 1, (a.batch,))
        batch = torch.stack([data[s:s + a.seq + 1] for s in starts.tolist()]).to(a.device)
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())  # a host read each step, as ours: the step has finished on the device

    for _ in range(a.warmup):
        step()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(json.dumps({"bench": "train", "impl": "torch", "peer": f"torch {torch.__version__}", "device": a.device, "accelerator": where,
                      "threads": torch.get_num_threads(), "steps": a.steps, "warmup": a.warmup,
                      "tokens_per_s": a.steps * a.batch * a.seq / elapsed, "seconds": elapsed, "parameters": params,
                      "first_loss": losses[0], "last_loss": losses[-1]}))


if __name__ == "__main__":
    main()
