"""Prompt-lookup drafts in the shared decode loop, on every installed engine: a greedy reply is the same with
drafts and without (the model checks each draft in the pass it makes anyway, and what the reply leaves is taken
back out of the engine's cache), replies that quote the prompt take fewer passes, and scripted replies, grammars
and kept prefixes work as before.

Identity is checked in float32: in bfloat16 a pass over several tokens rounds differently from passes over one
token each (as a continued prefix or a jump-forward run does), which can flip a near tie of the random model.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import BaseModel, ValidationError

from qwenvl_agent.vlm import ChatQwenVL
from qwenvl_agent.vlm.decode import PromptLookup
from qwenvl_agent.vlm.testing import scripted_replies

INVOICE = (
    "Invoice No.: 12345678. Date: 2026-03-14. Buyer: ACME Trading Ltd., 88 Harbour Road, Shenzhen. "
    "Seller: Northwind Components Co. Total (CNY): 1,234,560.00. Due: 2026-04-13. "
)
PROMPTS = [
    "Repeat this invoice word for word: " + INVOICE * 2,
    "What is the total of this invoice? " + INVOICE,
    "发票号码 12345678，日期 2026-03-14，合计 1,234,560.00 元。请重复：发票号码 12345678，日期",
    "one two three one two three one two three one two",
]


def exact(tiny_model, engine, drafts: int) -> ChatQwenVL:
    """The engine computing in float32, greedy, without kept prefixes (each reply from its prompt alone)."""
    return ChatQwenVL(model=tiny_model, engine=engine, dtype="float32", max_tokens=40, reuse_prefix=False,
                      prompt_lookup_num_tokens=drafts)


def timings(message) -> dict:
    return message.response_metadata["timings"]


def test_greedy_replies_are_the_same_with_and_without_drafts_and_take_fewer_passes(tiny_model, engine):
    plain, drafting = exact(tiny_model, engine, 0), exact(tiny_model, engine, 10)
    steps_with = steps_without = taken = 0
    for prompt in PROMPTS:
        without = plain.invoke([HumanMessage(prompt)])
        drafted = drafting.invoke([HumanMessage(prompt)])
        assert drafted.content == without.content, prompt
        assert drafted.usage_metadata["output_tokens"] == without.usage_metadata["output_tokens"]
        assert timings(without)["draft_tokens"] == 0
        steps_without += timings(without)["decode_steps"]
        steps_with += timings(drafted)["decode_steps"]
        taken += timings(drafted)["accepted_draft_tokens"]
        assert timings(drafted)["accepted_draft_tokens"] <= timings(drafted)["draft_tokens"]
    assert taken > 0
    assert steps_with == steps_without - taken


def test_a_conversation_goes_on_from_a_drafted_reply_as_from_a_fresh_prompt(tiny_model, engine):
    """After a drafted reply the engine's cache holds the prompt and the reply, not the drafts it left: the
    kept prefix the next turn continues gives the reply the whole prompt read afresh gives."""
    llm = ChatQwenVL(model=tiny_model, engine=engine, dtype="float32", max_tokens=30)
    llm.runtime.prefix_cache.clear()
    first = [HumanMessage("What is the total? " + INVOICE)]
    script = "The total (CNY) is 1,234,560.00, due 2026-04-13; the seller is Northwind Components Co."
    with scripted_replies(llm.runtime, [script]):
        answer = llm.invoke(first, max_tokens=100)
    assert answer.content == script
    assert 0 < timings(answer)["accepted_draft_tokens"] < timings(answer)["draft_tokens"]  # some were taken back
    second = first + [AIMessage(answer.content), HumanMessage("And the buyer? " + INVOICE)]
    continued = llm.invoke(second)
    fresh = llm.invoke(second, reuse_prefix=False)
    # It went on from the kept prompt and reply (the reply's tokens included), and replied as afresh.
    assert timings(continued)["reused_tokens"] > answer.usage_metadata["input_tokens"] + 10
    assert continued.content == fresh.content


def test_a_scripted_reply_quoting_the_prompt_is_drafted_and_comes_out_as_scripted(tiny_model, engine):
    llm = ChatQwenVL(model=tiny_model, engine=engine, max_tokens=200, reuse_prefix=False)
    script = "The total is 1,234,560.00 CNY, due 2026-04-13 (Invoice No.: 12345678, Seller: Northwind Components Co.)."
    with scripted_replies(llm.runtime, [script, script]) as left:
        drafted = llm.invoke([HumanMessage("What is the total? " + INVOICE)])
        plain = llm.invoke([HumanMessage("What is the total? " + INVOICE)], prompt_lookup_num_tokens=0)
    assert not left
    assert drafted.content == plain.content == script
    tokens = drafted.usage_metadata["output_tokens"]
    assert timings(plain)["decode_steps"] == tokens - 1
    assert timings(drafted)["decode_steps"] < tokens / 2  # most of the reply is copied from the prompt


class Invoice(BaseModel):
    number: str
    total: str
    due: str


def test_a_constrained_reply_is_valid_and_the_same_with_drafts(tiny_model, engine):
    def structured(drafts: int, max_tokens: int = 40):
        llm = ChatQwenVL(model=tiny_model, engine=engine, dtype="float32", max_tokens=max_tokens, reuse_prefix=False,
                         prompt_lookup_num_tokens=drafts)
        return llm, llm.with_structured_output(Invoice, method="json_schema", include_raw=True)

    prompt = [HumanMessage("Record this invoice as JSON: " + INVOICE)]
    without = structured(0)[1].invoke(prompt)
    drafted = structured(10)[1].invoke(prompt)
    assert without["parsing_error"] is None and isinstance(drafted["parsed"], Invoice)
    assert drafted["raw"].content == without["raw"].content
    assert timings(drafted["raw"])["draft_tokens"] > 0 and timings(without["raw"])["draft_tokens"] == 0
    # A reply that copies its values from the document: drafts under the grammar are taken.
    llm, copying = structured(10, max_tokens=120)
    script = json.dumps({"number": "12345678", "total": "1,234,560.00", "due": "2026-04-13"})
    with scripted_replies(llm.runtime, [script]):
        copied = copying.invoke(prompt)
    assert copied["parsed"] == Invoice(number="12345678", total="1,234,560.00", due="2026-04-13")
    assert timings(copied["raw"])["accepted_draft_tokens"] > 0


def test_sampled_replies_are_not_drafted(tiny_model, engine):
    llm = ChatQwenVL(model=tiny_model, engine=engine, max_tokens=30, temperature=1.0, seed=3, reuse_prefix=False)
    reply = llm.invoke([HumanMessage(PROMPTS[3])])
    assert timings(reply)["draft_tokens"] == 0 and reply.usage_metadata["output_tokens"] > 1


def test_the_lookup_drafts_what_followed_the_latest_longest_match():
    # "5 6 7" came before only at the start; "6 7" also later: the longer match wins.
    assert PromptLookup(4).propose([5, 6, 7, 1, 9, 6, 7, 2, 3, 4, 5, 6, 7], 10) == [1, 9, 6, 7]
    # "1 2" came before twice: what followed the later one, up to the end of the sequence.
    assert PromptLookup(4).propose([1, 2, 3, 1, 2, 4, 1, 2], 10) == [4, 1, 2]
    assert PromptLookup(4).propose([1, 2, 3, 9], 10) == []  # 9 never came before
    assert PromptLookup(4).propose([1, 2, 1, 2, 1], 1) == [2]  # at most the budget


def test_the_draft_length_follows_how_the_last_draft_went():
    lookup = PromptLookup(10)
    assert lookup.size == 10
    lookup.checked(10, 3)
    assert lookup.size == 4  # one more than was taken
    lookup.checked(4, 4)
    assert lookup.size == 6  # all taken: two more
    lookup.checked(6, 0)
    assert lookup.size == 2  # never below two
    for _ in range(10):
        lookup.checked(lookup.size, lookup.size)
    assert lookup.size == 10  # never above the most asked for


def test_a_bad_draft_count_is_refused_with_its_name(tiny_model):
    with pytest.raises(ValidationError, match="prompt_lookup_num_tokens"):
        ChatQwenVL(model=tiny_model, prompt_lookup_num_tokens=-1)
    llm = ChatQwenVL(model=tiny_model, max_tokens=4)
    with pytest.raises(ValueError, match="prompt_lookup_num_tokens"):
        llm.invoke("hi", prompt_lookup_num_tokens="many")


def test_the_reference_is_looked_in_first_and_read_forward():
    reference = [1, 2, 3, 4, 5, 1, 2, 6, 7, 8]
    # "1 2" is in the sequence too (followed by 9): the reference's continuation wins, from its first place.
    lookup = PromptLookup(3, reference=reference)
    assert lookup.propose([1, 2, 9, 0, 1, 2], 10) == [3, 4, 5]
    # Read on from there: the next "1 2" of the reference, not its first again.
    assert lookup.propose([0, 5, 1, 2], 10) == [6, 7, 8]
    # Nothing of the tail in the reference: the sequence's own latest match, as without one.
    assert PromptLookup(3, reference=reference).propose([9, 0, 9, 0], 10) == [9, 0]
    assert PromptLookup(3, reference=[]).propose([1, 2, 3, 1, 2, 4, 1, 2], 10) == [4, 1, 2]


# Another reader's text of what the reply will say: close to it, with differences, never in the prompt.
TRANSCRIPT = (
    "INVOICE\nInvoice No.: 12345678\nDate: 2026-03-14\nBuyer: ACME Trading Ltd., 88 Harbour Road, Shenzhen\n"
    "| Item | Qty | Amount |\n| --- | --- | --- |\n| Industrial sensor kit | 40 | 500,000.00 |\n"
    "Total (CNY): 1,234,560.00\n"
)
MISREAD = TRANSCRIPT.replace("12345678", "1234S678").replace("Shenzhen", "Shenzen").replace("40", "4O")


def test_a_reply_is_drafted_from_a_text_outside_the_prompt_and_comes_out_as_without_it(tiny_model, engine):
    llm = ChatQwenVL(model=tiny_model, engine=engine, max_tokens=200, reuse_prefix=False)
    question = [HumanMessage("Read all the text of the invoice.")]  # the transcript is nowhere in the prompt
    with scripted_replies(llm.runtime, [TRANSCRIPT] * 3) as left:
        plain = llm.invoke(question)
        guided = llm.invoke(question, draft_text=MISREAD)
        unused = llm.invoke(question, draft_text=MISREAD, prompt_lookup_num_tokens=0)
    assert not left
    assert plain.content == guided.content == unused.content == TRANSCRIPT
    tokens = guided.usage_metadata["output_tokens"]
    assert timings(plain)["accepted_draft_tokens"] < tokens / 4  # the prompt has little of it to draft from
    assert timings(guided)["accepted_draft_tokens"] > tokens / 2  # the other reading has most of it
    assert timings(guided)["decode_steps"] < timings(plain)["decode_steps"] / 2
    assert timings(unused)["draft_tokens"] == 0  # drafts off: the text is not used


def test_greedy_replies_are_the_same_with_a_draft_text(tiny_model, engine):
    llm = exact(tiny_model, engine, 10)
    taken_without = taken_with = 0
    for prompt in PROMPTS:
        without = llm.invoke([HumanMessage(prompt)])
        with_text = llm.invoke([HumanMessage(prompt)], draft_text=MISREAD + " " + without.content)
        assert with_text.content == without.content, prompt
        taken_without += timings(without)["accepted_draft_tokens"]
        taken_with += timings(with_text)["accepted_draft_tokens"]
    assert taken_with > taken_without  # the replies were in the text: more of them came as drafts


def test_a_draft_text_that_is_not_text_is_refused_with_its_name(tiny_model):
    llm = ChatQwenVL(model=tiny_model, max_tokens=4)
    with pytest.raises(ValueError, match="draft_text must be a string"):
        llm.invoke("hi", draft_text=["not", "text"])
