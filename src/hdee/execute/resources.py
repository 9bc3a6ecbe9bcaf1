"""Every job's resource request against what a cluster has, before the first submission.

A scheduler queues a request no node can meet for ever (Ray lists such a task as infeasible and
waits for a node that never joins), so hdee would print nothing until killed. Checked here
first, such a request stops the run in one line that names it and what the cluster has.
Nodes are those alive at submission; an autoscaling cluster that would add a bigger node later
is not foreseen.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from hdee.core.errors import ExecutionError

#: the resources hdee asks for, in the order a message names them
KINDS = ("CPU", "GPU")


def fits(request: Mapping[str, float], node: Mapping[str, float]) -> bool:
    """True when one node has at least every resource the request names (a tiny tolerance for
    Ray's fixed-point fractions)."""
    return all(node.get(k, 0.0) + 1e-9 >= v for k, v in request.items() if v > 0)


def _amount(value: float, kind: str) -> str:
    return f"{value:g} {kind}" + ("s" if value != 1 else "")


def describe(request: Mapping[str, float]) -> str:
    return " and ".join(_amount(request.get(k, 0.0), k) for k in KINDS)


def describe_cluster(nodes: Sequence[Mapping[str, float]]) -> str:
    """'2 nodes, 4 CPUs and 0 GPUs in all, at most 2 CPUs and 0 GPUs on one'."""
    if not nodes:
        return "no live node"
    total = {k: sum(n.get(k, 0.0) for n in nodes) for k in KINDS}
    most = {k: max(n.get(k, 0.0) for n in nodes) for k in KINDS}
    count = f"{len(nodes)} node" + ("s" if len(nodes) != 1 else "")
    if len(nodes) == 1:
        return f"{count} with {describe(total)}"
    return f"{count}, {describe(total)} in all, at most {describe(most)} on one"


def check_requests(requests: Mapping[str, Mapping[str, float]], nodes: Sequence[Mapping[str, float]], where: str) -> None:
    """ExecutionError naming the first job (by id) whose request no single node can meet.

    `requests`: job id -> {"CPU": n, "GPU": g}; `nodes`: each live node's total resources.
    """
    seen: set[tuple] = set()
    for job_id, request in requests.items():
        key = tuple(sorted(request.items()))
        if key in seen:
            continue
        seen.add(key)
        if not any(fits(request, node) for node in nodes):
            raise ExecutionError(
                f"job {job_id} asks for {describe(request)} (execute.threads_per_worker, execute.gpus_per_job), "
                f"more than any node of {where} has: {describe_cluster(nodes)}"
            )
