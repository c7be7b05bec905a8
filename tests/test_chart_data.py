"""ChartData and parse_chart_json on replies written the way small models write them."""

from __future__ import annotations

import pytest

from qwenvl_agent.tools.chart_data import (
    CHART_INSTRUCTIONS,
    ChartData,
    ChartParseError,
    ChartSeries,
    chart_text,
    parse_chart_json,
)


def _table(chart: ChartData) -> list[tuple[str, list[float | None]]]:
    return [(series.name, series.values) for series in chart.series]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1.2M", 1_200_000),
        ("900K", 900_000),
        ("0.9k", 900),
        ("1,200", 1200),
        ("33.3%", 33.3),
        ("$4.50", 4.5),
        ("¥1,234.00", 1234),
        ("-$4.50", -4.5),
        ("4,50 €", 4.5),
        ("1.234.567", 1_234_567),
        ("2.5 billion", 2_500_000_000),
        ("1e5", 100_000),
        ("12 kg", 12),
        (7, 7),
        ("", None),
        ("N/A", None),
        ("-", None),
        (None, None),
        ("Q1", None),
        ("about ten", None),
    ],
)
def test_values_are_coerced_from_model_style_numbers(text, number):
    assert ChartSeries(name="s", values=[text]).values == [number]


def test_series_are_padded_to_the_categories_and_categories_to_the_longest_series():
    short = ChartSeries(name="short", values=[1])
    chart = ChartData(categories=["a", "b", "c"], series=[short, ChartSeries(name="long", values=[1, 2, 3, 4])])
    assert chart.categories == ["a", "b", "c", ""]
    assert _table(chart) == [("short", [1, None, None, None]), ("long", [1, 2, 3, 4])]
    assert short.values == [1]


def test_series_get_distinct_names():
    chart = ChartData(series=[{"values": [1]}, {"name": "x", "values": [2]}, {"name": "x", "values": [3]}])
    assert [series.name for series in chart.series] == ["series 1", "x", "x (2)"]


def test_json_in_a_fence_with_prose_around_it():
    reply = """Sure! Here is the data from the chart:

```json
{
  "chart_type": "bar chart",
  "title": "Quarterly revenue",
  "x_axis": "Quarter",
  "y_axis": "Revenue (USD)",
  "categories": ["Q1", "Q2", "Q3", "Q4"],
  "series": [{"name": "2023", "values": ["1.2M", "900K", "1,100,000", "N/A"]}],
  "answer": "Q1 had the highest revenue."
}
```

Let me know if you need anything else."""
    chart = parse_chart_json(reply)
    assert chart.chart_type == "bar"
    assert (chart.title, chart.x_axis, chart.y_axis) == ("Quarterly revenue", "Quarter", "Revenue (USD)")
    assert chart.categories == ["Q1", "Q2", "Q3", "Q4"]
    assert _table(chart) == [("2023", [1_200_000, 900_000, 1_100_000, None])]
    assert chart.answer == "Q1 had the highest revenue."


def test_plain_fence_and_trailing_text():
    reply = '```\n{"type": "line", "labels": [2019, 2020, 2021], "data": [3, 5, 8]}\n```\nThe trend is upward.'
    chart = parse_chart_json(reply)
    assert chart.chart_type == "line"
    assert chart.categories == ["2019", "2020", "2021"]
    assert _table(chart) == [("series 1", [3, 5, 8])]


def test_unfenced_json_followed_by_explanation():
    reply = (
        '{"chart_type": "pie", "categories": ["Rent", "Food"], "series": [{"name": "Share", '
        '"values": ["60%", "40%"]}]} This pie chart shows that rent {the biggest cost} dominates.'
    )
    chart = parse_chart_json(reply)
    assert chart.categories == ["Rent", "Food"]
    assert _table(chart) == [("Share", [60, 40])]


def test_single_quotes_trailing_commas_and_python_literals():
    reply = (
        "{'chart_type': 'bar', 'title': None, 'categories': ['North', 'South',], "
        "'series': [{'name': 'Units', 'values': [10, None,],},], 'stacked': False,}"
    )
    chart = parse_chart_json(reply)
    assert chart.title is None
    assert chart.categories == ["North", "South"]
    assert _table(chart) == [("Units", [10, None])]


