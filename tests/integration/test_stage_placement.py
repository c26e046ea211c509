"""Which Dask tasks a stage run puts on the cluster: with ``dask.stage_resources`` set, every
task the scheduler receives while the orchestrator runs a stage asks for the stage's
resources; the pipeline's own small reads around the stage (is a calibrator in the beam?
what does the archive index need?) run in the pipeline's process and never reach the
cluster. (Tasks sent unplaced landed on the wrong worker in CI, nondeterministically.)

The scheduler and its two workers run in this process (``processes=False``) so that a
scheduler plugin can see each task's restrictions; the same placement on real ``dask
worker`` processes is tested in tests/e2e/test_cluster.py."""

from __future__ import annotations

from pathlib import Path

from contimg_dask.pipeline import Pipeline
from contimg_dask.stages.contract import BlockRef
from tests.helpers import make_config
from tests.integration.test_block_store import block_files

STAGES = ("ingest", "flag", "export")


def test_every_task_of_a_stage_run_asks_for_its_resources(small_blocks: Path,
                                                            tmp_path: Path) -> None:
    from distributed import Client, LocalCluster, Worker
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Restrictions(SchedulerPlugin):
        """Each task's resource restrictions as it starts on a worker."""

        name = "restrictions"

        def __init__(self, scheduler) -> None:
            self.scheduler = scheduler
            self.started: list[tuple[str, dict]] = []

        def transition(self, key, start, finish, *args, **kwargs) -> None:
            if finish == "processing":
                task = self.scheduler.tasks[key]
                self.started.append((str(key), dict(task.resource_restrictions or {})))

    recipe = [{"stage": stage} for stage in STAGES]
    files, _ = block_files(small_blocks)
    block_id = files[0].name[:19]
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        plugin = Restrictions(cluster.scheduler)
        cluster.scheduler.add_plugin(plugin)
        workers = [client.sync(Worker, cluster.scheduler_address, nthreads=2, name=name,
                               resources=resources)
                   for name, resources in (("w0", {}), ("w1", {"MEMORY": 1}))]
        client.wait_for_workers(2)
        config = make_config(tmp_path, **{
            "pipeline.recipes.target": recipe, "pipeline.recipes.calibrator": recipe,
            "dask.scheduler_address": cluster.scheduler_address,
            "dask.stage_resources": {stage: {"MEMORY": 1} for stage in STAGES}})
        store = config.paths.resolved().stores / f"{block_id}.zarr"
        started: dict[str, list[tuple[str, dict]]] = {}
        with Pipeline(config, client=client) as pipeline:
            pipeline.submit(BlockRef(block_id, store, tuple(files)))
            for stage in STAGES:
                pipeline.advance()
                lease = pipeline.state.claim(pipeline.worker, 60.0, [stage])
                assert lease is not None and lease.stage == stage
                plugin.started.clear()
                assert pipeline.run_lease(lease) == "done"
                started[stage] = list(plugin.started)
            assert pipeline.outcome(block_id).outcome == "done"
        for worker in workers:
            client.sync(worker.close)
    for stage, tasks in started.items():
        assert tasks, stage  # the stage did run Dask tasks on the cluster
        unplaced = [key for key, wanted in tasks if wanted != {"MEMORY": 1}]
        assert unplaced == [], (stage, unplaced)

