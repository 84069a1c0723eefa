"""The MIMIC-III benchmark's task folders (Harutyunyan et al. 2019; MedFuse, PiCME) → stays.

Input: the folder the benchmark's scripts write (``SRC``), holding any of the task folders
``in-hospital-mortality/``, ``phenotyping/`` and ``length-of-stay/``, each with ``train/`` and
``test/`` folders of ``listfile.csv`` plus one ``<subject>_episode<n>_timeseries.csv`` per ICU
stay, and, once the benchmark's train/val split script has run, ``train_listfile.csv``,
``val_listfile.csv`` and ``test_listfile.csv`` in the task folder.

Output: one stay per episode listed by any task (``stay_id`` ``mimic-benchmark-<subject>_episode<n>``,
``subject_id`` the subject), with the **benchmark's own split**: its test set is ``test``; its val
listfile, when there, is ``val``; without one, ``val`` is carved from the training patients
(15 %, patient-level, seeded by ``--seed``, recorded in the manifest). An episode listed in
different splits by two tasks is an error.

- **Labels**: ``label_ihm`` from the in-hospital-mortality listfile (``y_true``); the 25 phenotypes
  from the phenotyping listfile (its columns, named as :data:`~sweeper.data.schema.PHENOTYPES`);
  ``label_los_hours`` the phenotyping listfile's ``period_length`` (the whole ICU stay), or else the
  first length-of-stay row's ``period_length + y_true``. A label an episode's tasks do not give
  is null.
- **Time series**: the episode's timeseries CSV (``Hours`` since ICU admission and the benchmark's
  17 variables, already cleaned by the benchmark: °C, kg, cm, FiO2 as a fraction), mapped by name
  onto :mod:`sweeper.data.variables` (:data:`COLUMNS`); the first 48 h, binned as everywhere else.
  The Glasgow coma scale components written as text (``4 Spontaneously``, ``Obeys Commands``) are
  read as their scores (:data:`GCS_TEXT`). Capillary refill rate and the GCS total are not on the
  shared list: their values are counted in ``notes["values_not_on_the_variable_list"]``.
- The task folders carry no demographics, notes or images: stays have time series only.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.data.cohort import build_stays
from sweeper.data.schema import PHENOTYPES, SPLITS, Manifest, StaysError
from sweeper.data.splits import assign_splits
from sweeper.data.tables import READ_ERRORS, unreadable

SOURCE = "mimic-benchmark"
TASKS = ("in-hospital-mortality", "phenotyping", "length-of-stay")
COLUMNS = {
    "Diastolic blood pressure": "dbp", "Fraction inspired oxygen": "fio2", "Glascow coma scale eye opening": "gcs_eye",
    "Glascow coma scale motor response": "gcs_motor", "Glascow coma scale verbal response": "gcs_verbal", "Glucose": "glucose",
    "Heart Rate": "heart_rate", "Height": "height", "Mean blood pressure": "map", "Oxygen saturation": "spo2",
    "Respiratory rate": "resp_rate", "Systolic blood pressure": "sbp", "Temperature": "temperature", "Weight": "weight", "pH": "ph",
}
NOT_ON_THE_LIST = ("Capillary refill rate", "Glascow coma scale total")
GCS_TEXT = {
    "spontaneously": 4, "to speech": 3, "to pain": 2,
    "obeys commands": 6, "localizes pain": 5, "flex-withdraws": 4, "abnormal flexion": 3, "abnormal extension": 2,
    "oriented": 5, "confused": 4, "inappropriate words": 3, "incomprehensible sounds": 2,
    "no response": 1, "no response-ett": 1, "none": 1, "et/trach": 1,
}
_EPISODE = re.compile(r"(\d+)_episode(\d+)_timeseries\.csv")
VAL_SHARE = 0.15


def _read_listfile(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"stay": str})
    except READ_ERRORS as err:
        raise unreadable(path, err, "use the listfile the benchmark wrote") from None
    for column in columns:
        if column not in frame.columns:
            raise StaysError(f"{path}: missing column {column!r} (header has {', '.join(map(str, frame.columns))}); use the listfile the benchmark wrote")
    bad = frame["stay"][~frame["stay"].astype(str).str.fullmatch(_EPISODE.pattern)]
    if len(bad):
        raise StaysError(f"{path}: stay {bad.iloc[0]!r} is not <subject>_episode<n>_timeseries.csv; use the listfile the benchmark wrote")
    for column in columns[1:]:
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any():
            raise StaysError(f"{path}: column {column!r} holds {frame[column][values.isna()].iloc[0]!r}, which is not a number; use the listfile the benchmark wrote")
        frame[column] = values
    return frame


def _listfiles(task_dir: Path, columns: list[str]) -> list[tuple[str, str, pd.DataFrame]]:
    """(split, folder the episodes are in, listfile) of one task, as the benchmark laid it out."""
    if (task_dir / "train_listfile.csv").is_file():
        names = {"train": ("train_listfile.csv", "train"), "val": ("val_listfile.csv", "train"), "test": ("test_listfile.csv", "test")}
    else:
        names = {"train": ("train/listfile.csv", "train"), "test": ("test/listfile.csv", "test")}
    out = []
    for split, (name, folder) in names.items():
        if not (task_dir / name).is_file():
            raise StaysError(f"{task_dir / name}: missing; use the task folder as the benchmark wrote it (train/, test/ and their listfile.csv)")
        out.append((split, folder, _read_listfile(task_dir / name, columns)))
    return out


def read_timeseries(path: Path, counts: dict) -> pd.DataFrame:
    """One episode's CSV → long events (``feature``, ``value``, ``hours``)."""
    try:
        wide = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise StaysError(f"{path}: missing, but listed by its task's listfile; use the task folder as the benchmark wrote it") from None
    except READ_ERRORS as err:
        raise unreadable(path, err, "use the file the benchmark wrote") from None
    if "Hours" not in wide.columns:
        raise StaysError(f"{path}: missing column 'Hours'; use the file the benchmark wrote")
    hours = pd.to_numeric(wide["Hours"], errors="coerce")
    if hours.isna().any():
        raise StaysError(f"{path}: column 'Hours' holds {wide['Hours'][hours.isna()].iloc[0]!r}, which is not a number; use the file the benchmark wrote")
    counts["values_not_on_the_variable_list"] += int(sum(wide[c].notna().sum() for c in NOT_ON_THE_LIST if c in wide.columns))
    parts = []
    for column, feature in COLUMNS.items():
        if column not in wide.columns:
            continue
        text = wide[column]
        values = pd.to_numeric(text, errors="coerce")
        if feature.startswith("gcs_"):
            lead = pd.to_numeric(text.str.extract(r"^\s*(\d+(?:\.\d+)?)\s", expand=False), errors="coerce")
            words = text.str.replace(r"^\s*\d+(?:\.\d+)?\s+", "", regex=True).str.strip().str.lower().map(GCS_TEXT)
            values = values.fillna(lead).fillna(words)
        keep = text.notna().to_numpy()
        parts.append(pd.DataFrame({"feature": feature, "value": values[keep], "hours": hours[keep]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["feature", "value", "hours"])


def prepare(src: str | Path, seed: int = 0) -> tuple[pd.DataFrame, Manifest]:
    """Read the benchmark's task folders in ``src`` into a stays frame (split given) and its manifest."""
    src = Path(src)
    if not src.is_dir():
        raise StaysError(f"--src {src}: {'is not a folder' if src.exists() else 'does not exist'}; point it at the benchmark's data folder holding in-hospital-mortality/, phenotyping/, length-of-stay/")
    tasks = [t for t in TASKS if (src / t).is_dir()]
    if not tasks:
        raise StaysError(f"--src {src}: none of {', '.join(t + '/' for t in TASKS)} found; point it at the benchmark's data folder")
    split_of: dict[str, tuple[str, str]] = {}
    where: dict[str, Path] = {}
    ihm, los, phenotypes = {}, {}, {}
    columns = {"in-hospital-mortality": ["stay", "y_true"], "phenotyping": ["stay", "period_length", *PHENOTYPES], "length-of-stay": ["stay", "period_length", "y_true"]}
    for task in tasks:
        for split, folder, listfile in _listfiles(src / task, columns[task]):
            for stay in listfile["stay"].unique():
                if stay in split_of and split_of[stay][0] != split:
                    raise StaysError(f"{src / task}: {stay} is in {split} here but in {split_of[stay][0]} in {split_of[stay][1]}; use listfiles from one run of the benchmark")
                split_of.setdefault(stay, (split, task))
                where.setdefault(stay, src / task / folder / stay)
            if task == "in-hospital-mortality":
                ihm.update(zip(listfile["stay"], listfile["y_true"].astype("float32")))
            elif task == "phenotyping":
                los.update(zip(listfile["stay"], listfile["period_length"]))
                phenotypes.update(zip(listfile["stay"], listfile[list(PHENOTYPES)].to_numpy(dtype=np.float32)))
            else:
                first = listfile.drop_duplicates("stay")
                for stay, total in zip(first["stay"], first["period_length"] + first["y_true"]):
                    los.setdefault(stay, total)
    counts = {"values_not_on_the_variable_list": 0}
    events, rows = [], []
    for stay in sorted(split_of):
        key = stay.removesuffix("_timeseries.csv")
        events.append(read_timeseries(where[stay], counts).assign(key=key))
        rows.append({"key": key, "subject_id": key.split("_")[0], "hadm_id": stay, "ihm": ihm.get(stay, np.nan),
                     "los_hours": los.get(stay, np.nan), "split": split_of[stay][0]})
    cohort = pd.DataFrame(rows)
    events = pd.concat(events, ignore_index=True).assign(convert=None)
    codes = None  # phenotype labels come from the listfile, not from codes
    notes = {"tasks": tasks, "episodes": len(cohort), **counts}
    frame, manifest = build_stays(SOURCE, cohort, {}, events, codes, [], [], notes)
    frame["label_phenotypes"] = [phenotypes.get(stay) for stay in cohort["hadm_id"]]
    frame["split"] = cohort["split"].to_numpy()
    manifest.modalities = ["timeseries"]
    manifest.notes["phenotypes_known"] = len(phenotypes)
    if not (frame["split"] == "val").any():
        train = (frame["split"] == "train").to_numpy()
        carved = assign_splits(frame[train], seed, (1 - VAL_SHARE, VAL_SHARE, 0.0))
        frame.loc[train, "split"] = carved.to_numpy()
        manifest.split = {"method": "the benchmark's train/test split; val carved from its training patients", "val_share": VAL_SHARE, "seed": seed}
    else:
        manifest.split = {"method": "the benchmark's train/val/test listfiles"}
    for split in SPLITS:
        if not (frame["split"] == split).any():
            raise StaysError(f"--src {src}: the benchmark's listfiles give no {split} episode; use the complete task folders")
    return frame, manifest
