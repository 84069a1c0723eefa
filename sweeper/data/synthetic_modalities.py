"""Content generators of the synthetic cohort (:mod:`sweeper.data.synthetic`), one per modality.

Each turns a modality's noisy severity reading and condition mentions into what a real source
would hold: discharge and radiology notes, chest-X-ray-like PNG images, 48 h of charted time
series (the 17 MIMIC-III benchmark variables, :data:`TS_SPEC`) and demographics. Also holds the
tables they share with the latent model: :data:`TS_SPEC` and the phenotype table :data:`PHENO_SPEC`.
"""
from __future__ import annotations

import io
import random

import numpy as np
import pandas as pd
from PIL import Image
from scipy.special import expit
from scipy.stats import norm

from sweeper.data.schema import demo_column

HOURS = 48

# The 17 MIMIC-III benchmark variables (Harutyunyan et al. 2019), in the benchmark's order.
# Columns: unit, normal value, sensitivity to the severity reading, between-stay sd, measurement sd,
# physiological range, chance of a charted value per hour, rounding step.
TS_SPEC = {
    "Capillary refill rate": ("0 normal / 1 abnormal", 0, 0, 0, 0, (0, 1), 0.02, 1),
    "Diastolic blood pressure": ("mmHg", 62, -5, 9, 6, (20, 140), 0.90, 1),
    "Fraction inspired oxygen": ("fraction", 0.40, 0.08, 0.08, 0.05, (0.21, 1.0), 0.12, 0.01),
    "Glascow coma scale eye opening": ("score 1-4", 0, 0, 0, 0, (1, 4), 0.25, 1),
    "Glascow coma scale motor response": ("score 1-6", 0, 0, 0, 0, (1, 6), 0.25, 1),
    "Glascow coma scale total": ("score 3-15", 0, 0, 0, 0, (3, 15), 0.25, 1),
    "Glascow coma scale verbal response": ("score 1-5", 0, 0, 0, 0, (1, 5), 0.25, 1),
    "Glucose": ("mg/dL", 135, 10, 25, 25, (40, 600), 0.15, 1),
    "Heart Rate": ("bpm", 86, 8, 11, 6, (30, 200), 0.95, 1),
    "Height": ("cm", 170, 0, 10, 0, (140, 205), 0.0, 1),
    "Mean blood pressure": ("mmHg", 0, 0, 0, 3, (30, 180), 0.90, 1),
    "Oxygen saturation": ("%", 97, -1.5, 1.5, 1.5, (60, 100), 0.95, 1),
    "Respiratory rate": ("breaths/min", 19, 2.5, 3.5, 3, (4, 60), 0.93, 1),
    "Systolic blood pressure": ("mmHg", 120, -8, 15, 9, (50, 230), 0.90, 1),
    "Temperature": ("degC", 37.0, 0.3, 0.4, 0.3, (32, 42), 0.25, 0.1),
    "Weight": ("kg", 82, 0, 20, 1, (35, 250), 0.0, 0.1),
    "pH": ("pH", 7.39, -0.035, 0.03, 0.03, (6.8, 7.8), 0.08, 0.01),
}
TS_FEATURES = list(TS_SPEC)
_F = {name: i for i, name in enumerate(TS_FEATURES)}

