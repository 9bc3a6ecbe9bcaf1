"""The plan: a DAG of content-addressed jobs with per-strategy compute, and its refusals."""

from __future__ import annotations

import json

import pytest

from hdee.config import load_config
from hdee.core.errors import ConfigError, PlanError
from hdee.plan import Job, Plan, build_plan, topological
from hdee.plan.seeds import domain_phase_seed
from hdee.registry import STRATEGIES
from hdee.core.layout import RunLayout
from hdee.run import resolve_vocab
from hdee.strategies import Assignment, PilotSpec, Strategy, register
from tests.helpers.paths import ROOT

PAPER_VOCAB = 128002


@pytest.fixture(scope="module")
def paper_plan(paper):
    return build_plan(paper, PAPER_VOCAB)


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg
    return msg


def test_paper_iteration3_is_three_m400_experts_at_equal_flops(paper_plan):
    e = paper_plan.ensembles
    base = paper_plan.job(e["MHo-IHo"].experts[0])
    assert (base.size, base.steps, base.tokens) == ("M", 400, 400 * 688_128)
    i3 = [e[s].iteration_flops["3"] for s in ("MHo-IHo", "MHo-IHe", "MHe-IHo")]
    assert i3[0] == pytest.approx(5.61e17, rel=2e-3)
    assert i3[1] == pytest.approx(i3[0], rel=1e-9)
    assert i3[2] == pytest.approx(i3[0], rel=1e-3)  # S + L = 2 M up to the norms
    for s in ("MHo-IHo", "MHo-IHe", "MHe-IHo", "MHe-IHe", "dense"):
        assert e[s].domain_flops == pytest.approx(paper_plan.budget_flops, rel=1e-3)


def test_shared_jobs_appear_once(paper_plan):
    ids = [j.id for j in paper_plan.jobs]
    assert len(ids) == len(set(ids))
    moderate = [j for j in paper_plan.jobs if j.kind == "train" and j.lineage == "moderate" and j.iteration == 3 and j.steps == 400]
    assert len(moderate) == 1
    assert set(moderate[0].used_by) == {"MHo-IHo", "MHo-IHe", "MHe-IHo"}
    assert moderate[0].id.startswith("train-moderate-i3-M-400-")
    for s in ("MHo-IHo", "MHo-IHe", "MHe-IHo"):
        assert moderate[0].id in paper_plan.ensembles[s].experts


def test_seeds_only_for_needed_sizes(paper, paper_plan):
    seeds = {j.size: j for j in paper_plan.jobs_of("seed")}
    assert set(seeds) == {"S", "M", "L"}
    assert seeds["M"].steps == 20_000 and seeds["M"].domains == ["openwebtext"]
    assert paper_plan.ensembles["MHo-IHo"].sizes_needed == ["M"]
    assert paper_plan.ensembles["MHe-IHo"].sizes_needed == ["S", "M", "L"]
    assert paper_plan.ensembles["MHe-IHo"].seed_flops == pytest.approx(sum(j.flops for j in seeds.values()))
    only_base = build_plan(paper.model_copy(update={"strategies": ["MHo-IHo"]}), PAPER_VOCAB)
    assert [j.size for j in only_base.jobs_of("seed")] == ["M"]


def test_dag_is_topological_and_branches_follow_lineages(paper_plan):
    seen: set[str] = set()
    for j in paper_plan.jobs:
        assert all(d in seen for d in j.deps), j.id
        seen.add(j.id)
        if j.kind == "train" and j.iteration and j.iteration > 1:
            parent = paper_plan.job(j.parent)
            assert parent.lineage == j.lineage and parent.iteration == j.iteration - 1 and parent.size == j.size
        if j.kind == "train" and j.iteration == 1:
            assert paper_plan.job(j.parent).kind == "seed"


