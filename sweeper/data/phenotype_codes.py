"""The 25 benchmark phenotypes from ICD diagnosis codes (ICD-9-CM and ICD-10-CM).

The MIMIC-III benchmark (Harutyunyan et al. 2019) labels a stay with each of 25 HCUP CCS
single-level categories (:data:`~sweeper.data.schema.PHENOTYPES`) when any diagnosis code of its
hospital admission belongs to that category. Here each category is written as ICD-9-CM and
ICD-10-CM code **prefixes** (codes without the dot): a code counts for a phenotype when it starts
with one of its prefixes. The ICD-9 prefixes follow the CCS single-level definitions the benchmark
uses; the ICD-10 prefixes are the ICD-10-CM categories that hold the same conditions (written
for this project, not the CCSR tables or the GEM crosswalks). Being prefixes, they are a close
reading of the CCS lists rather than a copy of them: a few rare codes may fall differently, and
a code can count for two phenotypes where the prefixes overlap (e.g. postoperative shock, 998.0,
is both a complication of care and shock).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from sweeper.data.schema import PHENOTYPES

# phenotype -> (ICD-9-CM prefixes, ICD-10-CM prefixes)
DEFINITIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Acute and unspecified renal failure": (("584", "586", "6393", "6693"), ("N17", "N19", "O904")),
    "Acute cerebrovascular disease": (
        ("430", "431", "432", "43301", "43311", "43321", "43331", "43381", "43391", "434", "436", "4371", "4374", "4375", "4376", "3466", "99702"),
        ("I60", "I61", "I62", "I63", "I6781", "I6782", "I6789", "G46", "I97810", "I97811", "I97820", "I97821"),
    ),
    "Acute myocardial infarction": (("410",), ("I21", "I22")),
    "Cardiac dysrhythmias": (("4270", "4271", "4272", "4273", "4274", "4276", "4278", "4279", "7850"), ("I47", "I48", "I49", "R000", "R001")),
    "Chronic kidney disease": (("585", "7925", "V420", "V451", "V56"), ("N18", "Z992", "Z940", "Z49")),
    "Chronic obstructive pulmonary disease and bronchiectasis": (("490", "491", "492", "494", "496"), ("J40", "J41", "J42", "J43", "J44", "J47")),
    "Complications of surgical procedures or medical care": (
        ("996", "997", "998", "999", "E870", "E871", "E872", "E873", "E874", "E875", "E876", "E878", "E879"),
        ("T80", "T81", "T82", "T83", "T84", "T85", "T86", "T87", "T88", "Y83", "Y84"),
    ),
    "Conduction disorders": (("426",), ("I44", "I45")),
    "Congestive heart failure; nonhypertensive": (("428", "39891"), ("I50", "I0981")),
    "Coronary atherosclerosis and other heart disease": (("411", "413", "414", "V4581", "V4582"), ("I20", "I24", "I25", "Z951", "Z955")),
    "Diabetes mellitus with complications": (
        ("2501", "2502", "2503", "2504", "2505", "2506", "2507", "2508", "2509"),
        tuple(f"E{t}{c}" for t in ("10", "11", "13") for c in "012345678"),
    ),
    "Diabetes mellitus without complication": (("2500",), ("E109", "E119", "E139")),
    "Disorders of lipid metabolism": (("272",), ("E78",)),
    "Essential hypertension": (("401",), ("I10",)),
    "Fluid and electrolyte disorders": (("276",), ("E86", "E87")),
    "Gastrointestinal hemorrhage": (
        ("578", "5693", "4560", "53021", "5307", *(f"{u}{d}" for u in ("531", "532", "533", "534") for d in "0246")),
        ("K920", "K921", "K922", "K625", "I8501", "I8511", "K226", *(f"{u}{d}" for u in ("K25", "K26", "K27", "K28") for d in "0246")),
    ),
    "Hypertension with complications and secondary hypertension": (("402", "403", "404", "405", "4372"), ("I11", "I12", "I13", "I15", "I16", "I674")),
    "Other liver diseases": (("570", "5714", "5715", "5716", "5718", "5719", "572", "573"), ("K71", "K72", "K73", "K74", "K75", "K76")),
    "Other lower respiratory disease": (
        ("514", "515", "516", "517", "5183", "5186", "5189", "7860", "7861", "7862", "7863", "7864", "7866", "7867", "7868", "7869", "7931"),
        ("J82", "J84", "J983", "J984", "J988", "J989", "R05", "R06", "R091", "R093", "R91"),
    ),
    "Other upper respiratory disease": (("470", "471", "472", "473", "474", "475", "476", "477", "478"), tuple(f"J3{d}" for d in "0123456789")),
    "Pleurisy; pneumothorax; pulmonary collapse": (("511", "512", "5180", "5181"), ("J90", "J91", "J93", "J94", "J981")),
    "Pneumonia (except that caused by tuberculosis)": (
        ("480", "481", "482", "483", "484", "485", "486", "4870", "5171", "1363", "0521", "0551", "0730"),
        ("J12", "J13", "J14", "J15", "J16", "J17", "J18"),
    ),
    "Respiratory failure; insufficiency; arrest (adult)": (
        ("51881", "51882", "51883", "51884", "51851", "51852", "51853", "7991", "V461"),
        ("J96", "J80", "R092", "J9582", "Z9911"),
    ),
    "Septicemia (except in labor)": (
        ("038", "0202", "0031", "0362", "0545", "449", "7907", "99591", "99592"),
        ("A40", "A41", "A021", "A207", "A227", "A267", "A327", "A392", "A393", "A394", "A427", "B377", "R7881", "R6520"),
    ),
    "Shock": (("7855", "9980"), ("R57", "R6521", "T811")),
}
assert tuple(DEFINITIONS) == PHENOTYPES, "phenotype definitions must follow schema.PHENOTYPES"

# Codes that are ICD-9 though they start with a letter: external causes, E + three digits (E878.8,
# undotted E8788; ICD-10's E chapter has two: E87.8, E878), and supplementary V + two digits (V45.81).
_ICD9_LETTERED = re.compile(r"E\d{3}\.\d*|E\d{3}|E\d{4}|V\d{2}(\.\d*)?|V\d{3,4}")
_UNDOTTED_E3 = re.compile(r"E\d{3}")


def normalise(code: str) -> str:
    """A code as the definitions write it: upper case, no dot, no spaces."""
    return str(code).strip().upper().replace(".", "")


def guess_version(code: str) -> int:
    """9 or 10 for a code whose version the source does not say (eICU): a code starting with a digit,
    an ICD-9 external cause (E + three digits before the dot) or supplementary code (V + two digits)
    is ICD-9, anything else ICD-10. Undotted E + three digits (E119) is read as ICD-10."""
    text = str(code).strip().upper().replace(" ", "")
    if not text or text[0].isdigit():
        return 9
    if _ICD9_LETTERED.fullmatch(text) and not ("." not in text and _UNDOTTED_E3.fullmatch(text)):
        return 9
    return 10


def phenotype_labels(codes: pd.DataFrame) -> dict:
    """``codes`` (columns ``key``, ``code``, ``version`` 9 or 10) → key → 25 0/1 floats, in
    :data:`~sweeper.data.schema.PHENOTYPES` order. Keys with no code are absent from the result."""
    out: dict = {}
    if codes.empty:
        return out
    normal = codes["code"].map(normalise)
    version = codes["version"].astype(int).to_numpy()
    matrix = np.zeros((len(codes), len(PHENOTYPES)), dtype=np.float32)
    for j, (icd9, icd10) in enumerate(DEFINITIONS.values()):
        matrix[:, j] = np.where(version == 9, normal.str.startswith(icd9), normal.str.startswith(icd10))
    per_key = pd.DataFrame(matrix).groupby(codes["key"].to_numpy()).max()
    for key, row in zip(per_key.index, per_key.to_numpy(dtype=np.float32)):
        out[key] = row
    return out