# Phenotype prevalence in the benchmark cohort (approximate), loading on severity, subject share,
# weight in the mortality logit, and the phrase notes use for it.
PHENO_SPEC = [  # (prevalence, severity loading, chronic share, mortality weight, phrase)
    (0.21, 0.55, 0.2, 0.3, "acute kidney injury"), (0.08, 0.30, 0.1, 0.4, "stroke"),
    (0.10, 0.30, 0.1, 0.3, "myocardial infarction"), (0.36, 0.25, 0.6, 0.0, "atrial fibrillation"),
    (0.13, 0.15, 0.9, 0.0, "chronic kidney disease"), (0.13, 0.15, 0.9, 0.0, "COPD"),
    (0.21, 0.20, 0.1, 0.0, "postoperative complication"), (0.07, 0.10, 0.6, 0.0, "heart block"),
    (0.27, 0.30, 0.8, 0.1, "congestive heart failure"), (0.32, 0.10, 0.9, 0.0, "coronary artery disease"),
    (0.09, 0.15, 0.9, 0.0, "diabetic ketoacidosis"), (0.19, 0.05, 0.9, 0.0, "type 2 diabetes"),
    (0.29, 0.00, 0.9, 0.0, "hyperlipidemia"), (0.42, 0.00, 0.9, 0.0, "hypertension"),
    (0.27, 0.40, 0.2, 0.0, "hyponatremia"), (0.07, 0.25, 0.1, 0.2, "gastrointestinal bleed"),
    (0.13, 0.10, 0.9, 0.0, "hypertensive heart disease"), (0.08, 0.25, 0.7, 0.2, "cirrhosis"),
    (0.05, 0.20, 0.3, 0.0, "bronchitis"), (0.04, 0.10, 0.3, 0.0, "sinusitis"),
    (0.08, 0.30, 0.1, 0.0, "pleural effusion"), (0.14, 0.45, 0.1, 0.1, "pneumonia"),
    (0.17, 0.65, 0.1, 0.3, "respiratory failure"), (0.14, 0.65, 0.1, 0.3, "sepsis"),
    (0.08, 0.75, 0.0, 0.5, "septic shock"),
]
_ETHNICITY = {"WHITE": 0.655, "BLACK/AFRICAN AMERICAN": 0.10, "HISPANIC/LATINO": 0.045, "ASIAN": 0.035,
              "OTHER": 0.05, "UNKNOWN": 0.09, "UNABLE TO OBTAIN": 0.017,
              "AMERICAN INDIAN/ALASKA NATIVE": 0.005, "NATIVE HAWAIIAN OR OTHER PACIFIC ISLANDER": 0.003}
_MARITAL = {"MARRIED": 0.45, "SINGLE": 0.30, "WIDOWED": 0.13, "DIVORCED": 0.07, None: 0.05}
_ADMISSION = {"EW EMER.": 0.55, "URGENT": 0.15, "OBSERVATION ADMIT": 0.10, "SURGICAL SAME DAY ADMISSION": 0.10,
              "DIRECT EMER.": 0.06, "ELECTIVE": 0.04}


# ------------------------------------------------------------------------------------------ notes

SEVERITY_LEVELS = norm.ppf(np.arange(1, 9) / 9)  # the cut points of the nine equally likely severity levels a note renders
_COURSE = [
    ["uneventful ICU course and was quickly transferred to the floor", "remained hemodynamically stable on room air throughout"],
    ["was observed overnight with minimal intervention", "vital signs remained within normal limits"],
    ["required brief supplemental oxygen by nasal cannula which was weaned", "mild electrolyte derangements were repleted"],
    ["required intermittent fluid boluses for soft blood pressures", "treated with IV antibiotics with gradual improvement"],
    ["required high-flow oxygen and close monitoring", "course complicated by delirium which slowly resolved"],
    ["required BiPAP for hypoxemic respiratory distress", "developed worsening creatinine and oliguria"],
    ["was intubated for hypoxemia and airway protection", "required norepinephrine for persistent hypotension"],
    ["required escalating doses of two vasopressors and prolonged mechanical ventilation", "started on continuous renal replacement therapy"],
    ["developed refractory multiorgan failure despite maximal support", "family meetings were held regarding goals of care given critical illness"],
]
_LUNGS = [
    "The lungs are clear.", "Minimal bibasilar atelectasis.", "Mild bibasilar atelectasis, lungs otherwise clear.",
    "Mild pulmonary vascular congestion.", "Patchy bibasilar opacities, likely atelectasis.",
    "Moderate bilateral airspace opacities.", "Worsening multifocal airspace disease.",
    "Diffuse bilateral opacities concerning for ARDS.", "Extensive dense bilateral consolidation with near white-out of both lungs.",
]
_RADIOLOGY_FINDING = {5: "Hyperinflated lungs with flattened diaphragms.", 8: "Cardiomegaly with pulmonary edema.",
                      18: "Peribronchial thickening.", 20: "Layering pleural effusion.", 21: "Focal consolidation in the right lower lobe.",
                      22: "Endotracheal tube terminates 4 cm above the carina."}
