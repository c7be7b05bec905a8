"""The page as ``qwenvl ui`` runs it, with the model's replies scripted: for the browser tests.

``streamlit run scripted_page.py -- <the page's arguments>``. The shared model replies with the texts of the
JSON list in ``$QWENVL_TEST_REPLIES``, one per generation, writing one token every
``$QWENVL_TEST_TOKEN_SECONDS`` seconds; everything else (agent, page, model) is the real thing.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy

from slow_replies import slow_replies

from qwenvl_agent.ui import state

settings = state.launch_settings()
runtime = state.shared_runtime(settings.model, settings.dtype, settings.engine, settings.weights)
if not hasattr(runtime, "scripted_for_tests"):  # once per process: every session shares the script
    replies = json.loads(os.environ.get("QWENVL_TEST_REPLIES", "[]"))
    seconds = float(os.environ.get("QWENVL_TEST_TOKEN_SECONDS", "0"))
    runtime.scripted_for_tests = contextlib.ExitStack()  # kept with the model: the script lasts as long
    runtime.scripted_for_tests.enter_context(slow_replies(runtime, replies, seconds))
runpy.run_path(str(state.__file__).replace("state.py", "app.py"), run_name="__main__")
