"""tests/scripted_page.py with PocketSphinx's English model recognising the microphone's recordings (the page's
decoding and checks of the audio are the real ones), so a browser test can check the words it heard."""

from __future__ import annotations

import runpy
from pathlib import Path

from speech import pocketsphinx_transcribe

from qwenvl_agent.ui import voice

voice.transcribe = pocketsphinx_transcribe
runpy.run_path(str(Path(__file__).with_name("scripted_page.py")), run_name="__main__")