# What of a stay's latent state each modality shows (in step with make_notes / make_cxr /
# make_timeseries / make_demographics below): the condition mentions it renders, and whether the
# gender is readable (the discharge "Sex:" line, height and weight, the demographics field).
SHOWN_CONDITIONS = {"discharge": tuple(range(25)), "radiology": tuple(sorted(_RADIOLOGY_FINDING)), "cxr": (8, 20, 21),
                    "timeseries": (0, 1, 10, 22, 23, 24), "demographics": ()}
SHOWS_GENDER = ("discharge", "timeseries", "demographics")
_NEGATION = ["No evidence of {}.", "Negative for {}.", "{} was ruled out.", "No signs of {}.", "Denies history of {}."]
_FILLER = ["Seen and examined by the ICU team.", "Medications were reconciled.", "PT and OT consulted.",
           "Please follow up with your PCP in 1-2 weeks.", "Code status: full code.", "Diet: regular as tolerated.",
           "Lines: peripheral IV.", "Patient was seen by nutrition.", "Labs reviewed.", "Discussed with attending."]
_SERVICES = ["MEDICINE", "SURGERY", "CARDIOTHORACIC", "NEUROLOGY", "ORTHOPAEDICS"]


def _typos(text: str, rng: random.Random, rate: float = 0.02) -> str:
    """Swap two letters in a few words: the noise of real notes."""
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) > 4 and rng.random() < rate:
            j = rng.randrange(1, len(word) - 2)
            words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2:]
    return " ".join(words)


def make_notes(rng: random.Random, nprng, readings, mentions, present, gender, los) -> dict[str, list]:
    n = len(gender)
    d_level, r_level = np.searchsorted(SEVERITY_LEVELS, readings["discharge"]), np.searchsorted(SEVERITY_LEVELS, readings["radiology"])
    discharge, radiology = [], []
    for i in range(n):
        if present["discharge"][i]:
            said = [PHENO_SPEC[k][4] for k in np.flatnonzero(mentions["discharge"][i])]
            unsaid = [p[4] for k, p in enumerate(PHENO_SPEC) if not mentions["discharge"][i, k]]
            lines = [
                "Name: ___ Unit No: ___", "Admission Date: ___ Discharge Date: ___", f"Sex: {gender[i]}",
                f"Service: {rng.choice(_SERVICES)}",
                f"History of Present Illness: ___ y/o {'man' if gender[i] == 'M' else 'woman'} with "
                + (", ".join(said[:3]) if said else "no significant past medical history") + " presenting to the ED.",
                "Brief Hospital Course: In the ICU the patient {}. The patient {}.".format(*rng.sample(_COURSE[d_level[i]], 2)),
            ]
            lines += [f"# {p}: treated and monitored." for p in said]
            lines += [rng.choice(_NEGATION).format(p) for p in rng.sample(unsaid, min(len(unsaid), rng.randint(1, 3)))]
            lines += rng.sample(_FILLER, 3)
            lines.append("Discharge Diagnoses: " + ("; ".join(said) if said else "none"))
            discharge.append(_typos("\n".join(lines), rng))
        else:
            discharge.append(None)
        if present["radiology"][i]:
            shown = [k for k in _RADIOLOGY_FINDING if mentions["radiology"][i, k]]
            lines = ["EXAMINATION: CHEST (PORTABLE AP)", "INDICATION: ___ with " + rng.choice(["hypoxia", "line placement", "fever", "dyspnea", "eval for infiltrate"]),
                     "FINDINGS: " + _LUNGS[r_level[i]]]
            lines += [_RADIOLOGY_FINDING[k] for k in shown]
            lines += [rng.choice(["No pneumothorax.", "No acute osseous abnormality.", "Cardiomediastinal silhouette is stable."])]
            if 21 not in shown:
                lines.append(rng.choice(_NEGATION[:3]).format("pneumonia"))
            if 20 not in shown:
                lines.append("No pleural effusion.")
            lines.append("IMPRESSION: " + (" ".join(_RADIOLOGY_FINDING[k] for k in shown[:1]) or _LUNGS[r_level[i]]))
            radiology.append(_typos("\n".join(lines), rng))
        else:
            radiology.append(None)
    d_time = (los + nprng.uniform(24, 200, n)).astype(np.float32)
    r_time = nprng.uniform(0, HOURS, n).astype(np.float32)
    return {
        "discharge_text": discharge,
        "discharge_time": pd.array(np.where(present["discharge"], d_time, np.nan), dtype="Float32"),
        "radiology_text": radiology,
        "radiology_time": pd.array(np.where(present["radiology"], r_time, np.nan), dtype="Float32"),
    }


