"""Notes (MIMIC-IV-Note) and chest X-rays (MIMIC-CXR-JPG) for :mod:`sweeper.data.mimic_iv`.

- **MIMIC-IV-Note** (``note/``): ``discharge.csv.gz`` and ``radiology.csv.gz``, each with
  ``note_id, subject_id, hadm_id, note_type, note_seq, charttime, storetime, text``. Either may be
  absent (that modality is then absent). Note text is never printed or logged.
- **MIMIC-CXR-JPG** (its root): ``mimic-cxr-2.0.0-metadata.csv.gz`` (``dicom_id, subject_id,
  study_id, ViewPosition, StudyDate, StudyTime``, ...) and the images
  ``files/p<NN>/p<subject_id>/s<study_id>/<dicom_id>.jpg`` (``NN``: the subject id's first two
  digits). The split (``mimic-cxr-2.0.0-split.csv.gz``) and label files (``-chexpert``, ``-negbio``)
  are not needed: stays get the engine's patient-level split and the stay's own labels. A stay's
  images are its frontal views (``ViewPosition`` AP or PA) taken in the first 48 h of the ICU stay
  (``StudyDate`` + ``StudyTime``, on the same shifted clock as MIMIC-IV), in time order, each
  converted to 8-bit grayscale, resized to a square of ``cxr_size`` pixels (aspect ratio not kept,
  as the image encoders expect squares) and stored as PNG. An image listed in the metadata whose
  file is not there (MIMIC-CXR-JPG is 570 GB; many download part of it) is counted in
  ``notes["cxr_image_files_missing"]``; a file that is there but not a readable JPEG is an error.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from sweeper.data import tables
from sweeper.data.schema import StaysError
from sweeper.data.variables import HOURS

METADATA = "mimic-cxr-2.0.0-metadata"
FRONTAL = ("AP", "PA")


def read_notes(folder: Path, wanted: dict[str, list[str]], absent: list[str]) -> dict[str, pd.DataFrame]:
    """The note tables of ``wanted`` (name → columns) found in ``folder``, ids and times parsed."""
    if not folder.is_dir():
        raise StaysError(f"--note {folder}: {'is not a folder' if folder.exists() else 'does not exist'}; point it at the MIMIC-IV-Note note/ folder")
    found = {}
    for name, columns in wanted.items():
        path = tables.find_table(folder, name)
        if path is None:
            absent.append(f"note/{name}")
            continue
        raw = tables.read_table(path, columns)
        frame = pd.DataFrame({"text": raw["text"].fillna(""), "charttime": tables.times(raw, "charttime", path)})
        for column in columns:
            if column.endswith("_id"):
                frame[column] = tables.ids(raw, column, path, required=column == "subject_id")
        found[name] = frame
    return found


def find_cxr_root(cxr: str | Path | None, src: Path) -> Path | None:
    if cxr is None:
        return src / "cxr" if (src / "cxr").is_dir() else None
    root = Path(cxr)
    if not root.is_dir():
        raise StaysError(f"--cxr {root}: {'is not a folder' if root.exists() else 'does not exist'}; point it at the MIMIC-CXR-JPG folder holding {METADATA}.csv.gz and files/")
    return root


def read_cxr(root: Path, cohort: pd.DataFrame, size: int, counts: dict) -> dict:
    """key → (PNG bytes per image, hours since ICU admission per image) for stays with images."""
    path = tables.require_table(root, METADATA, "the MIMIC-CXR-JPG image metadata")
    subjects = set(cohort["subject_id"].astype(str))
    raw = tables.read_table(path, ["dicom_id", "subject_id", "study_id", "viewposition", "studydate", "studytime"],
                            keep=lambda c: c["subject_id"].isin(subjects))
    meta = pd.DataFrame({
        "dicom_id": raw["dicom_id"],
        "subject_id": tables.ids(raw, "subject_id", path),
        "study_id": tables.ids(raw, "study_id", path),
        "view": raw["viewposition"],
    })
    stamp = raw["studydate"].fillna("") + " " + raw["studytime"].fillna("").str.split(".").str[0].str.zfill(6)
    meta["time"] = pd.to_datetime(stamp, format="%Y%m%d %H%M%S", errors="coerce")
    if meta["time"].isna().any():
        row = raw[meta["time"].isna()].iloc[0]
        raise StaysError(f"{path}: StudyDate {row['studydate']!r} / StudyTime {row['studytime']!r} is not YYYYMMDD / HHMMSS; use the file as distributed")
    merged = meta.merge(cohort[["subject_id", "key", "intime"]], on="subject_id")
    merged["hours"] = (merged["time"] - merged["intime"]).dt.total_seconds() / 3600.0
    in_window = (merged["hours"] >= 0) & (merged["hours"] <= HOURS)
    counts["cxr_not_frontal"] = int((in_window & ~merged["view"].isin(FRONTAL)).sum())
    merged = merged[in_window & merged["view"].isin(FRONTAL)].sort_values(["key", "hours", "dicom_id"], kind="stable")
    counts["cxr_image_files_missing"] = 0
    out: dict = {}
    for key, group in merged.groupby("key", sort=False):
        pngs, hours = [], []
        for image in group.itertuples(index=False):
            subject = str(image.subject_id)
            file = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{image.study_id}" / f"{image.dicom_id}.jpg"
            if not file.is_file():
                counts["cxr_image_files_missing"] += 1
                continue
            pngs.append(_png(file, size))
            hours.append(image.hours)
        if pngs:
            out[key] = (pngs, hours)
    return out


def _png(file: Path, size: int) -> bytes:
    try:
        with Image.open(file) as image:
            gray = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as err:
        raise StaysError(f"{file}: not a readable image ({str(err).splitlines()[0]}); download it again") from None
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(gray, dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
