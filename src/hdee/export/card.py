"""The model card (`README.md`) of an exported ensemble: what it mixes, how, and what the run measured.

Rendered from the export's `ExportSpec` and the run's `results/results.json`; the numbers are the
run's own (hdee's evaluation of the same experts and method), never recomputed here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from huggingface_hub import ModelCardData

from hdee.export.spec import ExportSpec

_METHOD_TEXT = {
    "uniform": "the arithmetic mean of the experts' next-token distributions",
    "prefix-posterior": "an arithmetic mixture whose weight for expert k at position t is its posterior given the "
    "sequence so far (uniform prior times the probability it gave every earlier token of the sequence)",
    "prevtoken-posterior": "an arithmetic mixture weighted by the probability each expert gave the previous token",
    "cached-prior": "the prefix posterior with a prior over the experts fixed at export time",
    "cached-prior-prevtoken": "the previous-token posterior with a prior over the experts fixed at export time",
    "top-k": "the prefix posterior over the k heaviest experts at each position, weights renormalised",
    "product": "the normalised geometric mean of the experts' distributions (product of experts)",
}


def method_text(spec: ExportSpec) -> str:
    if spec.router is not None or spec.prefix_model:
        k = int(spec.method.removeprefix("routed-top"))
        how = (f"a {spec.router.kind} nearest-centroid router reads the first {spec.route_tokens} tokens and picks "
               f"{k} of the {len(spec.members)} experts" if spec.router is not None else "no routing is needed (k covers every expert)")
        return (f"routed: the first {spec.route_tokens} positions come from the prefix model `{spec.prefix_model}` "
                f"({spec.prefix_reason}); {how}, mixed from there on by their prefix posterior over the whole sequence")
    text = _METHOD_TEXT[spec.method]
    if spec.method == "top-k":
        text = text.replace("k heaviest", f"{spec.top_k} heaviest")
    return text


def _ensemble_results(results: dict[str, Any], spec: ExportSpec) -> dict[str, Any] | None:
    if results.get("ensemble") == spec.kind:
        return results.get("ensembles", {}).get(spec.strategy)
    alt = results.get("alt") or {}
    return alt.get("ensembles", {}).get(spec.strategy) if alt.get("ensemble") == spec.kind else None


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "-"


def perplexity_table(spec: ExportSpec, results: dict[str, Any] | None) -> list[str]:
    """Markdown rows: per domain, the ensemble under the exported method and each member alone."""
    ens = _ensemble_results(results or {}, spec)
    if ens is None:
        return ["The run has no evaluation of this ensemble yet (`hdee eval RUN` writes it)."]
    domains = [d["name"] for d in results.get("domains", [])]
    ppl = ens.get("ppl", {}).get(spec.method)
    experts = results.get("experts", {})
    head = ["domain", f"ensemble ({spec.method})", *[f"`{e}`" for e in spec.members]]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in domains:
        cells = [d, _fmt((ppl or {}).get(d)), *[_fmt(experts.get(e, {}).get("ppl", {}).get(d)) for e in spec.members]]
        rows.append("| " + " | ".join(cells) + " |")
    if ppl is None:
        rows.append(f"\n{spec.method} was not among the run's evaluated methods; the members' perplexities are shown.")
    if spec.prior_domain:
        rows.append(f"\nThe run's evaluation estimates the prior on each domain's own validation windows; this model "
                    f"fixes the one estimated on `{spec.prior_domain}`, so its perplexity equals the table's on "
                    f"`{spec.prior_domain}` only.")
    return rows


def render_card(spec: ExportSpec, results: dict[str, Any] | None, run_name: str) -> str:
    sizes = list(dict.fromkeys(spec.infos[e].record.size_name or "?" for e in spec.members))
    data = ModelCardData(library_name="transformers", pipeline_tag="text-generation",
                         tags=["hdee", "hdee_ensemble", "ensemble", "mixture", spec.strategy, spec.method])
    members = ["| expert | size | domain | parameters | final val loss |", "|---|---|---|---|---|"]
    for e in spec.models:
        r = spec.infos[e].record
        role = "" if e in spec.members else " (prefix model)"
        total = (r.params or {}).get("total") if isinstance(r.params, dict) else r.params
        params = f"{total / 1e6:.3f}M" if total else "-"
        members.append(f"| `{e}`{role} | {r.size_name or '-'} | {r.domain or ', '.join(r.trained_domains) or '-'} | "
                       f"{params} | {_fmt(r.final_val_loss)} |")
    prior = ""
    if spec.log_prior is not None:
        weights = ", ".join(f"`{e}` {w:.4f}" for e, w in zip(spec.members, np.exp(spec.log_prior).tolist()))
        prior = f"\nPrior (estimated on `{spec.prior_domain}`'s validation windows at export, fixed in `config.json`): {weights}.\n"
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# {run_name}: {spec.strategy} ensemble ({spec.kind} experts), {spec.method}", "",
        (f"{len(spec.members)} domain experts of sizes {', '.join(sizes)} from the hdee run `{run_name}`, "
         "one Hugging Face causal LM. Each expert keeps its own architecture, width and weights "
         "(`model-*.safetensors`); `forward` returns the mixture's log-probabilities as `logits`."), "",
        f"**Mixing method `{spec.method}`:** {method_text(spec)}.", prior,
        "## Experts", "", *members, "",
        "## Perplexity measured by the run (test split)", "", *perplexity_table(spec, results), "",
        "## Use", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline",
        'model = AutoModelForCausalLM.from_pretrained("DIR", trust_remote_code=True)  # or without, after `import hdee`',
        'tok = AutoTokenizer.from_pretrained("DIR", trust_remote_code=True)',
        'print(pipeline("text-generation", model=model, tokenizer=tok)("def main(", max_new_tokens=20))',
        "```", "",
        "`lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True --tasks ...` evaluates it as any HF model.",
        "", "## Limits", "",
        ("- `generate` supports greedy decoding and sampling; beam search is not supported (each expert's KV cache "
         "lives inside the ensemble's cache)."),
        "- The logits are normalised log-probabilities; temperature and top-p apply to the mixture.",
        "- Made by `hdee export`; `hdee-export.json` records the run, the experts' weight checksums and the method's inputs.",
        "",
    ]
    return "\n".join(lines)