# ------------------------------------------------------------------------------------------- CXR


def make_cxr(rng, reading, mentions, present, size: int) -> dict[str, list]:
    """Chest-X-ray-like images: bright chest, dark lungs, heart, spine; haze grows with the reading,
    focal opacity for pneumonia, basal whitening for effusion, big heart for heart failure."""
    n = len(reading)
    n_img = np.where(present, 1 + (rng.random(n) < 0.3), 0)
    owner = np.repeat(np.arange(n), n_img)
    k = len(owner)
    level = reading[owner] + 0.3 * rng.standard_normal(k)  # a later image shows a drifted state
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    y, x = y[None], x[None]
    dx, dy = (rng.uniform(-0.08, 0.08, (k, 1, 1)) for _ in range(2))
    xs, ys = x - dx, y - dy
    lungs = sum(np.exp(-(((xs - cx) / 0.32) ** 2 + ((ys + 0.05) / 0.6) ** 2) ** 2) for cx in (-0.42, 0.42))
    chf = mentions[owner, 8][:, None, None]
    heart_r = 0.28 + 0.1 * chf
    heart = np.exp(-((((xs - 0.1) / 1.2) ** 2 + (ys - 0.3) ** 2) / heart_r**2) ** 2)
    spine = np.exp(-(xs / 0.07) ** 2)
    body = np.exp(-((xs / 0.9) ** 2 + (ys / 1.15) ** 2) ** 4)
    img = (0.3 + 0.5 * body) - 0.55 * lungs + 0.25 * heart + 0.15 * spine
    haze = np.clip(0.2 + 0.1 * level, 0, 0.6)[:, None, None]
    img += haze * lungs * (1 + 0.2 * rng.standard_normal((k, size, size)))
    pna = mentions[owner, 21][:, None, None]
    cx, cy = rng.choice([-0.42, 0.42], k)[:, None, None], rng.uniform(-0.3, 0.4, (k, 1, 1))
    img += 0.35 * pna * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 0.03)
    img += 0.3 * mentions[owner, 20][:, None, None] * lungs * (ys > 0.3)
    img = img * rng.uniform(0.95, 1.05, (k, 1, 1)) + 0.04 * rng.standard_normal((k, size, size))
    pixels = np.clip(img * 255, 0, 255).astype(np.uint8)
    encoded = []
    for p in pixels:
        buffer = io.BytesIO()
        Image.fromarray(p, mode="L").save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    times = np.sort(rng.uniform(0, HOURS, (n, 2)), axis=1).astype(np.float32)
    images, image_times, start = [], [], 0
    for i in range(n):
        if n_img[i]:
            images.append(encoded[start:start + n_img[i]])
            image_times.append(times[i, : n_img[i]])
            start += n_img[i]
        else:
            images.append(None)
            image_times.append(None)
    return {"cxr_images": images, "cxr_times": image_times}


