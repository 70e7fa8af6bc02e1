"""MMLU-Redux v1 (``edinburgh-dawg/mmlu-redux``): the report's 3,000-item version (30 subjects x 100).

NOT ``mmlu-redux-2.0`` (57 subjects, 5,700 items). One config per subject, split ``test``; the main
branch stores each subject as a ``save_to_disk`` folder plus ``test.csv`` (choices as a string), so
the adapter reads the hub's converted Parquet branch (``{subject}/test/0000.parquet``, typed columns:
question, choices list, answer int 0-3, error_type ...). ``load()`` concatenates every subject
(a ``config`` column keeps the subject) and warns if the total is not 3,000.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import mc
from .base import CONVERTED_PARQUET, DatasetSource

SUBJECTS = ("anatomy", "business_ethics", "clinical_knowledge", "college_chemistry", "college_computer_science",
            "college_mathematics", "college_medicine", "college_physics", "econometrics", "electrical_engineering",
            "formal_logic", "global_facts", "high_school_chemistry", "high_school_mathematics", "high_school_physics",
            "high_school_statistics", "human_aging", "logical_fallacies", "machine_learning", "miscellaneous",
            "philosophy", "professional_accounting", "public_relations", "virology", "conceptual_physics",
            "high_school_us_history", "astronomy", "high_school_geography", "high_school_macroeconomics",
            "professional_law")
ITEMS_PER_SUBJECT = 100


@dataclass(frozen=True)
class MMLUReduxSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        q, opts, k = mc(i, tag=config[:4])
        return {"question": q, "choices": opts, "answer": k, "error_type": "ok" if i % 5 else "wrong_groundtruth",
                "source": "", "correct_answer": "", "potential_reason": ""}


SOURCE = MMLUReduxSource(
    name="mmlu-redux", repo_id="edinburgh-dawg/mmlu-redux", revision=CONVERTED_PARQUET, configs=SUBJECTS,
    splits=("test",),
    columns={"question": "string", "choices": "list<string>", "answer": "int", "error_type": "string"},
    file_format="parquet", data_files="{config}/{split}/*.parquet", concat_configs=True,
    expected_rows=len(SUBJECTS) * ITEMS_PER_SUBJECT,
    revision_note="the hub's auto-converted Parquet branch (typed columns; main stores arrow folders + CSV); a "
                  "branch, not a pinned commit. v1 itself is frozen (v2 is a separate repo)",
    note="report §4: MMLU-Redux has 3,000 items (v1: 30 subjects x 100)")
