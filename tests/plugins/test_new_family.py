"""A new method family is one package plus one spec, and no engine file changes (docs/adding-a-method.md).

The family here lives in a temporary folder, outside the repository: a package declaring its own
loss, optimizer, input kind and checkpoint selection, found through the ``sweeper.trainables``
entry-point group of a ``.dist-info`` beside it. ``sweeper plan`` and a tiny ``sweeper run`` of its
spec run in a subprocess with that folder on ``PYTHONPATH`` (the local Ray workers inherit it).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

FAMILY = '''
"""A throw-away family: a linear model over the demographics vector alone (its own input kind),
trained with a squared-hinge loss and SGD with momentum, checkpoints selected by validation loss."""
import os

import numpy as np
import torch

from sweeper.data.inputs import InputKind, register_input_kind
from trainables.registry import Trainable, register


def _mark(what):
    with open(os.environ["THROWAWAY_MARKER"], "a") as handle:
        handle.write(what + "\\n")


def demographics_shapes(collate):
    return {"demo": (collate.manifest.demographics.width,)}


def demographics_only(collate, batch, present):
    rows = collate.rows(present, "demographics")
    return {"demo": collate.encode("demographics", batch, rows)}


register_input_kind(InputKind("throwaway.demo", shapes=demographics_shapes, build=demographics_only, modalities=("demographics",)))


class SquaredHinge(torch.nn.Module):
    def forward(self, logits, target):
        return torch.clamp(1 - (2 * target - 1) * logits, min=0).pow(2).mean()


def hinge_loss(task, train_labels):
    _mark("loss")
    return SquaredHinge()


def sgd(model, config):
    _mark("optimizer")
    return torch.optim.SGD(model.parameters(), lr=float(config["lr"]), momentum=0.9)


class Linear(torch.nn.Module):
    def __init__(self, config, input_shapes, n_outputs):
        super().__init__()
        self.linear = torch.nn.Linear(input_shapes["demo"][0], n_outputs)

    def forward(self, batch):
        return {"logits": self.linear(batch["demo"])}


register(Trainable(
    name="throwaway.linear", build_model=Linear, inputs="throwaway.demo", loss=hinge_loss, optimizer=sgd, select="loss",
    defaults={"lr": 0.05, "batch_size": 64},
))
'''

SPEC = """
name: throwaway
seed: 0
data:
  synthetic: {n_stays: 300, seed: 0}
tasks: [ihm]
modality_subsets:
  explicit: [[demographics], [demographics, timeseries]]
methods:
  throwaway.linear:
    search:
      lr: {loguniform: [0.01, 0.1]}
budgets: {tune_trials: 2, max_epochs: 2, grace_period: 1, reduction_factor: 2, patience: 2}
final: {seeds: 1, bootstrap_resamples: 1000}
resources: {cpus_per_trial: 1}
"""


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    (root / "sweeper_throwaway").mkdir()
    (root / "sweeper_throwaway" / "__init__.py").write_text(textwrap.dedent(FAMILY))
    dist = root / "sweeper_throwaway-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sweeper-throwaway\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sweeper.trainables]\nthrowaway = sweeper_throwaway\n")
    (root / "throwaway.yaml").write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "THROWAWAY_MARKER": str(root / "marker.txt")}
    return {"root": root, "spec": root / "throwaway.yaml", "env": env}


def _sweeper(family, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "sweeper.cli", *args], env=family["env"], capture_output=True, text=True, timeout=timeout)


def test_plan_finds_the_family_and_pairs_it_only_with_subsets_its_input_kind_reads(family):
    out = _sweeper(family, "plan", str(family["spec"]))
    assert out.returncode == 0, out.stderr
    assert "cells: 1 " in out.stdout and "by method: throwaway.linear: 1" in out.stdout
    assert "1 method × subset pairs left out" in out.stdout  # demographics+timeseries: not its input kind


@pytest.mark.ray
@pytest.mark.slow
def test_a_tiny_run_tunes_and_ranks_it_with_its_own_loss_and_optimizer(family):
    results = family["root"] / "results"
    out = _sweeper(family, "run", str(family["spec"]), "--results", str(results), "--run-name", "r", "--quiet")
    assert out.returncode == 0, out.stdout + out.stderr
    board = pd.read_csv(results / "throwaway" / "r" / "leaderboard.csv")
    assert list(board["method"]) == ["throwaway.linear"] and board["auroc_mean"].between(0, 1).all()
    marks = (family["root"] / "marker.txt").read_text().split()
    assert marks.count("loss") == marks.count("optimizer") == 3  # 2 tune trials + 1 final seed, each built its own
