"""What a model was actually given: the prompts (and settings) of a ``ChatQwenVL``'s generations, recorded as they
reach its runtime."""

from __future__ import annotations


def given_prompts(monkeypatch, llm) -> list:
    """The prompts the model is given from now on (each generation's ``Prompt``)."""
    return _recorded(monkeypatch, llm, lambda prompt, settings: prompt)


def given_calls(monkeypatch, llm) -> list:
    """The prompts and settings the model is given from now on (each generation's ``(Prompt, GenerationSettings)``)."""
    return _recorded(monkeypatch, llm, lambda prompt, settings: (prompt, settings))


def _recorded(monkeypatch, llm, keep) -> list:
    seen = []
    original = llm.runtime.stream

    def recording(prompt, settings):
        seen.append(keep(prompt, settings))
        return original(prompt, settings)

    monkeypatch.setattr(llm.runtime, "stream", recording)
    return seen
