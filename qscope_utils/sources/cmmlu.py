"""CMMLU (``haonan-li/cmmlu``): §4 benchmark, one config per subject (67), concatenated (11,528 test items).

The main branch holds a loading script and a zip of CSVs (not readable by datasets 5.x), so the adapter
reads the hub's converted Parquet branch (``{subject}/{split}/0000.parquet``): Question, A-D, Answer.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import mc
from .base import CONVERTED_PARQUET, DatasetSource

SUBJECTS = (
    "agronomy", "anatomy", "ancient_chinese", "arts", "astronomy", "business_ethics", "chinese_civil_service_exam",
    "chinese_driving_rule", "chinese_food_culture", "chinese_foreign_policy", "chinese_history", "chinese_literature",
    "chinese_teacher_qualification", "clinical_knowledge", "college_actuarial_science", "college_education",
    "college_engineering_hydrology", "college_law", "college_mathematics", "college_medical_statistics",
    "college_medicine", "computer_science", "computer_security", "conceptual_physics",
    "construction_project_management", "economics", "education", "electrical_engineering", "elementary_chinese",
    "elementary_commonsense", "elementary_information_and_technology", "elementary_mathematics", "ethnology",
    "food_science", "genetics", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_geography", "high_school_mathematics", "high_school_physics", "high_school_politics",
    "human_sexuality", "international_law", "journalism", "jurisprudence", "legal_and_moral_basis", "logical",
    "machine_learning", "management", "marketing", "marxist_theory", "modern_chinese", "nutrition", "philosophy",
    "professional_accounting", "professional_law", "professional_medicine", "professional_psychology",
    "public_relations", "security_study", "sociology", "sports_science", "traditional_chinese_medicine", "virology",
    "world_history", "world_religions")


@dataclass(frozen=True)
class CMMLUSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        q, opts, k = mc(i, zh=True, tag=config[:3])
        return {"Question": q, "A": opts[0], "B": opts[1], "C": opts[2], "D": opts[3], "Answer": "ABCD"[k]}


SOURCE = CMMLUSource(
    name="cmmlu", repo_id="haonan-li/cmmlu", revision=CONVERTED_PARQUET, configs=SUBJECTS, splits=("test", "dev"),
    columns={"Question": "string", "A": "string", "B": "string", "C": "string", "D": "string", "Answer": "string"},
    file_format="parquet", data_files="{config}/{split}/*.parquet", concat_configs=True,
    revision_note="the hub's auto-converted Parquet branch (main holds a loading script); not a pinned commit")
