"""What trials read besides the stays: frozen-encoder embeddings and stage artifacts.

Before the tune phase the driver
1. encodes every note once per frozen text encoder (``sweeper.encode.embeddings``; a later sweep
   over the same data reads the cache and encodes nothing), and every modality once per frozen
   expert a method config names (``experts``, ``teachers``: ``sweeper.encode.experts``), and
2. runs each stage a trainable ``needs`` (e.g. ``picme.pretrain``) once per (stage, modality subset,
   stage config, data hash), however many cells, tasks, trials and seeds depend on it: the
   ``pretrain`` phase, one Tune trial per artifact. Artifacts land in ``<run>/artifacts/<stage>/``
   with an ``index.json`` saying which cells read each one.
Then it runs the same frozen text encoders over each external cohort's notes (``data.external``,
:func:`external_features`), which only final trials read.
Embeddings go into the object store once; each trial gets references to its cell's.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from sweeper.data.loading import TEXT_MODALITIES
from sweeper.plan.plan import stage_jobs
from sweeper.plan.spec import Cell, Spec

BAG = "bag"


def text_encoder_of(config: dict) -> str:
    return str(config.get("text_encoder") or BAG)


def check_text_encoders(spec: Spec, spec_file: Path) -> None:
    """Every text model a method reads resolves to a local folder (downloading a hub id if it can),
    and every expert it names exists, or the run stops here, before its folder exists, naming the spec key."""
    from sweeper.errors import SweeperError
    from trainables import registry
    from sweeper.encode.text import resolve_text_model

    for method, options in spec.methods.items():
        encoder = options.fixed.get("text_encoder", registry.get(method).defaults.get("text_encoder"))
        if encoder and encoder != BAG and any(set(subset) & set(TEXT_MODALITIES) for subset in spec.modality_subsets.expand()):
            try:
                resolve_text_model(str(encoder))
            except SweeperError as err:
                raise SweeperError(f"{spec_file}: methods.{method}.fixed.text_encoder: {err}") from None
        config = {**registry.get(method).defaults, **options.fixed}
        if "cxr_encoder" in config:  # the SLM features' CXR expert
            from sweeper.encode.cxr_series import cxr_encoders

            if str(config["cxr_encoder"]) not in cxr_encoders():
                raise SweeperError(f"{spec_file}: methods.{method}.fixed.cxr_encoder: {config['cxr_encoder']!r} is not one of {', '.join(cxr_encoders())}")
        if "experts" in config:  # every expert and teacher named exists for its modality, with known options
            from sweeper.encode.experts import cell_experts

            try:
                for subset in spec.modality_subsets.expand():
                    cell_experts(config, subset)
            except SweeperError as err:
                raise SweeperError(f"{spec_file}: methods.{method}.fixed: {err}") from None


def text_features(cells: list[Cell], base_configs: dict, stays: Path, cache_root: Path, progress, run_dir: Path,
                  cohort: str | None = None) -> dict[str, dict]:
    """cell id → {text modality: ObjectRef of (ids, matrix)} for cells whose text encoder is frozen,
    and {``expert:<modality>:<name>``: ObjectRef} for cells that read experts (one ``ray.put`` per expert),
    and {``cxr_series:<expert>``: ObjectRef} for cells whose ``cxr_encoder`` names a CXR expert (the
    SLM features: every image of a stay, ``sweeper.encode.cxr_series``); ``text_chunks`` reads notes whole.
    ``<run>/embeddings.json`` records, per encoder and modality, the stays and the forward passes
    this run spent (0 when the cache had them).

    ``cohort``: ``stays`` is that external cohort (``ext_<name>``), not the run's own stays: the same
    frozen encoders run over its stays through the same cache (keyed by its own content hash), its
    records are added to ``embeddings.json`` with ``cohort`` set, and the experts of a cell that reads
    them (some fitted on the training split) are skipped, so such a cell gets none of its features."""
    import types

    import ray

    from sweeper.encode.cxr_series import PIXELS, cxr_series_embeddings
    from sweeper.encode.cxr_series import feature_key as cxr_feature_key
    from sweeper.encode.embeddings import last_forward_passes, text_embeddings

    refs: dict[tuple, object] = {}
    record: list[dict] = []
    out: dict[str, dict] = {}
    if cohort is not None:  # its progress lines say whose stays they are
        progress = types.SimpleNamespace(say=lambda line, say=progress.say: say(line.replace("[embed]", f"[embed {cohort}]", 1)))
    for cell in cells:
        config = base_configs[cell.cell_id]
        if "experts" in config and cohort is not None:
            continue
        if "experts" in config:  # several frozen experts per modality (MedMIX): the same cache, one entry per expert
            from sweeper.encode.experts import cell_experts, expert_embeddings

            for key, modality, name, options in cell_experts(config, cell.modalities):
                ref = ("expert", name, modality, json.dumps(options, sort_keys=True))
                if ref not in refs:
                    ids, matrix = expert_embeddings(stays, modality, name, options, cache_root)
                    passes = last_forward_passes()
                    progress.say(f"[embed] {modality}, expert {name}: {len(ids)} stays, " + (f"{passes} forward passes" if passes else "read from the cache"))
                    record.append({"encoder": name, "modality": modality, "options": options, "stays": len(ids), "forward_passes": passes})
                    refs[ref] = ray.put((ids, matrix))
                out.setdefault(cell.cell_id, {})[key] = refs[ref]
            continue
        cxr = str(config.get("cxr_encoder") or PIXELS)
        if cxr != PIXELS and "cxr" in cell.modalities:  # every image of a stay through a CXR expert (the SLM features)
            options = dict((config.get("expert_options") or {}).get(cxr) or {})
            ref = ("cxr_series", cxr, json.dumps(options, sort_keys=True))
            if ref not in refs:
                ids, matrix = cxr_series_embeddings(stays, cxr, options, cache_root)
                passes = last_forward_passes()
                progress.say(f"[embed] cxr series, expert {cxr}: {len(ids)} stays, " + (f"{passes} forward passes" if passes else "read from the cache"))
                record.append({"encoder": cxr, "modality": "cxr", "series": True, "options": options, "stays": len(ids), "forward_passes": passes})
                refs[ref] = ray.put((ids, matrix))
            out.setdefault(cell.cell_id, {})[cxr_feature_key(cxr)] = refs[ref]
        encoder = text_encoder_of(config)
        if encoder == BAG or config.get("text_lora_r"):
            continue
        for modality in (m for m in cell.modalities if m in TEXT_MODALITIES):
            key = (encoder, int(config.get("text_max_length", 128)), bool(config.get("text_chunks")), modality)
            if key not in refs:
                ids, matrix = text_embeddings(stays, modality, encoder=encoder, max_length=key[1], cache_root=cache_root, chunks=key[2])
                passes = last_forward_passes()
                progress.say(f"[embed] {modality} notes, {encoder}: {len(ids)} stays, " + (f"{passes} forward passes" if passes else "read from the cache"))
                record.append({"encoder": encoder, "max_length": key[1], "chunks": key[2], "modality": modality, "stays": len(ids), "forward_passes": passes})
                refs[key] = ray.put((ids, matrix))
            out.setdefault(cell.cell_id, {})[modality] = refs[key]
    if record and cohort is not None:  # beside the run's own records, replacing this cohort's older ones
        path = run_dir / "embeddings.json"
        kept = [r for r in (json.loads(path.read_text()) if path.is_file() else []) if r.get("cohort") != cohort]
        record = kept + [{**r, "cohort": cohort} for r in record]
    if record:
        (run_dir / "embeddings.json").write_text(json.dumps(record, indent=2))
    return out


def external_features(cells: list[Cell], context, own: dict, external: dict, cache_root: Path, progress, run_dir: Path) -> dict[str, dict]:
    """cell id → {``ext_<name>``: {key: ObjectRef of (ids, matrix)}}: each external cohort's stays
    through the frozen encoders :func:`text_features` ran for the run's own stays (``own``), once per
    cohort and encoder config. A key is kept only while the cell still reads ``own``'s matrix under
    it (after ``run_stages``: a frozen pre-training stage's embeddings replace it, and the cohort
    has none of those), so a final trial swaps like for like or does not score the cohort."""
    from sweeper.loop.extra_sets import EXTERNAL_PREFIX

    out: dict[str, dict] = {}
    wanted = [cell for cell in cells if own.get(cell.cell_id)]
    for name, folder in external.items():
        found = text_features(wanted, context.base_configs, Path(folder), cache_root, progress, run_dir, cohort=EXTERNAL_PREFIX + name)
        for cell_id, refs in found.items():
            reads = context.features.get(cell_id, {})
            kept = {key: ref for key, ref in refs.items() if key in reads and reads[key] is own[cell_id].get(key)}
            if kept:
                out.setdefault(cell_id, {})[EXTERNAL_PREFIX + name] = kept
    return out


def run_stages(spec: Spec, cells: list[Cell], context, run_dir: Path, slots: int, resume: bool, progress):
    """Run the missing stage artifacts; returns the context with each dependent cell's inputs added."""
    import ray
    from ray import tune

    from sweeper.errors import SweeperError
    from sweeper.engine.collect import copy_checkpoint
    from sweeper.engine.phases import checkpoint_period, run_phase
    from sweeper.engine.trial import checkpoint_path, grid_of, reuse_actors, trainable, trial_run
    from trainables import registry

    data_hash = context.data_hash
    jobs = stage_jobs(spec, cells, data_hash)
    if not jobs:
        return context
    root = run_dir / "artifacts"
    todo = {key: job for key, job in jobs.items() if not (root / job["stage"] / key / "done").exists()}
    if todo:
        progress.start_phase("pretrain", total_trials=len(todo), cells={job["cell"]: 1 for job in todo.values()})
        runs = [{"cell": job["cell"], "stage": job["stage"], "seed": spec.seed, "params": {}, "key": key} for key, job in sorted(todo.items())]
        results = run_phase("pretrain", run_dir, trainable(context), tune.TuneConfig(num_samples=1, max_concurrent_trials=slots, reuse_actors=reuse_actors(context)), grid_of(runs), [progress], resume, checkpoint_period(context))
        for result in results:
            run = trial_run(result.config or {})
            metrics = result.metrics or {}
            artifact = checkpoint_path(result)
            if not metrics.get("done") or artifact is None:
                raise SweeperError(f"stage {run.get('stage')} on {run.get('key')}: no artifact; see the errors under {run_dir / 'pretrain'}, then --resume")
            folder = root / run["stage"] / run["key"]
            if folder.exists():
                shutil.rmtree(folder)
            copy_checkpoint(artifact, folder)
            (folder / "done").write_text(result.path)
    index: dict[str, dict] = {}
    features, configs = dict(context.features), {k: dict(v) for k, v in context.base_configs.items()}
    for key, job in sorted(jobs.items()):
        stage = registry.stage(job["stage"])
        artifact = stage.read(str(root / job["stage"] / key))
        refs = {m: ray.put(v) for m, v in artifact["features"].items()}
        for cell_id in job["dependents"]:
            cell = context.cells[cell_id]
            configs[cell_id].update(artifact["config"])
            if cell.trainable.frozen:
                features[cell_id] = {**features.get(cell_id, {}), **refs}
        index.setdefault(job["stage"], {})[key] = {k: job[k] for k in ("subset", "config", "dependents")}
    for stage_name, entries in index.items():
        (root / stage_name / "index.json").write_text(json.dumps(entries, indent=2, sort_keys=True))
    return dataclasses.replace(context, features=features, base_configs=configs)
