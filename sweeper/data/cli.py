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


def run_synth(args: argparse.Namespace) -> int:
    from sweeper.data.stays import check_writable, write_stays
    from sweeper.data.synthetic import SynthConfig, generate

    check_writable(args.out)
    config = SynthConfig(
        n_stays=args.n_stays,
        seed=args.seed,
        strengths={**SynthConfig().strengths, **_modality_floats(args.strength or "", "--strength")},
        presence={**SynthConfig().presence, **_modality_floats(args.presence or "", "--presence")},
        mnar=args.mnar,
    )
    start = time.perf_counter()
    frame, manifest = generate(config)
    write_stays(frame, manifest, args.out, split_seed=args.seed, where="synthetic cohort")
    print(f"wrote {len(frame)} synthetic stays to {args.out} in {time.perf_counter() - start:.1f} s")
    print(describe_text(args.out))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from sweeper.data.stays import check_writable, write_stays

    src = Path(args.src)
    if not src.exists():
        raise StaysError(f"--src {src}: does not exist; point it at the folder holding the source files")
    check_writable(args.out)
    start = time.perf_counter()
    if args.source == "physionet2012":
        from sweeper.data.physionet2012 import prepare

        frame, manifest = prepare(src, sets=args.sets)
    else:  # argparse restricts choices; kept for a clear message if that changes
        raise StaysError(f"source {args.source!r}: unknown")
    write_stays(frame, manifest, args.out, split_seed=args.seed, where=str(src))
    print(f"prepared {len(frame)} {args.source} stays into {args.out} in {time.perf_counter() - start:.1f} s")
    print(describe_text(args.out))
    return 0


def describe_text(stays_dir: str | Path) -> str:
    """A readable summary of a stays folder: counts, label and presence rates per split."""
    from sweeper.data.stays import read_stays

    _, manifest = read_stays(stays_dir)
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
    return 0


def add_commands(commands) -> None:
    data = commands.add_parser("data", help="prepare, generate and inspect stays folders")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    synth = sub.add_parser("synth", help="generate the synthetic MIMIC-shaped cohort (the embedded default)")
    synth.add_argument("--out", required=True, help="stays folder to write (new or empty)")
    synth.add_argument("--n-stays", type=int, default=2000, help="number of ICU stays (default 2000)")
    synth.add_argument("--seed", type=int, default=0, help="generator and split seed (default 0)")
    synth.add_argument("--strength", metavar="M=S,...", help="per-modality signal strength in [0, 1], e.g. discharge=0.9,cxr=0.2")
    synth.add_argument("--presence", metavar="M=P,...", help="per-modality presence rate in [0, 1], e.g. cxr=0.4")
    synth.add_argument("--mnar", type=float, default=0.0, help="missing-not-at-random: how much sicker stays are more often complete, in [0, 1] (default 0)")
    synth.set_defaults(handler=run_synth)

    prepare = sub.add_parser("prepare", help="turn a real source into a stays folder")
    prepare.add_argument("source", choices=["physionet2012"], help="source kind")
    prepare.add_argument("--src", required=True, help="folder with the source files as distributed")
    prepare.add_argument("--out", required=True, help="stays folder to write (new or empty)")
    prepare.add_argument("--sets", nargs="+", default=None, metavar="SET", help="PhysioNet 2012 sets to read, e.g. a b (default: every set found)")
    prepare.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    prepare.set_defaults(handler=run_prepare)

    describe = sub.add_parser("describe", help="counts, label rates and presence rates per split")
    describe.add_argument("stays", help="stays folder")
    describe.set_defaults(handler=run_describe)
