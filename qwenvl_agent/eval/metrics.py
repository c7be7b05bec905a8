"""Scores, each from 0 to 1: character accuracy for OCR, ANLS and exact match for text answers, a
tolerance for numbers, and the right reply to a question the images cannot answer."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from rapidfuzz.distance import Levenshtein

_TABLE_RULE = re.compile(r"^\s*\|?(\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*$")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ABSTAIN = re.compile(
    r"\b(not (?:shown|given|visible|present|included|listed|mentioned|available|found|provided|stated|in)|no (?:email|"
    r"information|data|such)|does(?:n't| not) (?:show|contain|include|mention|say|list|appear)|cannot (?:find|see|tell|"
    r"determine|answer)|can't (?:find|see|tell)|unable to|unknown|not possible)\b|没有|未|无法|不包含",
    re.IGNORECASE,
)


def normalise_text(text: str) -> str:
    """Lines without Markdown table syntax and with single spaces, for comparing OCR output to the truth."""
    lines = []
    for line in unicodedata.normalize("NFKC", text).splitlines():
        if _TABLE_RULE.match(line):
            continue
        line = line.strip().strip("|").replace("\\|", "\0").replace("|", " ").replace("\0", "|")
        line = " ".join(line.split())
        if line:
            lines.append(line)
    return "\n".join(lines)


def char_accuracy(predicted: str, truth: str) -> float:
    """1 - (character edits to turn the prediction into the truth) / (length of the truth), at least 0."""
    truth, predicted = normalise_text(truth), normalise_text(predicted)
    if not truth:
        return 1.0 if not predicted else 0.0
    return max(0.0, 1.0 - Levenshtein.distance(predicted, truth) / len(truth))


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKC", str(text)).lower().strip()
    return " ".join(re.sub(r"[\s.,;:!?\"'`*()]+", " ", text).split())


def exact_match(predicted: str, truth: str) -> float:
    return 1.0 if _plain(predicted) == _plain(truth) else 0.0


def anls(predicted: str, truth: str, threshold: float = 0.5) -> float:
    """Average normalised Levenshtein similarity (DocVQA's score) of the answer, or of its best line, or the
    truth found inside a longer answer."""
    truth_plain = _plain(truth)
    if not truth_plain:
        return 0.0
    candidates = [_plain(predicted)] + [_plain(line) for line in str(predicted).splitlines() if line.strip()]
    if any(truth_plain in candidate.split(" ") or f" {truth_plain} " in f" {candidate} " for candidate in candidates):
        return 1.0
    best = max(Levenshtein.normalized_similarity(candidate, truth_plain) for candidate in candidates)
    return best if best >= threshold else 0.0


def numbers_in(text: str) -> list[float]:
    found = []
    for match in _NUMBER.findall(str(text)):
        try:
            found.append(float(match.replace(",", "")))
        except ValueError:
            continue
    return found


def number_match(predicted: str, truth: float, relative: float = 0.01) -> float:
    """1 if a number in the answer is within ``relative`` of the truth (the last one wins ties of wording)."""
    return 1.0 if any(abs(value - truth) <= relative * max(abs(truth), 1e-9) for value in numbers_in(predicted)) else 0.0


def yes_no(predicted: str, truth: str) -> float:
    text = _plain(predicted)
    said_yes = bool(re.search(r"\b(yes|true|more|higher|greater|above|exceeds)\b|是|高于|超过", text))
    said_no = bool(re.search(r"\b(no|not|false|less|lower|smaller|below)\b|否|低于|不", text))
    if said_yes == said_no:
        return 0.0
    return 1.0 if said_yes == (truth == "yes") else 0.0


def abstained(predicted: str) -> float:
    """1 if the answer says the images do not hold it."""
    return 1.0 if _ABSTAIN.search(str(predicted)) else 0.0


def answer_metric(answer_type: str) -> str:
    """What ``score_answer`` measures for an answer of this type."""
    return {"number": "number within 1 %", "yesno": "yes or no", "none": "says the images do not hold it"}.get(
        answer_type, "ANLS")


def score_answer(predicted: str, truth: Any, answer_type: str) -> float:
    if answer_type == "number":
        return number_match(predicted, float(truth))
    if answer_type == "yesno":
        return yes_no(predicted, str(truth))
    if answer_type == "none":
        return abstained(predicted)
    return anls(predicted, str(truth))


def chart_value_accuracy(read: dict[str, float], truth: dict[str, float], relative: float = 0.02) -> float:
    """Share of the chart's categories whose value was read within ``relative``."""
    if not truth:
        return 0.0
    normalised = {_plain(k): v for k, v in read.items()}
    hits = 0
    for category, value in truth.items():
        got = normalised.get(_plain(category))
        if got is not None and abs(got - value) <= relative * max(abs(value), 1e-9):
            hits += 1
    return hits / len(truth)