def test_unquoted_keys_and_numbers_with_units():
    chart = parse_chart_json("{chart_type: bar, categories: ['A', 'B'], series: [{name: Sales, values: [1.2M, 3k]}]}")
    assert _table(chart) == [("Sales", [1_200_000, 3000])]


def test_label_value_dict():
    chart = parse_chart_json('{"chart_type": "pie", "data": {"Apple": "45%", "Samsung": "30%", "Other": "25%"}}')
    assert chart.categories == ["Apple", "Samsung", "Other"]
    assert _table(chart) == [("value", [45, 30, 25])]


def test_list_of_label_value_points():
    reply = '{"type": "bar", "data": [{"label": "Mon", "value": 3}, {"label": "Tue", "value": "4.5"}]}'
    chart = parse_chart_json(reply)
    assert chart.categories == ["Mon", "Tue"]
    assert _table(chart) == [("value", [3, 4.5])]


def test_records_with_several_measures_give_one_series_each():
    chart = parse_chart_json('[{"year": 2021, "sales": 5, "cost": 3}, {"year": 2022, "sales": 7, "cost": 4}]')
    assert chart.categories == ["2021", "2022"]
    assert _table(chart) == [("sales", [5, 7]), ("cost", [3, 4])]


def test_series_as_a_name_to_values_dict():
    chart = parse_chart_json('{"x_labels": ["Jan", "Feb"], "series": {"Tokyo": [5.2, 6.1], "Oslo": [-4, "-3.5"]}}')
    assert chart.categories == ["Jan", "Feb"]
    assert _table(chart) == [("Tokyo", [5.2, 6.1]), ("Oslo", [-4, -3.5])]


def test_series_as_a_name_to_points_dict():
    chart = parse_chart_json('{"series": {"Sales": {"Q1": 3, "Q2": "4k"}, "Cost": {"Q2": 1, "Q3": 2}}}')
    assert chart.categories == ["Q1", "Q2", "Q3"]
    assert _table(chart) == [("Sales", [3, 4000, None]), ("Cost", [None, 1, 2])]


def test_top_level_list_of_series():
    chart = parse_chart_json('[{"name": "A", "values": [1, 2]}, {"label": "B", "data": [3, 4]}]')
    assert _table(chart) == [("A", [1, 2]), ("B", [3, 4])]
    assert chart.categories == ["", ""]


def test_chart_js_shape():
    reply = (
        '{"type": "line", "data": {"labels": ["a", "b"], '
        '"datasets": [{"label": "visits", "data": [10, 20]}, {"label": "sales", "data": [1, 2]}]}}'
    )
    chart = parse_chart_json(reply)
    assert chart.categories == ["a", "b"]
    assert _table(chart) == [("visits", [10, 20]), ("sales", [1, 2])]


def test_series_of_points_supply_the_categories():
    chart = parse_chart_json('{"series": [{"name": "Temp", "data": [{"x": "Mon", "y": 20}, {"x": "Tue", "y": 22}]}]}')
    assert chart.categories == ["Mon", "Tue"]
    assert _table(chart) == [("Temp", [20, 22])]


def test_wrapped_chart_and_axis_objects():
    reply = '{"chart": {"type": "bar", "x_axis": {"title": "City", "labels": ["Rome", "Oslo"]}, "values": [1, 2]}}'
    chart = parse_chart_json(reply)
    assert chart.x_axis == "City"
    assert chart.categories == ["Rome", "Oslo"]
    assert _table(chart) == [("series 1", [1, 2])]


def test_reply_cut_off_at_the_token_limit():
    chart = parse_chart_json('```json\n{"categories": ["a", "b", "c"], "series": [{"name": "n", "values": [1, 2,')
    assert _table(chart) == [("n", [1, 2, None])]


def test_brackets_in_prose_before_the_json_are_skipped():
    chart = parse_chart_json('As shown in [1], the values are: {"categories": ["x"], "series": [[4]]}')
    assert _table(chart) == [("series 1", [4])]


@pytest.mark.parametrize(
    "reply",
    [
        "I'm sorry, I cannot read the values in this chart.",
        "The bars show {growth} over [time].",
        '{"foo": 1, "bar": "baz"}',
        "",
    ],
)
def test_replies_without_chart_json_raise_chart_parse_error(reply):
    with pytest.raises(ChartParseError, match="not chart JSON") as error:
        parse_chart_json(reply)
    assert isinstance(error.value, ValueError)
    assert repr(reply.strip()[:50]) in str(error.value)


