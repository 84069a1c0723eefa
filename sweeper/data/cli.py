"""``sweeper data synth | prepare | describe``."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from sweeper.data.schema import MODALITIES, StaysError


def _modality_floats(text: str, option: str) -> dict[str, float]:
    """Parse ``discharge=0.9,cxr=0.3`` into a dict, naming the bad part."""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise StaysError(f"{option}: expected MODALITY=NUMBER, got {part!r}")
        if name not in MODALITIES:
            raise StaysError(f"{option}: unknown modality {name!r}; known: {', '.join(MODALITIES)}")
        try:
            values[name] = float(value)
        except ValueError:
            raise StaysError(f"{option}: {name}={value!r} is not a number") from None
    return values


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise StaysError(f"--seed: {seed} must be a non-negative integer")


def run_synth(args: argparse.Namespace) -> int:
    from sweeper.data.folders import check_writable
    from sweeper.data.stays import write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    check_writable(args.out, args.overwrite)
    config = SynthConfig(
        n_stays=args.n_stays,
        seed=args.seed,
        strengths={**SynthConfig().strengths, **_modality_floats(args.strength or "", "--strength")},
        presence={**SynthConfig().presence, **_modality_floats(args.presence or "", "--presence")},
        mnar=args.mnar,
    )
    start = time.perf_counter()
    frame, manifest = generate(config)
    write_stays(frame, manifest, args.out, split_seed=args.seed, where="synthetic cohort", overwrite=args.overwrite)
    print(f"wrote {len(frame)} synthetic stays to {args.out} in {time.perf_counter() - start:.1f} s")
    print(describe_text(args.out))
    return 0


# source name -> the module whose ``prepare(src, ...)`` reads it (docs/data-sources.md).
PREPARERS = {"mimic-iv": "sweeper.data.mimic_iv", "mimic-iii": "sweeper.data.mimic_iii", "eicu": "sweeper.data.eicu", "meds": "sweeper.data.meds",
             "mimic-benchmark": "sweeper.data.mimic_benchmark"}


def run_prepare(args: argparse.Namespace) -> int:
    from sweeper.data.folders import check_path_text, check_writable
    from sweeper.data.stays import write_stays

    src = check_path_text(args.src, "--src")
    if not src.exists():
        raise StaysError(f"--src {src}: does not exist; point it at the folder holding the source files")
    _check_seed(args.seed)
    if args.split_file is not None and args.test_sets:
        raise StaysError("--split-file and --test-sets: give one of them")
    if args.test_sets and args.source != "physionet2012":
        raise StaysError(f"--test-sets: only for physionet2012 (its sets); for {args.source} give --split-file")
    check_writable(args.out, args.overwrite)
    start = time.perf_counter()
    if args.source == "physionet2012":
        from sweeper.data.physionet2012 import prepare

        frame, manifest = prepare(src, sets=args.sets)
    elif args.source in PREPARERS:
        import importlib

        module = importlib.import_module(PREPARERS[args.source])
        options = {"note": args.note, "cxr": args.cxr, "cxr_size": args.cxr_size} if args.source == "mimic-iv" else {}
        options = {"seed": args.seed} if args.source == "mimic-benchmark" else options
        options = {"codes": args.codes} if args.source == "meds" else options
        frame, manifest = module.prepare(src, **options)
    else:  # argparse restricts choices; kept for a clear message if that changes
        raise StaysError(f"source {args.source!r}: unknown")
    if args.split_file is not None or args.test_sets:
        from sweeper.data import given_splits

        if args.split_file is not None:
            frame = given_splits.from_file(frame, manifest, check_path_text(args.split_file, "--split-file"))
        else:
            frame = given_splits.by_test_sets(frame, manifest, args.test_sets, args.seed)
    write_stays(frame, manifest, args.out, split_seed=args.seed, where=str(src), overwrite=args.overwrite)
    print(f"prepared {len(frame)} {args.source} stays into {args.out} in {time.perf_counter() - start:.1f} s")
    print(describe_text(args.out))
    return 0


def describe_text(stays_dir: str | Path) -> str:
    """A readable summary of a stays folder: counts, label and presence rates per split."""
    from sweeper.data.folders import check_path_text
    from sweeper.data.stays import read_stays

    _, manifest = read_stays(check_path_text(stays_dir, "stays folder"))
    splits = list(manifest.counts)
    width = max(len(m) for m in MODALITIES) + 2
    lines = [f"stays folder {stays_dir}  (source: {manifest.source}, schema v{manifest.schema_version}, hash {manifest.content_hash[:12]})"]
    lines.append(f"{'':{width}}" + "".join(f"{s:>10}" for s in splits))
    lines.append(f"{'stays':{width}}" + "".join(f"{manifest.counts[s]:>10}" for s in splits))

    def pct(value):
        return f"{'-':>10}" if value is None else f"{100 * value:>9.1f}%"

    lines.append(f"{'mortality':{width}}" + "".join(pct(manifest.label_rates[s]["ihm"]) for s in splits))
    if any("phenotypes_mean" in manifest.label_rates[s] for s in splits):
        lines.append(f"{'phenotype':{width}}" + "".join(pct(manifest.label_rates[s].get("phenotypes_mean")) for s in splits))
    los = [manifest.label_rates[s].get("los_hours_median") for s in splits]
    lines.append(f"{'LOS median h':{width}}" + "".join(f"{'-':>10}" if v is None else f"{v:>10.0f}" for v in los))
    lines.append("presence")
    for modality in MODALITIES:
        lines.append(f"  {modality:{width - 2}}" + "".join(pct(manifest.presence_rates[s][modality]) for s in splits))
    if manifest.excluded:
        lines.append("excluded: " + ", ".join(f"{reason}: {n}" for reason, n in manifest.excluded.items()))
    if manifest.notes:
        lines.append("notes: " + ", ".join(f"{key}: {value}" for key, value in manifest.notes.items()))
    if manifest.split:
        lines.append("split: " + ", ".join(f"{key}={value}" for key, value in manifest.split.items()))
    return "\n".join(lines)


def run_describe(args: argparse.Namespace) -> int:
    print(describe_text(args.stays))
    if args.against is not None:
        from sweeper.data.external import compare, compare_text, observed_features
        from sweeper.data.folders import check_path_text
        from sweeper.data.schema import read_manifest
        from sweeper.data.stays import read_stays

        train = read_manifest(check_path_text(args.against, "--against"))
        stays = check_path_text(args.stays, "stays folder")
        columns = ["stay_id", "split"] + (["ts_event_feature"] if "timeseries" in read_manifest(stays).modalities else [])
        table, external = read_stays(stays, columns=columns)
        print(compare_text(compare(train, external, observed_features(table, external))))
    return 0


def add_commands(commands) -> None:
    data = commands.add_parser("data", help="prepare, generate and inspect stays folders")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    synth = sub.add_parser("synth", help="generate the synthetic MIMIC-shaped cohort (the embedded default)")
    synth.add_argument("--out", required=True, help="stays folder to write (new or empty)")
    synth.add_argument("--overwrite", action="store_true", help="replace --out when it already holds a stays folder (never a folder with other files)")
    synth.add_argument("--n-stays", type=int, default=2000, help="number of ICU stays, 30 to 1000000 (default 2000)")
    synth.add_argument("--seed", type=int, default=0, help="generator and split seed (default 0)")
    synth.add_argument("--strength", metavar="M=S,...", help="per-modality signal strength in [0, 1], e.g. discharge=0.9,cxr=0.2")
    synth.add_argument("--presence", metavar="M=P,...", help="per-modality presence rate in [0, 1], e.g. cxr=0.4")
    synth.add_argument("--mnar", type=float, default=0.0, help="missing-not-at-random: how much sicker stays are more often complete, in [0, 1] (default 0)")
    synth.set_defaults(handler=run_synth)

    prepare = sub.add_parser("prepare", help="turn a real source into a stays folder")
    prepare.add_argument("source", choices=["physionet2012", *PREPARERS], help="source kind")
    prepare.add_argument("--src", required=True, help="folder with the source files as distributed")
    prepare.add_argument("--out", required=True, help="stays folder to write (new or empty)")
    prepare.add_argument("--overwrite", action="store_true", help="replace --out when it already holds a stays folder (never a folder with other files)")
    prepare.add_argument("--sets", nargs="+", default=None, metavar="SET", help="PhysioNet 2012 sets to read, e.g. a b (default: every set found)")
    prepare.add_argument("--note", default=None, metavar="DIR", help="mimic-iv: the MIMIC-IV-Note note/ folder (default: SRC/note when it exists)")
    prepare.add_argument("--cxr", default=None, metavar="DIR", help="mimic-iv: the MIMIC-CXR-JPG folder (default: SRC/cxr when it exists)")
    prepare.add_argument("--cxr-size", type=int, default=64, help="mimic-iv: side of the stored square X-ray images, 16 to 512 pixels (default 64)")
    prepare.add_argument("--codes", default=None, metavar="YAML", help="meds: which codes make stays, labels and features (default: the shipped meds_codes.yaml)")
    prepare.add_argument("--seed", type=int, default=0, help="split seed, a non-negative integer (default 0)")
    prepare.add_argument("--split-file", default=None, metavar="CSV", help="your own split: a CSV with split (train/val/test) and stay_id or subject_id columns")
    prepare.add_argument("--test-sets", nargs="+", default=None, metavar="SET", help="physionet2012: these sets are the test split, the others train and val, e.g. --test-sets c")
    prepare.set_defaults(handler=run_prepare)

    describe = sub.add_parser("describe", help="counts, label rates and presence rates per split")
    describe.add_argument("stays", help="stays folder")
    describe.add_argument("--against", default=None, metavar="TRAIN", help="a training cohort's stays folder: also say what this cohort lacks of what a model trained there reads")
    describe.set_defaults(handler=run_describe)