def test_scores_cover_every_expert_of_both_ensembles_on_every_eval_domain(paper, paper_plan):
    scores = paper_plan.jobs_of("score")
    assert sorted(j.expert for j in scores) == sorted(paper_plan.experts)  # one job per expert
    assert all(j.domains == paper.eval_domains for j in scores)
    # every trained expert, not only the final ones: MHo-IHo's 9 (M@400), MHo-IHe's own 2 in
    # iteration 3, MHe-IHo's 6 S and L, MHe-IHe's own 3 in iteration 3, dense; plus 3 seed models
    assert len(paper_plan.experts) == 9 + 2 + 6 + 3 + 1 + 3
    assert {paper_plan.job(e).kind for e in paper_plan.experts} == {"train", "dense", "seed"}
    for ens in paper_plan.ensembles.values():
        assert ens.experts == ens.members["final"]  # the config's ensemble = "final"
        assert set(ens.members["final"]) <= set(ens.members["all"]) <= set(paper_plan.experts)
    assert len(paper_plan.ensembles["MHe-IHe"].members["all"]) == 9


def test_ids_are_stable_and_repeat_reseeds_the_domain_phase_only(paper, paper_plan):
    again = build_plan(paper, PAPER_VOCAB)
    assert [j.id for j in again.jobs] == [j.id for j in paper_plan.jobs]
    other = build_plan(paper, PAPER_VOCAB, repeat=1)
    same = {j.id for j in other.jobs} & {j.id for j in paper_plan.jobs}
    assert {j.kind for j in paper_plan.jobs if j.id in same} == {"prepare", "seed", "score"}
    assert all(paper_plan.job(j.expert).kind == "seed" for j in paper_plan.jobs if j.id in same and j.kind == "score")
    for j in other.jobs:
        if j.kind in ("train", "dense"):  # window orders from the domain-phase stream of repeat 1
            assert j.seed == domain_phase_seed(paper.seed, 1, j.kind, j.domains) != domain_phase_seed(paper.seed, 0, j.kind, j.domains)


def test_changing_the_schedule_changes_train_ids_not_seed_ids(paper, paper_plan):
    budget = paper.budget.model_copy(update={"schedule": paper.budget.schedule.model_copy(update={"lr": 1e-4})})
    other = build_plan(paper.model_copy(update={"budget": budget}), PAPER_VOCAB)
    old = {j.id for j in paper_plan.jobs}
    assert all(j.id in old for j in other.jobs if j.kind in ("prepare", "seed"))
    assert not any(j.id in old for j in other.jobs if j.kind in ("train", "dense"))
    assert not any(j.id in old for j in other.jobs if j.kind == "score" and not j.expert.startswith("seed-"))


def test_ensemble_all_keeps_every_expert(tiny):
    forest = build_plan(tiny.model_copy(update={"ensemble": "all"}), 512)
    final = build_plan(tiny, 512)
    assert len(forest.ensembles["MHo-IHo"].experts) == 4
    assert len(final.ensembles["MHo-IHo"].experts) == 2
    # the same experts are trained and scored either way; only the main ensemble differs
    assert forest.ensembles["MHo-IHo"].members == final.ensembles["MHo-IHo"].members
    assert {j.id for j in forest.jobs} == {j.id for j in final.jobs}


def test_plan_json_round_trip(tmp_path, tiny):
    plan = build_plan(tiny, 512)
    path = tmp_path / "plan.json"
    plan.write(path)
    raw = json.loads(path.read_text())
    assert set(raw) >= {"jobs", "ensembles", "experts"}
    assert set(raw["ensembles"]["dense"]) >= {"experts", "seed_flops", "domain_flops", "sizes_needed"}
    assert all(v == f"experts/{k}" for k, v in raw["experts"].items())
    assert Plan.read(path) == plan


def test_vocab_resolution(tmp_path, paper, tiny):
    assert resolve_vocab(tiny) == (512, "data.tokenizer.vocab_size")
    assert resolve_vocab(paper)[0] == 128002
    assert resolve_vocab(paper, RunLayout(tmp_path / "absent"), vocab=1000) == (1000, "--vocab")


# ---------------------------------------------------------------- refusals


def test_unknown_strategy_is_refused(tmp_path, tiny):
    with pytest.raises(PlanError, match="unknown strategy 'nope'") as exc:
        build_plan(tiny.model_copy(update={"strategies": ["MHo-IHo", "nope"]}), 512)
    _one_line(exc.value)
    text = (ROOT / "configs/tiny.toml").read_text().replace('strategies = ["MHo-IHo",', 'strategies = ["nope", "MHo-IHo",')
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match="unknown strategy 'nope'") as exc:
        load_config(tmp_path / "c.toml")
    _one_line(exc.value)


