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


# ---------------------------------------------------------------- what `ray up` copies


def _rsync_args(config: dict) -> list[str]:
    """The filter arguments Ray's launcher builds for the file mounts (its own code, not a copy)."""
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    options = {"rsync_exclude": config.get("rsync_exclude"), "rsync_filter": config.get("rsync_filter")}
    return SSHCommandRunner._create_rsync_filter_args(None, options)


def _emulated_rsync(source: Path, args: list[str]) -> set[str]:
    """rsync's --exclude rules (man rsync, "INCLUDE/EXCLUDE PATTERN RULES") for the patterns used
    here: a leading "/" anchors to the transfer root, a pattern with another "/" matches the whole
    relative path, else the last component; "*" stops at "/" and "**" does not; an excluded folder's
    contents are never visited."""
    import re

    patterns = [args[i + 1] for i, a in enumerate(args) if a == "--exclude"]
    assert all(a in ("--exclude",) or a in patterns for a in args), args  # no --filter rules to emulate

    def regex(pattern: str) -> re.Pattern:
        body = re.escape(pattern.rstrip("/")).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace("\0", ".*")
        return re.compile(body.replace(r"\?", "[^/]") + r"\Z")

    def excluded(rel: str) -> bool:
        for pattern in patterns:
            if pattern.startswith("/"):
                if regex(pattern[1:]).match(rel):
                    return True
            elif "/" in pattern.rstrip("/"):
                if regex(pattern).match(rel) or regex("**/" + pattern).match(rel):
                    return True
            elif regex(pattern).match(rel.rsplit("/", 1)[-1]):
                return True
        return False

    copied: set[str] = set()

    def walk(folder: Path, prefix: str) -> None:
        for entry in sorted(folder.iterdir()):
            rel = prefix + entry.name
            if excluded(rel):
                continue
            if entry.is_dir() and not entry.is_symlink():
                copied.add(rel + "/")
                walk(entry, rel + "/")
            else:
                copied.add(rel)

    walk(source, "")
    return copied


def _copied(source: Path, args: list[str], tmp_path: Path) -> set[str]:
    """What `rsync -avz ARGS SOURCE/ HOST:~/sweeper/` (Ray's command) would copy: a real rsync dry
    run into a scratch folder where rsync exists, otherwise rsync's pattern rules emulated."""
    import shutil
    import subprocess

    if shutil.which("rsync") is None:
        return _emulated_rsync(source, args)
    out = subprocess.run(
        ["rsync", "-avz", "--dry-run", "--out-format=%n", *args, f"{source}/", f"{tmp_path / 'dest'}/"],
        capture_output=True, text=True, check=True,
    ).stdout
    return {line for line in out.splitlines() if line and line != "./"}


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("emulated", [False, True], ids=["rsync", "emulated"])
def test_the_launcher_copies_the_code_and_skips_stays_results_and_venv(name, emulated, tmp_path, monkeypatch):
    """`"data"` would also drop sweeper/data/ (the stays code): `sweeper run` on the cluster would
    then fail to import. Anchored patterns skip only the checkout's own data/, results/, .venv/."""
    import shutil

    if not emulated and shutil.which("rsync") is None:
        pytest.skip("no rsync here; the emulated case checks the same rules")
    source = tmp_path / "checkout"
    kept = ["sweeper/data/schema.py", "sweeper/data/stays.py", "sweeper/specs/smoke.yaml", "trainables/medfuse/__init__.py",
            "pyproject.toml", "tests/data/test_stays.py", "docs/results.md"]
    dropped = ["data/physionet2012/manifest.json", "results/all-combos/r1/leaderboard.csv", ".venv/bin/python",
               "sweeper/data/__pycache__/schema.cpython-311.pyc", "__pycache__/x.pyc"]
    _tree(source, kept + dropped)
    args = _rsync_args(_load(name))
    copied = (_emulated_rsync(source, args) if emulated else _copied(source, args, tmp_path))
    assert set(kept) <= copied, sorted(set(kept) - copied)
    assert not {f for f in copied if f.startswith(("data", "results", ".venv")) or "__pycache__" in f}, sorted(copied)
    # The old, unanchored pattern is the bug this guards against.
    assert "sweeper/data/schema.py" not in _emulated_rsync(source, ["--exclude", "data"])


@pytest.mark.parametrize("name", CONFIGS)
def test_every_tracked_code_file_of_this_checkout_is_copied(name, tmp_path):
    """The same rules over this very checkout: every tracked file of the package and the method families."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "sweeper", "trainables", "pyproject.toml"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0 or not tracked.stdout:
        pytest.skip("not a git checkout")
    wanted = {f for f in tracked.stdout.splitlines() if (ROOT / f).is_file()}
    copied = _copied(ROOT, _rsync_args(_load(name)), tmp_path)
    assert wanted <= copied, sorted(wanted - copied)[:10]


# ---------------------------------------------------------------- network exposure


def test_aws_nodes_use_an_explicit_group_that_admits_ssh_from_the_users_cidr_only():
    text = (ROOT / "cluster.yaml").read_text()
    config = _load("cluster.yaml")
    assert config["provider"]["use_internal_ips"] is True and config["provider"]["use_external_head_ip"] is True
    for node_type in config["available_node_types"].values():
        node = node_type["node_config"]
        # Ray's own group would open SSH to 0.0.0.0/0: every node type names the user's group instead.
        assert not {"SecurityGroupIds", "SubnetIds", "SubnetId"} & set(node)  # these conflict with NetworkInterfaces
        (interface,) = node["NetworkInterfaces"]
        assert interface["Groups"] == ["SG_ID"] and interface["SubnetId"]
    nodes = config["available_node_types"]
    assert nodes["head.cpu"]["node_config"]["NetworkInterfaces"][0]["AssociatePublicIpAddress"] is True
    assert nodes["worker.gpu"]["node_config"]["NetworkInterfaces"][0]["AssociatePublicIpAddress"] is False
    assert "--port 22 --cidr SSH_CIDR" in text and "--source-group SG_ID" in text


def test_gcp_nodes_run_on_their_own_network_and_workers_have_no_external_ip():
    text = (ROOT / "cluster-gcp.yaml").read_text()
    config = _load("cluster-gcp.yaml")
    assert config["provider"]["use_internal_ips"] is True and config["provider"]["use_external_head_ip"] is True
    nodes = config["available_node_types"]
    for node_type in nodes.values():
        node = node_type["node_config"]
        assert node["tags"] == {"items": ["sweeper"]}
        assert node["networkInterfaces"][0]["subnetwork"].endswith("/subnetworks/sweeper-subnet")
    assert nodes["head.cpu"]["node_config"]["networkInterfaces"][0]["accessConfigs"]
    assert "accessConfigs" not in nodes["worker.gpu"]["node_config"]["networkInterfaces"][0]
    assert "--allow=tcp:22 --source-ranges=SSH_CIDR --target-tags=sweeper" in text and "nats create" in text


@pytest.mark.parametrize("name", CONFIGS)
def test_the_config_says_which_ray_ports_stay_inside_the_cluster(name):
    text = (ROOT / name).read_text()
    for port in ("6379", "10001", "8076", "8265", "127.0.0.1"):
        assert port in text
    assert "never open any of them" in text