# ------------------------------------------------------------------------------------ time series


def make_timeseries(rng, reading, mentions, present, gender) -> dict[str, list]:
    """Hourly-charted vitals and sparser labs/GCS, shifted by the reading and shown conditions."""
    n, f = len(reading), len(TS_FEATURES)
    spec = list(TS_SPEC.values())
    normal, sens, sd_stay, sd_meas = (np.array([v[j] for v in spec], dtype=float) for j in range(1, 5))
    lo, hi = (np.array([v[5][j] for v in spec], dtype=float) for j in range(2))
    t = (np.arange(HOURS) / (HOURS - 1) - 0.5)[None, :, None]
    shift = np.zeros((n, f))
    cond = mentions.astype(float)
    shift[:, _F["Systolic blood pressure"]] -= 20 * cond[:, 24]
    shift[:, _F["Diastolic blood pressure"]] -= 10 * cond[:, 24]
    shift[:, _F["Heart Rate"]] += 12 * cond[:, 23]
    shift[:, _F["Temperature"]] += 0.8 * cond[:, 23]
    shift[:, _F["Oxygen saturation"]] -= 3 * cond[:, 22]
    shift[:, _F["Fraction inspired oxygen"]] += 0.2 * cond[:, 22]
    shift[:, _F["Glucose"]] += 80 * cond[:, 10]
    shift[:, _F["pH"]] -= 0.06 * cond[:, 10] + 0.03 * cond[:, 0]
    shift[:, _F["Height"]] += np.where(gender == "M", 7, -7)
    shift[:, _F["Weight"]] += np.where(gender == "M", 8, -8)
    level = reading[:, None] + 0.6 * rng.standard_normal((n, 1))  # drift over the 48 h
    base = normal + sens * reading[:, None] + sd_stay * rng.standard_normal((n, f)) + shift
    values = base[:, None, :] + sens * level[:, None, :] * t + sd_meas * rng.standard_normal((n, HOURS, f))
    mbp = (values[..., _F["Systolic blood pressure"]] + 2 * values[..., _F["Diastolic blood pressure"]]) / 3
    values[..., _F["Mean blood pressure"]] += mbp
    neuro = np.maximum(0, 0.8 * reading[:, None] + 1.5 * cond[:, 1:2] + 0.7 * rng.standard_normal((n, 1)) - 0.4
                       + 0.5 * rng.standard_normal((n, HOURS)))
    gcs = [4 - 1.0 * neuro, 6 - 1.3 * neuro, 5 - 1.6 * neuro]
    for name, score, top in zip(("eye opening", "motor response", "verbal response"), gcs, (4, 6, 5)):
        values[..., _F[f"Glascow coma scale {name}"]] = np.clip(np.round(score), 1, top)
    values[..., _F["Glascow coma scale total"]] = sum(values[..., _F[f"Glascow coma scale {name}"]]
                                                      for name in ("eye opening", "motor response", "verbal response"))
    values[..., _F["Capillary refill rate"]] = rng.random((n, HOURS)) < expit(-2.5 + reading[:, None])
    step = np.array([v[7] for v in spec])
    values = np.clip(np.round(values / step) * step, lo, hi)

    # Sampling: monitor vitals nearly hourly, GCS/temperature ~4-hourly, labs sparse; sicker stays are
    # charted more often; a third of stays have a 2-8 h gap (off the unit, procedures).
    intensity = np.exp(0.15 * reading + 0.2 * rng.standard_normal(n))[:, None, None]
    rate = np.array([v[6] for v in spec])[None, None, :]
    draw = rng.random((n, HOURS, f))
    groups = {"Systolic blood pressure": ("Diastolic blood pressure", "Mean blood pressure"),
              "Glascow coma scale total": ("Glascow coma scale eye opening", "Glascow coma scale motor response",
                                           "Glascow coma scale verbal response"), "pH": ("Fraction inspired oxygen",)}
    for lead, follow in groups.items():  # measured together (one cuff reading, one GCS exam, one blood gas)
        draw[..., [_F[x] for x in follow]] = draw[..., [_F[lead]]] + 0.05 * rng.random((n, HOURS, len(follow)))
    mask = draw < np.minimum(rate * intensity, 1.0)
    mask[:, :3, _F["Height"]] = (rng.random((n, 1)) < 0.3) & (np.arange(3) == rng.integers(0, 3, (n, 1)))
    mask[:, :, _F["Weight"]] = (rng.random((n, HOURS)) < 0.03) | ((np.arange(HOURS) == 0) & (rng.random((n, 1)) < 0.6))
    gap_start, gap_len = rng.integers(0, HOURS, n), rng.integers(2, 9, n)
    hours = np.arange(HOURS)
    in_gap = (rng.random(n)[:, None] < 0.33) & (hours >= gap_start[:, None]) & (hours < (gap_start + gap_len)[:, None])
    mask &= ~in_gap[:, :, None]
    mask[:, 0, :] |= ~mask.any(axis=(1, 2))[:, None]  # a charted stay has at least its admission vitals
    mask &= present[:, None, None]

    hourly = np.where(mask, values, np.nan).astype(np.float32).reshape(n, -1)
    stay, hour, feature = np.nonzero(mask)
    when = hour + rng.random(len(hour))
    order = np.lexsort((when, stay))
    cuts = np.cumsum(mask.sum(axis=(1, 2)))[:-1]
    ev_f, ev_v, ev_t = (np.split(arr, cuts) for arr in (feature[order].astype(np.int16),
                        values[stay, hour, feature][order].astype(np.float32), when[order].astype(np.float32)))
    hourly_mask = mask.reshape(n, -1)
    out = {"ts_hourly_values": [], "ts_hourly_mask": [], "ts_event_feature": [], "ts_event_value": [], "ts_event_time": []}
    for i in range(n):
        row = (hourly[i], hourly_mask[i], ev_f[i], ev_v[i], ev_t[i]) if present[i] else (None,) * 5
        for key, value in zip(out, row):
            out[key].append(value)
    return out


