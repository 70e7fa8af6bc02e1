"""§5 TextDetox multilingual toxicity corpus: ``textdetox/multilingual_toxicity_dataset``.

One ``default`` config, one split per language, Parquet ``data/{lang}-00000-of-00001.parquet``,
columns ``text`` (string) and ``toxic`` (int, 1 = toxic). About 2,500 toxic + 2,500 clean texts per
language. The 15-split layout (he, hin, it, fr, tt, ja added) appeared in the hub commit ``fca016c``
("Upload dataset"); older revisions (e.g. ``684bfd6``, ``4f0fc13``) hold only 9 languages. Loading a
language that the resolved revision lacks raises :class:`~.base.SchemaError` naming the split.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .base import DatasetSource

LANGS = ("en", "ru", "uk", "de", "es", "am", "zh", "ar", "hi", "it", "fr", "he", "hin", "tt", "ja")

_TOXIC = {"en": "you are a stupid idiot", "ru": "ты тупой идиот", "uk": "ти дурний ідіот", "de": "du bist ein dummer Idiot",
          "es": "eres un idiota estúpido", "am": "አንተ ደደብ ነህ", "zh": "你这个蠢货", "ar": "أنت غبي وأحمق",
          "hi": "तुम बेवकूफ हो", "it": "sei uno stupido idiota", "fr": "tu es un idiot stupide", "he": "אתה אידיוט טיפש",
          "hin": "tum bevakoof ho", "tt": "син тупой дурак", "ja": "お前は馬鹿だ"}
_CLEAN = {"en": "thank you for the helpful answer", "ru": "спасибо за полезный ответ", "uk": "дякую за корисну відповідь",
          "de": "danke für die hilfreiche Antwort", "es": "gracias por la respuesta útil", "am": "ስለ ጠቃሚው መልስ አመሰግናለሁ",
          "zh": "谢谢你的有用回答", "ar": "شكرا على الإجابة المفيدة", "hi": "उपयोगी उत्तर के लिए धन्यवाद",
          "it": "grazie per la risposta utile", "fr": "merci pour la réponse utile", "he": "תודה על התשובה המועילה",
          "hin": "upyogi jawab ke liye dhanyavaad", "tt": "файдалы җавап өчен рәхмәт", "ja": "役に立つ回答をありがとう"}

REVISION = "main"


@dataclass(frozen=True)
class TextDetoxSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        toxic = i % 2
        base = (_TOXIC if toxic else _CLEAN)[split]
        return {"text": f"{base} #{i // 2}", "toxic": toxic}


SOURCE = TextDetoxSource(
    name="textdetox", repo_id="textdetox/multilingual_toxicity_dataset", revision=REVISION,
    configs=("default",), splits=LANGS, columns={"text": "string", "toxic": "int"}, file_format="parquet",
    data_files="data/{split}-*.parquet",
    revision_note="branch main: the 15-language data are hub commit fca016c (README later 0190754; short shas as "
                  "the hub shows them: the full 40-hex sha could not be verified offline, so none is pinned). Each "
                  "language split is checked on load, so a 9-language revision fails loudly, never silently",
    note="report: 13 languages (en ru uk de es am zh ar hi it fr tt ja); he and hin exist but are unused")