@pytest.mark.parametrize("which", ["unknown", "heldout"])
def test_lineage_with_bad_domain_is_refused(tmp_path, tiny, which):
    domain = "no_such_domain" if which == "unknown" else tiny.heldout_domains[0]
    message = f"unknown domain '{domain}'" if which == "unknown" else f"held-out domain '{domain}'"
    first, last = tiny.lineages[1].domains
    old = f'domains = ["{first}", "{last}"]'
    text = (ROOT / "configs/tiny.toml").read_text()
    assert old in text
    (tmp_path / "c.toml").write_text(text.replace(old, f'domains = ["{first}", "{domain}"]'))
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(tmp_path / "c.toml")
    _one_line(exc.value)
    lineages = [tiny.lineages[0], tiny.lineages[1].model_copy(update={"domains": [first, domain]})]
    with pytest.raises(PlanError, match=message) as exc:
        build_plan(tiny.model_copy(update={"lineages": lineages}), 512)
    _one_line(exc.value)


def test_unmatched_budget_is_refused(tiny):
    budget = tiny.budget.model_copy(update={"sizes": {"easy": "S", "hard": "S"}})
    with pytest.raises(PlanError, match="'MHe-IHo' spends .* off the baseline") as exc:
        build_plan(tiny.model_copy(update={"budget": budget}), 512)
    _one_line(exc.value)
    strict = tiny.budget.model_copy(update={"tolerance": 0.01})
    with pytest.raises(PlanError, match="'MHe-IHe'"):
        build_plan(tiny.model_copy(update={"budget": strict}), 512)


def test_cycle_is_refused():
    jobs = [Job(id="a", kind="train", deps=["b"]), Job(id="b", kind="train", deps=["a"])]
    with pytest.raises(PlanError, match="cycle") as exc:
        topological(jobs)
    _one_line(exc.value)
    with pytest.raises(PlanError, match="not in the plan"):
        topological([Job(id="a", kind="train", deps=["zzz"])])


def test_lineage_changing_size_is_refused(tiny):
    @register("test-grow")
    class Grow(Strategy):
        def assign(self, pilot_outputs=None):
            return Assignment(self.lineage_experts(lambda lin, i: "S" if i == 1 else "L", lambda lin, i: 8))

    try:
        with pytest.raises(PlanError, match="changes size S -> L"):
            build_plan(tiny.model_copy(update={"strategies": ["test-grow"]}), 512)
    finally:
        STRATEGIES.remove("test-grow")


# ---------------------------------------------------------------- pilots (the plug-in point)


def test_pilot_strategy_is_planned_in_two_stages(tiny):
    seen_outputs = {}

    @register("test-pilot")
    class Piloted(Strategy):
        def pilots(self):
            easy, hard = self.cfg.lineages[0].domains[0], self.cfg.lineages[1].domains[0]
            return [PilotSpec("probe-easy", easy, "M", 2), PilotSpec("probe-hard", hard, "M", 2)]

        def assign(self, pilot_outputs=None):
            if pilot_outputs is None:
                return None
            seen_outputs.update(pilot_outputs)
            # the pilots spent 4 of the budget's 32 M-steps
            return Assignment(self.lineage_experts(lambda lin, i: "M", lambda lin, i: 7))

    cfg = tiny.model_copy(update={"strategies": ["MHo-IHo", "test-pilot"]})
    try:
        stage1 = build_plan(cfg, 512)
        assert stage1.pending == ["test-pilot"] and not stage1.complete
        pilots = stage1.jobs_of("pilot")
        assert len(pilots) == 2 and all(p.id.startswith("pilot-test-pilot-probe-") for p in pilots)
        assert stage1.ensembles["MHo-IHo"].experts  # the others are fully planned in stage 1
        assert stage1.ensembles["test-pilot"].experts == []
        outputs = {p.id: f"/runs/x/experts/{p.id}" for p in pilots}
        stage2 = build_plan(cfg, 512, pilot_outputs=outputs)
        assert stage2.complete
        assert set(seen_outputs) == {"probe-easy", "probe-hard"}
        assert {p.id for p in stage2.jobs_of("pilot")} == set(outputs)
        ens = stage2.ensembles["test-pilot"]
        assert ens.domain_flops == pytest.approx(stage2.budget_flops * (4 * 7 + 2 * 2) / 32)
    finally:
        STRATEGIES.remove("test-pilot")
