#!/usr/bin/env python3
"""Greedy decoding with a KV cache in PyTorch eager: the peer of `PureMoE.Bench quick decode`.

The same Mixtral-architecture MoE LM as train_torch.py (byte vocabulary 256, RMSNorm, grouped-query attention with
RoPE, SwiGLU experts, Mixtral's router as Hugging Face's MixtralSparseMoeBlock), random weights (std 0.02), under
torch.inference_mode. The attention keeps each layer's keys and values and appends the new position's, as Hugging
Face's DynamicCache does; a decoding step is one forward of one token, the last logits, argmax. The prefill is timed
apart; prints one JSON line with the median over --repeats runs of the mean time per decoded token.
"""
import argparse, json, math, os, statistics, sys, time
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tf32 import disable_tf32  # noqa: E402
from train_torch import Attention, Model, RMSNorm, SparseMoe, rope  # noqa: E402

disable_tf32(torch)


class CachedAttention(Attention):
    """train_torch's attention (same projections) keeping the keys and values of the positions seen so far."""

    def forward(self, x, cos, sin, cache):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if cache:
            k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
        cache[:] = [k, v]
        rep = self.h // self.kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        if s > 1:  # the prefill: causal over the prompt (one new query sees every cached key)
            mask = torch.triu(torch.ones(s, k.shape[2], dtype=torch.bool, device=x.device), k.shape[2] - s + 1)
            att = att.masked_fill(mask, float("-inf"))
        return self.o_proj((att.softmax(-1) @ v).transpose(1, 2).reshape(b, s, -1))


class CachedBlock(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(a.hidden), RMSNorm(a.hidden)
        self.self_attn = CachedAttention(a.hidden, a.heads, a.kv_heads)
        self.block_sparse_moe = SparseMoe(a.hidden, a.ff, a.experts, a.k)

    def forward(self, x, cos, sin, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.block_sparse_moe(self.post_attention_layernorm(x))


class CachedModel(Model):
    """train_torch's model (same embedding, initialisation and RoPE tables) with CachedBlock layers."""

    def __init__(self, a, positions):
        super().__init__(a, block=CachedBlock, positions=positions)

    def forward(self, ids, caches, start):
        x = self.embed(ids)
        end = start + ids.shape[1]
        for layer, cache in zip(self.layers, caches):
            x = layer(x, self.cos[start:end], self.sin[start:end], cache)
        return self.lm_head(self.norm(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--ff", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="accepted for the bench scripts; the output is always one JSON line")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    dev = torch.device(a.device)
    model = CachedModel(a, a.prompt + a.tokens).to(dev).eval()
    params = sum(t.numel() for t in model.parameters())
    prompt = torch.randint(0, 256, (1, a.prompt), device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def once():
        caches = [[] for _ in range(a.layers)]
        with torch.inference_mode():
            t0 = time.perf_counter()
            nxt = model(prompt, caches, 0)[0, -1].argmax().item()
            t1 = time.perf_counter()
            for t in range(a.tokens):
                nxt = model(torch.tensor([[nxt]], device=dev), caches, a.prompt + t)[0, -1].argmax().item()
            sync()
            t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / a.tokens

    once()  # warm-up
    runs = [once() for _ in range(a.repeats)]
    per_token = statistics.median(r[1] for r in runs)
    print(json.dumps({
        "bench": "decode", "impl": "torch", "torch": torch.__version__, "device": str(dev), "threads": a.threads,
        "parameters": params, "hidden": a.hidden, "layers": a.layers, "experts": a.experts, "k": a.k,
        "prompt": a.prompt, "tokens": a.tokens, "prefill_ms": round(statistics.median(r[0] for r in runs), 2),
        "ms_per_token": round(per_token, 3), "tokens_per_s": round(1e3 / per_token, 1), "repeats": a.repeats,
    }))


if __name__ == "__main__":
    main()
