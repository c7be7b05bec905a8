"""What a model was actually given: the prompts of a ``ChatQwenVL``'s generations, recorded as they reach its runtime."""

from __future__ import annotations


def given_prompts(monkeypatch, llm) -> list:
    """The prompts the model is given from now on (each generation's ``Prompt``)."""
    seen = []
    original = llm.runtime.stream

    def recording(prompt, settings):
        seen.append(prompt)
        return original(prompt, settings)

    monkeypatch.setattr(llm.runtime, "stream", recording)
    return seen
