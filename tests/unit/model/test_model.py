import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from hdee.config import ModelFamily
from hdee.core.errors import ConfigError
from hdee.model import (
    SizeSpec,
    attention_flops_per_token,
    build_model,
    flops_per_token,
    flops_per_token_full,
    llama_config,
    param_counts,
)

torch.set_num_threads(1)


def spec(**kw):
    args = dict(name="M", vocab=256, hidden=32, layers=2, heads=4, kv_heads=4, intermediate=96, seq_len=64)
    args.update(kw)
    return SizeSpec(**args)


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": True}, {"kv_heads": 2}, {"layers": 3, "intermediate": 40}])
def test_param_counts_match_the_real_model(kw):
    s = spec(**kw)
    model = build_model(s, seed=0)
    counts = param_counts(s)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embedding"] == model.model.embed_tokens.weight.numel()
    non_emb = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    assert counts["non_embedding"] == non_emb
    assert counts["head"] == (0 if s.tie_embeddings else s.vocab * s.hidden)


def test_paper_family_counts_and_budget():
    family = ModelFamily(hidden=768, layers=12, heads=12, intermediate={"S": 2304, "M": 3072, "L": 3840})
    non_emb = {n: param_counts(SizeSpec.from_family(family, n, vocab=128002, seq_len=1024))["non_embedding"] for n in "SML"}
    assert round(non_emb["S"] / 1e6, 1) == 92.0
    assert round(non_emb["M"] / 1e6, 1) == 113.3
    assert round(non_emb["L"] / 1e6, 1) == 134.5
    m = SizeSpec.from_family(family, "M", vocab=128002, seq_len=1024)
    assert flops_per_token(m) == 6 * non_emb["M"]
    budget = 3 * flops_per_token(m) * 400 * 688_128
    assert f"{budget:.3g}" == "5.61e+17"
    # S + M + L at equal steps costs the same as 3 x M (within 0.1%)
    assert abs(sum(non_emb.values()) - 3 * non_emb["M"]) / (3 * non_emb["M"]) < 1e-3


def test_full_flops_match_flop_counter_on_one_training_step():
    s = spec()
    model = build_model(s, seed=0)
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randint(0, s.vocab, (2, s.seq_len + 1))
    # the CPU sdpa kernel is not in the counter's table; count it like the other sdpa kernels
    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: (
            lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v)
        ),
    }
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, s.vocab), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
    per_token = counter.get_total_flops() / (2 * s.seq_len)
    # the kernel computes the full (unmasked) score matrix, so compare with causal=False
    assert abs(per_token - flops_per_token_full(s, causal=False)) / per_token < 0.10
    assert counter.get_total_flops() > 0
    # and the useful (causal) count drops exactly half of the attention term
    assert flops_per_token_full(s) == flops_per_token_full(s, causal=False) - attention_flops_per_token(s, causal=True)
    assert attention_flops_per_token(s) == 6 * s.layers * s.seq_len * s.hidden


def test_build_model_is_deterministic_and_uses_sdpa():
    s = spec()
    a, b, c = build_model(s, 3), build_model(s, 3), build_model(s, 4)
    for (n, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), n
    assert any(not torch.equal(p, r) for p, r in zip(a.parameters(), c.parameters()))
    assert llama_config(s)._attn_implementation == "sdpa"
    assert all(p.dtype == torch.float32 for p in a.parameters())
    # the global RNG is left alone
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    build_model(s, 9)
    assert torch.equal(torch.rand(1), before)


def test_from_family_and_bad_shapes():
    family = ModelFamily(hidden=64, layers=2, heads=4, kv_heads=2, intermediate={"S": 96, "L": 160})
    s = SizeSpec.from_family(family, "L", vocab=300, seq_len=32)
    assert (s.intermediate, s.kv_heads, s.vocab, s.seq_len, s.name) == (160, 2, 300, 32, "L")
    with pytest.raises(ConfigError, match="size 'M'"):
        SizeSpec.from_family(family, "M", vocab=300, seq_len=32)
    with pytest.raises(ValueError):
        spec(hidden=30)