def test_parse_error_quotes_only_the_start_of_a_long_reply():
    reply = "No chart here. " * 40
    with pytest.raises(ChartParseError) as error:
        parse_chart_json(reply)
    assert reply[:200].strip() in str(error.value) and reply not in str(error.value)


def test_to_markdown():
    chart = ChartData(
        chart_type="bar",
        title="Sales | 2023",
        x_axis="Region",
        y_axis="Units",
        categories=["North", "South"],
        series=[ChartSeries(name="Q1", values=[10, 2.5]), ChartSeries(name="Q2", values=[1_200_000, None])],
        answer="North sold most.",
    )
    assert chart.to_markdown() == (
        "**Sales | 2023**\n"
        "Type: bar · X axis: Region · Y axis: Units\n"
        "\n"
        "| Region | Q1 | Q2 |\n"
        "| --- | ---: | ---: |\n"
        "| North | 10 | 1200000 |\n"
        "| South | 2.5 |  |\n"
        "\n"
        "Answer: North sold most."
    )


def test_to_markdown_without_data_shows_type_and_answer():
    assert ChartData(answer="42").to_markdown() == "Type: unknown\n\nAnswer: 42"


def test_to_rows():
    chart = ChartData(categories=["a", "b"], series=[ChartSeries(name="s", values=[1, None])])
    assert chart.to_rows() == [{"category": "a", "s": 1}, {"category": "b", "s": None}]


def test_instructions_example_parses_as_written():
    example = CHART_INSTRUCTIONS[CHART_INSTRUCTIONS.index("type:") : CHART_INSTRUCTIONS.index("Rules:")]
    chart = parse_chart_json(example)
    assert (chart.chart_type, chart.title, chart.x_axis, chart.y_axis) == ("bar", "Sales by year", "Year", "Sales (USD)")
    assert chart.categories == ["2021", "2022"]
    assert _table(chart) == [("Online", [120, 135.5]), ("Store", [80, None])]
    assert chart.answer is None


COMPACT = """type: bar
title: Quarterly sales 2025
x: Quarter
y: Sales (million CNY)
Quarter | Sales 2025 | Target
Q1 | 0.8 | 1
Q2 | 0.9 | ?
Q3 | 1.2 | 1
Q4 | 1.0 | 1
answer: Q3 is the best quarter with 1.2 million CNY."""
SAME_AS_JSON = (
    '{"chart_type": "bar", "title": "Quarterly sales 2025", "x_axis": "Quarter", "y_axis": "Sales (million CNY)", '
    '"categories": ["Q1", "Q2", "Q3", "Q4"], "series": [{"name": "Sales 2025", "values": [0.8, 0.9, 1.2, 1.0]}, '
    '{"name": "Target", "values": [1, null, 1, 1]}], "answer": "Q3 is the best quarter with 1.2 million CNY."}'
)


def test_the_compact_form_parses_to_the_same_chart_as_its_json():
    assert parse_chart_json(COMPACT) == parse_chart_json(SAME_AS_JSON)


@pytest.mark.parametrize(
    "written",
    [
        "```\n" + COMPACT + "\n```",
        COMPACT.replace("Quarter | Sales 2025 | Target", "| Quarter | Sales 2025 | Target |\n| --- | ---: | ---: |"),
        COMPACT.replace("\n", "\n\n").replace("type: bar", "Chart type: bar"),
        "Here is the chart you asked for:\n" + COMPACT,
    ],
    ids=["fenced", "markdown table", "blank lines, other key", "prose first"],
)
def test_the_compact_form_as_small_models_vary_it(written):
    assert parse_chart_json(written) == parse_chart_json(SAME_AS_JSON)


def test_chart_text_is_the_compact_form_and_reads_back():
    chart = parse_chart_json(SAME_AS_JSON)
    assert chart_text(chart) == COMPACT.replace("| 1.0 |", "| 1 |")
    assert parse_chart_json(chart_text(chart)) == chart


def test_a_compact_reply_cut_off_before_its_table_is_an_error_naming_both_forms():
    with pytest.raises(ChartParseError, match="not chart JSON.*nor a chart table"):
        parse_chart_json("type: bar\ntitle: Sales")