"""The tests' documents: drawn by ``qwenvl_agent.samples``, under the names the tests know them by."""

from qwenvl_agent.samples import png_bytes
from qwenvl_agent.samples import small_bar_chart as draw_bar_chart
from qwenvl_agent.samples import small_invoice as draw_invoice
from qwenvl_agent.samples import text_image as draw_text_image

__all__ = ["draw_bar_chart", "draw_invoice", "draw_text_image", "png_bytes"]
