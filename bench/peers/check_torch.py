#!/usr/bin/env python3
"""Checks `puremoe eval` against an independent PyTorch implementation of the same Mixtral-format model.

The model directory (config.json + model.safetensors, as `puremoe train` writes it) is loaded into a PyTorch model
written here from the specification (Hugging Face Mixtral's architecture, ../shared/ROUTERS.md for the routers),
run in float64 on the same input_ids, and its logits, mean next-token cross-entropy and the gradient of that loss
for every parameter are compared with each of our eval outputs. Nothing here calls PureMoE code: the routers'
decisions (top-k, capacity, dropping, Rectify's fill-in and intra-GPU rectification, C2R's candidate lists) are
re-implemented from the specification.

Usage: check_torch.py --model DIR --tokens FILE --ours LABEL=FILE [--ours LABEL=FILE ...] [--tol LABEL=REL ...]
       check_torch.py tokens FILE --batch B --seq S --vocab V [--seed N]   (writes random input_ids [B, S])
Each FILE is `puremoe eval --grads` output. The error of a tensor is max|ours − torch| / max|torch|. Prints one
line per output (LABEL, its worst tensor and error) and exits 1 if any error is above its tolerance
(default: 1e-12 for labels containing "64", else 1e-4).
"""
import argparse, json, math, os, struct, sys
import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    """name -> numpy array, from the safetensors layout: u64 header size, JSON header, raw little-endian bytes."""
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise SystemExit(f"{path}: tensor {name} has dtype {info['dtype']}, which this checker does not read")
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    """Writes name -> numpy array (little-endian, C order) as safetensors."""
    names = {np.dtype(v): k for k, v in DTYPES.items()}
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


# ------------------------------------------------------------------------------------------------ routers
# Each takes the router logits l [T, E] (a torch tensor that carries gradients) and returns the dense gate matrix
# W [T, E]: the MoE output is y_t = Σ_e W_te · Expert_e(x_t). Decisions are made on detached values in numpy.

# What the routing did over all layers (dropped pairs, fill-ins, rectified tokens...), printed with the results so
# a run shows which paths of a router it exercised.
COUNTS = {}


def count(what, n):
    COUNTS[what] = COUNTS.get(what, 0) + int(n)


