"""C-Eval (``ceval/ceval-exam``): §4 benchmark, one config per subject (52), concatenated.

Splits dev (5 per subject) / val (1,346 in total) / test (answers withheld: empty ``answer``), so the
default split is ``val``. Read from the hub's converted Parquet branch (``{subject}/{split}/0000.parquet``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import mc
from .base import CONVERTED_PARQUET, DatasetSource

SUBJECTS = (
    "computer_network", "operating_system", "computer_architecture", "college_programming", "college_physics",
    "college_chemistry", "advanced_mathematics", "probability_and_statistics", "discrete_mathematics",
    "electrical_engineer", "metrology_engineer", "high_school_mathematics", "high_school_physics",
    "high_school_chemistry", "high_school_biology", "middle_school_mathematics", "middle_school_biology",
    "middle_school_physics", "middle_school_chemistry", "veterinary_medicine", "college_economics",
    "business_administration", "marxism", "mao_zedong_thought", "education_science", "teacher_qualification",
    "high_school_politics", "high_school_geography", "middle_school_politics", "middle_school_geography",
    "modern_chinese_history", "ideological_and_moral_cultivation", "logic", "law", "chinese_language_and_literature",
    "art_studies", "professional_tour_guide", "legal_professional", "high_school_chinese", "high_school_history",
    "middle_school_history", "civil_servant", "sports_science", "plant_protection", "basic_medicine",
    "clinical_medicine", "urban_and_rural_planner", "accountant", "fire_engineer",
    "environmental_impact_assessment_engineer", "tax_accountant", "physician")


@dataclass(frozen=True)
class CEvalSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        q, opts, k = mc(i, zh=True, tag=config[:3])
        return {"id": i, "question": q, "A": opts[0], "B": opts[1], "C": opts[2], "D": opts[3],
                "answer": "" if split == "test" else "ABCD"[k], "explanation": ""}


SOURCE = CEvalSource(
    name="ceval", repo_id="ceval/ceval-exam", revision=CONVERTED_PARQUET, configs=SUBJECTS,
    splits=("val", "dev", "test"), columns={"id": "int", "question": "string", "A": "string", "B": "string",
                                            "C": "string", "D": "string", "answer": "string"},
    file_format="parquet", data_files="{config}/{split}/*.parquet", concat_configs=True, default_split="val",
    revision_note="the hub's auto-converted Parquet branch; a branch, not a pinned commit")