# ---------------------------------------------------------------------------------- demographics


def make_demographics(rng, z_age, subject, present, gender) -> dict[str, object]:
    """Age (the carrier of the demographics signal, left-skewed as in MIMIC, capped at 91) and
    categorical fields with realistic frequencies, small groups included."""
    n, n_subj = len(subject), len(z_age)
    first_age = 18 + 73 * norm.cdf(z_age) ** 0.6
    years = np.zeros(n)
    repeat = np.r_[False, subject[1:] == subject[:-1]]
    gaps = np.where(repeat, rng.exponential(0.8, n), 0.0)
    for i in np.flatnonzero(repeat):  # years since the subject's first stay
        years[i] = years[i - 1] + gaps[i]
    age = np.minimum(first_age[subject] + years, 91).round()

    def pick(table: dict, size: int):
        keys = list(table)
        p = np.array(list(table.values()))
        return np.array(keys, dtype=object)[rng.choice(len(keys), size=size, p=p / p.sum())]

    ethnicity = pick(_ETHNICITY, n_subj)[subject]
    marital = pick(_MARITAL, n_subj)[subject]
    insurance = np.where(rng.random(n) < np.where(age >= 65, 0.85, 0.12), "Medicare",
                         np.where(rng.random(n) < 0.2, "Medicaid", "Other"))
    fields = {"gender": gender.astype(object), "ethnicity": ethnicity,
              "insurance": insurance.astype(object), "marital_status": marital, "admission_type": pick(_ADMISSION, n)}
    out = {demo_column("age"): pd.array(np.where(present, age, np.nan), dtype="Float32")}
    for name, value in fields.items():
        out[demo_column(name)] = [v if p else None for v, p in zip(value, present)]
    return out
