"""Ray backend: every job is one `ray.remote` task; Ray places it on a node with the CPUs/GPUs asked.

`address=None` starts a private local cluster, listening on 127.0.0.1 only; `"auto"` or
`"host:port"` joins an existing one (see the README for running one with token authentication).
Joining, a driver whose token the cluster refuses stops at once, in words that say so. The run
directory must be on a filesystem every node sees under the same path: before the first job on
a joined cluster a probe on every node checks that, and that it runs the driver's hdee on the
same config (`hdee.execute.preflight`). Every job's request is checked against the live nodes
first (`hdee.execute.resources`). A task whose worker dies (a lost node) is retried by Ray
(`max_retries`); jobs are idempotent, so a retried training job resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from concurrent.futures import Future
from pathlib import Path

from hdee.core.errors import ExecutionError
from hdee.execute import devices, preflight, ray_reaper
from hdee.execute.base import Executor
from hdee.execute.ray_output import ray_output_aside
from hdee.execute.jobs import JobRunner, run_job
from hdee.execute.lifeline import exit_on_sigterm
from hdee.execute.resources import check_requests
from hdee.plan import Job

_threads_set = False
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
PREFLIGHT_SECONDS = 120  # a node's probe must answer within this (a worker starts on every node)


def _run_on_ray_worker(runner, spec_json: str, run_dir: str, threads: int, gpus: float = 0) -> dict:
    global _threads_set
    if not _threads_set:
        import torch
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(threads)
        hf_logging.disable_progress_bar()
        _threads_set = True
    devices.give(gpus)
    return runner(spec_json, run_dir, None)


def _probe_on_node(expect: dict, node: str) -> dict:
    return preflight.probe(expect, node)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_reachable(address: str, timeout: float = 5.0, shown: str | None = None) -> None:
    """Fail fast with one line when a host:port address does not answer (ray.init would wait)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ExecutionError(f"cannot reach the Ray cluster at {shown or address}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 to /dev/null for a moment (native code writes there, not to sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_auth(address: str | None) -> None:
    """One line naming authentication when the cluster refuses this driver's token (ray.init
    would retry for half a minute and then say only "Failed to connect")."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # another Ray: ray.init reports what it reports
        return
    if address and address.startswith("ray://"):  # Ray Client: its server, not the GCS, answers there
        return
    try:
        target = canonicalize_bootstrap_address(address or "auto")
    except Exception:  # noqa: BLE001 - no address to probe; ray.init says why
        return
    if target is None:
        return
    _check_reachable(target, shown=address)
    try:
        with _stderr_silenced():  # Ray's C++ client logs each refused try there
            GcsClient(address=target)
    except AuthenticationError as exc:
        raise ExecutionError(f"authentication with the Ray cluster at {address} failed: {_first_line(exc)}") from None
    except Exception:  # noqa: BLE001 - anything else is ray.init's to report
        return


@contextlib.contextmanager
def _private_node():
    """While a private cluster starts: Ray's own switch for a loopback-only node (the default on
    macOS and Windows), so every Ray process binds 127.0.0.1 instead of all interfaces; and the
    reaper's mark on every process it starts (`hdee.execute.ray_reaper`). Yields the reaper."""
    from ray._private import ray_constants

    token, reaper = ray_reaper.start()
    saved, old_flag = {k: os.environ.get(k) for k in (_LOOPBACK_ENV, ray_reaper.MARK)}, ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update({_LOOPBACK_ENV: "0", ray_reaper.MARK: token})  # read by the Ray processes this starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # read by this process (ray may be imported already)
    try:
        yield reaper
    except BaseException:
        ray_reaper.stop(reaper)
        raise
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RayExecutor(Executor):
    def __init__(
        self,
        run_dir: str | Path,
        address: str | None = None,
        workers: int | None = None,
        threads_per_worker: int = 1,
        gpus_per_job: float = 0,
        max_retries: int = 3,
        runner: JobRunner = run_job,
    ):
        super().__init__(run_dir)
        self.runner = runner
        import ray

        self._ray = ray
        self._owns_cluster = False
        self._reaper = None
        self._where = f"the Ray cluster at {address}" if address else "this machine's Ray cluster"
        self._checked = False
        if not ray.is_initialized():
            if address and address != "auto":
                _check_reachable(address)
            if address:
                _check_auth(address)
            kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                kwargs["address"] = address
            else:  # "local": a new private cluster, never one a `ray start` left on this machine
                kwargs.update(address="local", num_cpus=workers or os.cpu_count() or 1)
                self._owns_cluster = True
            try:
                with _private_node() if self._owns_cluster else contextlib.nullcontext() as reaper, ray_output_aside():
                    self._reaper = reaper
                    ray.init(**kwargs)
                # ray.init installs a C++ handler that answers SIGTERM with a stack dump and an abort;
                # hdee's own (unwind like Ctrl-C: one line, locks released, a private cluster stopped) goes back
                exit_on_sigterm()
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:  # e.g. no auth token
                where = address or "local"
                auth = isinstance(exc, getattr(ray.exceptions, "AuthenticationError", ())) or "authentication" in str(exc).lower()
                if auth:  # a refused token, or none found
                    raise ExecutionError(f"authentication with the Ray cluster at {where} failed: {_first_line(exc)}") from None
                raise ExecutionError(f"cannot reach the Ray cluster at {where}: {_first_line(exc)}") from None
        self._task = ray.remote(max_retries=max_retries)(_run_on_ray_worker)
        self._probe = ray.remote(max_retries=0, num_cpus=0)(_probe_on_node)
        self._threads = threads_per_worker
        self._gpus_per_job = gpus_per_job

    def _request(self, job: Job) -> dict[str, float]:
        return devices.job_request(job.kind, self._threads, self._gpus_per_job)

    def _admit(self, jobs: list[Job]) -> None:
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        check_requests({j.id: self._request(j) for j in jobs}, [n.get("Resources", {}) for n in nodes], self._where)
        if not self._checked and not self._owns_cluster:  # a private cluster is this machine
            self._preflight(nodes)
        self._checked = True

    def _preflight(self, nodes: list[dict]) -> None:
        """The probe on every live node (`hdee.execute.preflight`); the first problem stops the run."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        expect = preflight.Expectation.write(self.run_dir)
        try:
            refs = {}
            for n in nodes:
                name = f"{n.get('NodeManagerAddress')}/{str(n['NodeID'])[:8]}"
                where = NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                refs[name] = self._probe.options(scheduling_strategy=where).remote(dict(expect), name)
            reports = []
            for name, ref in refs.items():
                try:
                    reports.append(self._ray.get(ref, timeout=PREFLIGHT_SECONDS))
                except self._ray.exceptions.GetTimeoutError:
                    raise ExecutionError(f"node {name} did not answer hdee's preflight check within {PREFLIGHT_SECONDS} s") from None
                except self._ray.exceptions.RayError as exc:
                    raise ExecutionError(f"node {name} cannot run hdee: {_first_line(self._unwrap_error(exc))}") from None
                preflight.check_node(reports[-1], expect)
            preflight.check_written_back(reports, expect)
        finally:
            expect.clean()

    def _submit(self, job: Job) -> Future:
        task = self._task.options(**devices.ray_task_options(job.kind, self._threads, self._gpus_per_job))
        gpus = self._request(job)["GPU"]
        return task.remote(self.runner, job.model_dump_json(), str(self.run_dir), self._threads, gpus).future()

    def _unwrap_error(self, exc: BaseException) -> BaseException:
        cause = getattr(exc, "cause", None)  # RayTaskError carries the task's exception
        return cause if isinstance(cause, BaseException) else exc

    def close(self, wait: bool = True) -> None:
        if self._owns_cluster and self._ray.is_initialized():
            with ray_output_aside():
                self._ray.shutdown()
        ray_reaper.stop(self._reaper)
        self._reaper = None
