"""cluster.yaml and cluster-gcp.yaml against Ray's own cluster-launcher schema, offline (what
`ray up` checks before it contacts the cloud), plus the house rules they must keep."""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["cluster.yaml", "cluster-gcp.yaml"]


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", CONFIGS)
def test_valid_against_rays_schema(name):
    validate_config(prepare_config(_load(name)))


def test_a_broken_config_is_refused():
    broken = copy.deepcopy(_load("cluster.yaml"))
    broken["available_node_types"]["worker.gpu"]["min_workerz"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_workerz"):
        validate_config(prepare_config(broken))


@pytest.mark.parametrize("name", CONFIGS)
def test_dashboard_stays_on_loopback_and_results_on_shared_storage(name):
    config = prepare_config(_load(name))
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in yaml.safe_dump(config)
    assert any("/mnt/sweeper" in c for c in config["initialization_commands"])  # every node mounts it


@pytest.mark.parametrize("name", CONFIGS)
def test_gpu_workers_autoscale_and_install_this_project_with_cuda_torch(name):
    config = _load(name)
    workers = config["available_node_types"]["worker.gpu"]
    assert workers["min_workers"] == 0 and workers["max_workers"] >= 1
    setup = " ".join(config["setup_commands"])
    assert "pip install -q torch==2.13.0" in setup and "pip install -q -e ~/sweeper" in setup
    assert "constraints-cpu" not in setup  # that file pins the CPU build
    assert config["file_mounts"] == {"~/sweeper": "."}