def top_experts(scores, count):
    """[T, count] expert indices by descending score, ties to the lower expert index (a stable sort)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :count]


def capacity_of(tokens, choices, experts, cf):
    return math.ceil(tokens * choices / experts * cf)  # left to right, as ROUTERS.md writes it


def place(candidates, experts, capacity, first_free, by_position):
    """candidates: list of (pair, token, expert, priority) in token order. Returns the set of kept pairs."""
    kept = set()
    for e in range(experts):
        asking = [c for c in candidates if c[2] == e]
        free = max(0, capacity - first_free[e])
        if len(asking) > free:
            asking = asking[:free] if by_position else sorted(asking, key=lambda c: (-c[3], c[1]))[:free]
        kept.update(c[0] for c in asking)
    return kept


def dense(tokens, experts, expert_of, weight_of):
    """W [T, E] from per-pair experts (numpy [T, m], −1 = none) and weights (torch [T, m])."""
    onehot = torch.zeros(tokens, expert_of.shape[1], experts, dtype=weight_of.dtype)
    for t, j in zip(*np.nonzero(expert_of >= 0)):
        onehot[t, j, expert_of[t, j]] = 1.0
    return (onehot * weight_of[:, :, None]).sum(1)


def route_topk(l, opt, k):
    tokens, experts = l.shape
    k = int(opt.get("k", k))
    norm = str(opt.get("normalization", "softmax_renorm")).replace("_", "").lower()
    s = l.softmax(-1)
    if norm == "postsoftmax":
        chosen = top_experts(l.detach().numpy(), k)
        gate = l.gather(1, torch.from_numpy(chosen)).softmax(-1)
    else:
        chosen = top_experts(s.detach().numpy(), k)
        gate = s.gather(1, torch.from_numpy(chosen))
        if norm == "softmaxrenorm" and not straight_through(opt):
            gate = gate / gate.sum(-1, keepdim=True)
    keep = np.ones((tokens, k))
    cf = opt.get("capacity_factor")
    if cf not in (None, "none", "null"):
        capacity = capacity_of(tokens, k, experts, float(cf))
        by_position = str(opt.get("drop_policy", "probs")).lower() == "position"
        g = gate.detach().numpy()
        candidates = [(t * k + j, t, chosen[t, j], g[t, j]) for t in range(tokens) for j in range(k)]
        kept = place(candidates, experts, capacity, [0] * experts, by_position)
        keep = np.array([[1.0 if t * k + j in kept else 0.0 for j in range(k)] for t in range(tokens)])
        count("dropped", tokens * k - len(kept))
    if straight_through(opt):  # after capacity, which ranks by the probability: forward 1, gradient of g
        gate = gate - gate.detach() + 1.0
    return dense(tokens, experts, chosen, gate * torch.from_numpy(keep))


def straight_through(opt):
    return str(opt.get("straight_through", "false")).lower() == "true"


def route_rectify(l, opt, k):
    tokens, experts = l.shape
    k = int(opt.get("k", k))
    fill_in = str(opt.get("fill_in", "true")).lower() == "true"
    intra = str(opt.get("intra_gpu", "true")).lower() == "true"
    unrouted = str(opt.get("unrouted", "all")).replace("_", "").lower()
    priority = str(opt.get("fill_priority", "score")).replace("_", "").lower()
    choices = k + (1 if fill_in else 0)
    g = l.softmax(-1)
    gn = g.detach().numpy()
    top = top_experts(gn, choices)
    capacity = capacity_of(tokens, k, experts, float(opt.get("capacity_factor", 1.0)))
    columns = choices + (1 if intra else 0)
    expert = -np.ones((tokens, columns), dtype=np.int64)
    expert[:, :choices] = top
    kept = np.zeros((tokens, columns), dtype=bool)
    # First choices: each expert keeps its C best by g (ties: lower token).
    first = [(t * columns + j, t, top[t, j], gn[t, top[t, j]]) for t in range(tokens) for j in range(k)]
    first_kept = place(first, experts, capacity, [0] * experts, by_position=False)
    counts = [sum(1 for c in first if c[2] == e) for e in range(experts)]  # before dropping
    fill_kept = set()
    if fill_in:  # the (k+1)-th choices, into the slots after all first choices of their expert
        fills = [(t * columns + k, t, top[t, k], gn[t, top[t, 0]] if priority == "top1gate" else gn[t, top[t, k]])
                 for t in range(tokens)]
        fill_kept = place(fills, experts, capacity, counts, by_position=priority == "position")
    for pair in first_kept | fill_kept:
        kept[pair // columns, pair % columns] = True
    count("dropped", tokens * k - len(first_kept))
    if fill_in:
        count("fill-ins kept", len(fill_kept))
    mu = kept.astype(np.float64)
    if intra:  # one device holds every expert here: h = argmax g over all experts
        for t in range(tokens):
            n = int(kept[t, :choices].sum())
            if not {"all": n == 0, "any": n < choices}.get(unrouted, n < choices - 1):
                continue
            h = int(np.argmax(gn[t]))  # first maximum: the lower index on ties
            count("rectified tokens", 1)
            missing = choices - n
            existing = [j for j in range(choices) if expert[t, j] == h]
            if existing and kept[t, existing[0]]:
                mu[t, existing[0]] += missing
            else:
                at = existing[0] if existing else choices
                expert[t, at] = h
                mu[t, at] = missing
    numerator = g.gather(1, torch.from_numpy(np.maximum(expert, 0))) * torch.from_numpy(mu)
    total = numerator.sum(-1, keepdim=True).detach()
    weights = numerator / torch.where(total == 0, torch.ones_like(total), total)
    return dense(tokens, experts, np.where(mu > 0, expert, -1), weights)


def route_relu(l, opt, k):
    count("active pairs", (l > 0).sum())
    count("tokens", l.shape[0])
    return torch.relu(l)


def route_c2r(l, opt, k, lists):
    tokens, experts = l.shape
    k = int(opt.get("k", k))
    candidates = int(opt.get("candidates", experts - 1))
    selected = str(opt.get("weighting", "full_softmax")).replace("_", "").lower() == "selectedsoftmax"
    scores = l if selected else l.softmax(-1)
    sn = scores.detach().numpy()
    chosen = np.zeros((tokens, k), dtype=np.int64)
    for t in range(tokens):
        e1 = int(np.argmax(sn[t]))
        pool = [int(c) for c in lists[e1][:candidates]]
        others = sorted(pool, key=lambda c: (-sn[t, c], c))[:k - 1]
        chosen[t] = [e1] + others
        count("differs from top-k", set(chosen[t]) != set(top_experts(sn[t:t + 1], k)[0]))
    picked = torch.from_numpy(chosen)
    weights = l.gather(1, picked).softmax(-1) * float(opt.get("selected_scale", 1.0)) if selected else scores.gather(1, picked)
    return dense(tokens, experts, chosen, weights)


# ------------------------------------------------------------------------------------------------ the model

def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate(x, cos, sin):  # x [B, H, S, hd]; Hugging Face's rotate_half convention
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def forward(p, cfg, ids, states):
    d, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or d // heads
    eps, experts, k = cfg.get("rms_norm_eps", 1e-5), cfg["num_local_experts"], cfg["num_experts_per_tok"]
    router = cfg.get("router") or {"name": "topk"}
    b, s = ids.shape
    # Inverse frequencies rounded to float32, as Hugging Face's inv_freq buffer is (and PureMoE follows it).
    inv = (1.0 / (float(cfg.get("rope_theta", 1e6)) ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))).float().double()
    angle = torch.outer(torch.arange(s, dtype=torch.float64), inv)
    angle = torch.cat((angle, angle), -1)
    cos, sin = angle.cos(), angle.sin()
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), 1)
    x = p["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{i}."
        h = rms_norm(x, p[pre + "input_layernorm.weight"], eps)
        q = (h @ p[pre + "self_attn.q_proj.weight"].T).view(b, s, heads, hd).transpose(1, 2)
        kk = (h @ p[pre + "self_attn.k_proj.weight"].T).view(b, s, kv, hd).transpose(1, 2)
        v = (h @ p[pre + "self_attn.v_proj.weight"].T).view(b, s, kv, hd).transpose(1, 2)
        q, kk = rotate(q, cos, sin), rotate(kk, cos, sin)
        kk, v = kk.repeat_interleave(heads // kv, 1), v.repeat_interleave(heads // kv, 1)
        att = ((q @ kk.transpose(-1, -2)) / math.sqrt(hd)).masked_fill(mask, float("-inf")).softmax(-1)
        x = x + (att @ v).transpose(1, 2).reshape(b, s, heads * hd) @ p[pre + "self_attn.o_proj.weight"].T
        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps).reshape(b * s, d)
        moe = pre + "block_sparse_moe."
        logits = h @ p[moe + "gate.weight"].T
        name = router["name"]
        if name == "topk":
            gates = route_topk(logits, router, k)
        elif name == "rectify":
            gates = route_rectify(logits, router, k)
        elif name == "relu":
            gates = route_relu(logits, router, k)
        elif name == "c2r":
            gates = route_c2r(logits, router, k, states[f"router_state.c2r.layers.{i}.candidates"])
        else:
            raise SystemExit(f"unknown router {name}")
        y = torch.zeros_like(h)
        for e in range(experts):
            w = lambda n: p[f"{moe}experts.{e}.{n}.weight"]
            y = y + gates[:, e:e + 1] * ((F.silu(h @ w("w1").T) * (h @ w("w3").T)) @ w("w2").T)
        x = x + y.view(b, s, d)
    head = p.get("lm_head.weight", p["model.embed_tokens.weight"])
    return rms_norm(x, p["model.norm.weight"], eps) @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--ours", action="append", required=True, help="LABEL=FILE, output of puremoe eval --grads")
    ap.add_argument("--tol", action="append", default=[], help="LABEL=REL, tolerance for that output")
    a = ap.parse_args()
    cfg = json.load(open(f"{a.model}/config.json"))
    weights = read_safetensors(f"{a.model}/model.safetensors")
    states = {n: v for n, v in weights.items() if n.startswith("router_state.")}
    params = {n: torch.tensor(v.astype(np.float64), requires_grad=True) for n, v in weights.items() if n not in states}
    ids = torch.from_numpy(read_safetensors(a.tokens)["input_ids"].astype(np.int64))
    logits = forward(params, cfg, ids, states)
    vocab = logits.shape[-1]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1))
    loss.backward()
    expected = {"logits": logits.detach().numpy(), "loss": np.array([loss.item()])}
    for n, t in params.items():
        expected["grad." + n] = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
    tolerances = dict(t.split("=", 1) for t in a.tol)
    router = cfg.get("router") or {"name": "topk"}
    name = os.path.basename(os.path.normpath(a.model))
    routed = ", ".join(f"{v} {k}" for k, v in COUNTS.items())
    print(f"{name}: router {json.dumps(router, separators=(',', ':'))}; {ids.numel()} tokens × {cfg['num_hidden_layers']} layers"
          + (f"; {routed}" if routed else ""))
    failed = False
    for spec in a.ours:
        label, path = spec.split("=", 1)
        ours = read_safetensors(path)
        missing = sorted(set(expected) - set(ours))
        if missing:
            print(f"{label}: missing {missing[:3]}")
            failed = True
            continue
        errors = {}
        for n, want in expected.items():
            got = ours[n].astype(np.float64).reshape(want.shape)
            errors[n] = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-300))
        worst = max(errors, key=errors.get)
        tol = float(tolerances.get(label, 1e-12 if "64" in label else 1e-4))
        ok = errors[worst] <= tol
        failed |= not ok
        print(f"  {label:<10} logits {errors['logits']:.1e}  "
              f"loss {errors['loss']:.1e}  grads {max(v for n, v in errors.items() if n.startswith('grad.')):.1e} "
              f"({len(errors) - 2} tensors; worst {worst})  {'ok' if ok else f'ABOVE {tol:g}'}")
    sys.exit(1 if failed else 0)


def write_tokens(argv):
    ap = argparse.ArgumentParser(prog="check_torch.py tokens")
    ap.add_argument("file")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    ids = np.random.default_rng(a.seed).integers(0, a.vocab, size=(a.batch, a.seq), dtype=np.int64)
    write_safetensors(a.file, {"input_ids": ids})


if __name__ == "__main__":
    torch.set_num_threads(1)
    write_tokens(sys.argv[2:]) if sys.argv[1:2] == ["tokens"] else main()
