"""The Ray engine without Ray: how it sizes the model's actors to a cluster and its command line (that nothing
but a Ray build imports ray: tests/unit/test_imports.py)."""
from __future__ import annotations

import pytest

from search.cli import parse_args
from search.errors import ModelError
from search.pipeline.ray_engine import ActorPlan, RayOptions, plan_actors


def _node(node_id: str, cpus: int, gpus: float = 0, alive: bool = True) -> dict:
    resources = {"CPU": float(cpus), **({"GPU": gpus} if gpus else {})}
    return {"NodeID": node_id, "Alive": alive, "Resources": resources}


def test_one_actor_per_gpu_where_the_cluster_has_gpus():
    nodes = [_node("a", 16, gpus=2), _node("b", 8, gpus=1), _node("c", 64)]
    assert plan_actors(nodes, None, RayOptions()) == [ActorPlan("cuda", 1.0, 1, None, None)] * 3
    assert len(plan_actors(nodes, "cuda", RayOptions(gpus_per_actor=0.5))) == 6


def test_on_cpus_each_nodes_cores_go_to_actors_pinned_to_it():
    nodes = [_node("a", 2), _node("b", 40), _node("dead", 8, alive=False)]
    plans = plan_actors(nodes, None, RayOptions())
    assert plans == [ActorPlan("cpu", 0, 0, 2, "a")] + [ActorPlan("cpu", 0, 0, 13, "b")] * 3
    assert plan_actors([_node("a", 2)], None, RayOptions(threads_per_actor=1)) == [ActorPlan("cpu", 0, 0, 1, "a")] * 2
    # --device cpu keeps the model off the GPUs
    assert {p.device for p in plan_actors([_node("a", 4, gpus=1)], "cpu", RayOptions())} == {"cpu"}


def test_a_cluster_that_cannot_run_the_model_is_a_model_error():
    with pytest.raises(ModelError, match="no GPU"):
        plan_actors([_node("a", 8)], "cuda", RayOptions())
    with pytest.raises(ModelError, match="neither CPUs nor GPUs"):
        plan_actors([_node("a", 0)], None, RayOptions())


def test_the_command_line_takes_an_engine_and_refuses_it_with_shards(capsys):
    assert parse_args(["--dataset", "x", "--store", "s"]).engine == "local"
    assert parse_args(["--dataset", "x", "--store", "s", "--engine", "ray"]).engine == "ray"
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "x", "--store", "s", "--engine", "ray", "--shard", "0/2"])
    assert "--shard and --engine ray do not go together" in capsys.readouterr().err
