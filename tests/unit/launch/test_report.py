"""The run report from a synthetic recording: valid HTML, one chart per quantity, the
plotted numbers equal to the differences of the recorded counts."""

import itertools
import json
import re
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser

import pytest

from qnemu.launch.plan import make_plan
from qnemu.launch.record import (
    TIMESERIES_FILE,
    histogram_quantile,
    lateness_buckets,
    make_sample,
)
from qnemu.launch.report import NothingRecordedError, load_samples, write_report
from qnemu.launch.rundir import write_json
from qnemu.topology import parse_topology

EPOCH_S = 1_700_000_000.0
TIME_SCALE = 2.0  # emulated seconds are twice as long as wall seconds
SPEC = {
    "name": "report-test",
    "time_scale": TIME_SCALE,
    "nodes": {"a": {"saes": ["a_app"]}, "b": {"saes": ["b_app"]}, "c": {}},
    "links": [
        {"nodes": ["a", "b"], "model": "depolarise", "fidelity": 0.9, "prob_success": 0.1},
        {"nodes": ["b", "c"], "model": "perfect"},
    ],
}
# Cumulative counts per wall second: pairs, delivered per end, mean fidelity per end, key.
AB_PAIRS = [0, 10, 30, 60, 100]
BC_PAIRS = [0, 5, 10, 15, 20]
AB_DELIVERED = [0, 10, 30, 60, 100]
AB_FIDELITY = [None, 0.9, 0.8, 0.85, 0.875]  # cumulative means at each end
KEY_BITS = [0, 0, 512, 1024, 2048]
SAMPLE_BITS = [0, 0, 100, 200, 400]
SAMPLE_ERRORS = [0, 0, 3, 8, 10]
LATENESS = [  # cumulative buckets (le, count) of the broker's histogram
    [(0.001, 0), (0.01, 0), (float("inf"), 0)],
    [(0.001, 50), (0.01, 100), (float("inf"), 100)],
    [(0.001, 50), (0.01, 150), (float("inf"), 200)],
    [(0.001, 50), (0.01, 150), (float("inf"), 200)],
    [(0.001, 60), (0.01, 160), (float("inf"), 210)],
]


def node_stats(i: int, peer_links: dict) -> dict:
    return {"memory": {"capacity": 4, "in_use": i % 3}, "active_requests": 1, **peer_links}


def stats_at(i: int) -> dict:
    ab = {"delivered": AB_DELIVERED[i], "mean_fidelity": AB_FIDELITY[i] or float("nan")}
    qkd = {"secret_key_bits": KEY_BITS[i], "sample_bits": SAMPLE_BITS[i]}
    qkd |= {"sample_errors": SAMPLE_ERRORS[i], "qber_last": None}
    bc = {"delivered": BC_PAIRS[i], "mean_fidelity": 1.0 if BC_PAIRS[i] else float("nan")}
    stats = {
        "broker": {},
        "station-a-b": {
            "attempts": 10 * AB_PAIRS[i],
            "pairs": AB_PAIRS[i],
            "expected_rate_hz": 100,
        },
        "station-b-c": {"attempts": BC_PAIRS[i], "pairs": BC_PAIRS[i]},
        "a": node_stats(i, {"links": {"b": ab}, "qkd": {"b": qkd}}),
        "b": node_stats(i, {"links": {"a": ab, "c": bc}, "qkd": {"a": qkd}}),
        "c": node_stats(i, {"links": {"b": bc}}),
    }
    if i == 3:  # station b-c did not answer this second
        del stats["station-b-c"]
    return stats


@pytest.fixture
def plan():
    return make_plan(parse_topology(SPEC, origin="test"), epoch_wall_s=EPOCH_S)


@pytest.fixture
def run_dir(tmp_path, plan):
    plan.write(tmp_path)
    lines, previous = [], {}
    for i in range(len(AB_PAIRS)):
        lateness = {"broker": LATENESS[i]}
        lines.append(make_sample(plan, stats_at(i), lateness, previous, EPOCH_S + 10.0 + i))
        previous = dict(lateness)
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (tmp_path / TIMESERIES_FILE).write_text(text + '{"t_s": 99, "cut sho')  # a crash mid-line
    write_json(tmp_path / "status.json", {"network": "report-test", "state": "stopped"})
    return tmp_path


class _Checker(HTMLParser):
    """Every opened non-void element is closed, in order."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr"})

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def series_of(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="qnemu-series">(.*?)</script>', page)
    return json.loads(found.group(1).replace("<\\/", "</"))


def test_samples_hold_cumulative_counts_and_gaps_for_silent_processes(run_dir):
    samples = load_samples(run_dir)
    assert len(samples) == 5  # the truncated last line is skipped
    assert [s["links"]["a-b"]["pairs"] for s in samples] == AB_PAIRS
    assert samples[3]["links"]["b-c"]["pairs"] is None
    assert samples[3]["links"]["b-c"]["station_up"] is False
    assert "station-b-c" not in samples[3]["up"]
    assert samples[2]["links"]["a-b"]["delivered"] == 2 * AB_DELIVERED[2]  # both ends count
    assert samples[0]["links"]["a-b"]["mean_fidelity"] is None  # NaN never reaches JSON
    assert samples[4]["qkd"]["a-b"]["secret_key_bits"] == KEY_BITS[4]
    assert "b-c" not in samples[4]["qkd"]  # c has no SAE: no QKD on b-c
    assert samples[1]["emulated_s"] == pytest.approx((10.0 + 1) / TIME_SCALE)
    assert samples[1]["nodes"]["b"] == {
        "memory_in_use": 1,
        "memory_capacity": 4,
        "active_requests": 1,
    }


def test_lateness_quantiles_are_per_interval_and_null_without_messages(run_dir):
    lateness = [s["lateness"]["broker"] for s in load_samples(run_dir)]
    assert lateness[0]["p50_s"] is None
    # 100 messages, 50 below 1 ms, 50 in (1 ms, 10 ms]: the median is the 1 ms bound,
    # p99 interpolates 98 % of the way through the second bucket.
    assert lateness[1]["p50_s"] == pytest.approx(0.001)
    assert lateness[1]["p99_s"] == pytest.approx(0.001 + 0.009 * 49 / 50)
    # Next second: 50 in (1 ms, 10 ms] and 50 above 10 ms (+Inf): p99 is the last bound.
    assert lateness[2]["p99_s"] == pytest.approx(0.01)
    assert lateness[3]["p99_s"] is None and lateness[3]["count"] == 200
    assert lateness[4]["p50_s"] == pytest.approx(0.0005)  # all 10 below 1 ms: half of it


def test_histogram_quantile_and_parsing_of_a_metrics_page():
    page = (
        "# HELP qnemu_message_lateness_seconds x\n# TYPE qnemu_message_lateness_seconds histogram\n"
        'qnemu_message_lateness_seconds_bucket{le="0.0"} 0.0\n'
        'qnemu_message_lateness_seconds_bucket{le="0.1"} 4.0\n'
        'qnemu_message_lateness_seconds_bucket{le="+Inf"} 4.0\n'
        "qnemu_message_lateness_seconds_count 4.0\nqnemu_message_lateness_seconds_sum 0.2\n"
    )
    buckets = lateness_buckets(page)
    assert buckets == [(0.0, 0.0), (0.1, 4.0), (float("inf"), 4.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.5, []) is None


def test_report_is_valid_html_with_one_chart_per_quantity(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    charts = re.findall(r'<svg class="chart".*?</svg>', page, flags=re.S)
    titles = [re.search(r"<title>(.*?)</title>", chart).group(1) for chart in charts]
    assert titles == [
        "Pair rate per link",
        "Fidelity of delivered pairs per link",
        "Secret key rate per QKD link",
        "QBER per QKD link",
        "Message lateness p99 per process",
        "Memory in use per node",
    ]
    for chart in charts:  # every chart is well-formed XML on its own
        ElementTree.fromstring(chart)
    names = re.findall(r'<g class="series" data-name="([^"]+)"', charts[0])
    assert names == ["a-b", "b-c"]
    # b-c's station was silent for a second: its line stops there instead of dropping to 0.
    b_c = re.search(r'data-name="b-c".*?</g>', charts[0], flags=re.S).group(0)
    assert b_c.count("<polyline") == 1 and b_c.count("<circle") == 0
    assert "report-test" in page and "stopped" in page


def test_report_numbers_are_the_differences_of_the_recorded_counts(run_dir):
    series = series_of(write_report(run_dir, run_dir / "out" / "r.html").read_text())
    dt_s = 1.0 / TIME_SCALE  # a wall second between samples, in emulated seconds
    times = [11.0, 12.0, 13.0, 14.0]
    rates = [value for _, value in series["pair_rate"]["a-b"]]
    assert [t for t, _ in series["pair_rate"]["a-b"]] == pytest.approx(times)
    expected = [(b - a) / dt_s for a, b in itertools.pairwise(AB_PAIRS)]
    assert rates == pytest.approx(expected)
    assert [value for _, value in series["pair_rate"]["b-c"]] == [10.0, 10.0, None, None]
    # Both ends count each pair: 2·(30·0.8 − 10·0.9) / 2·(30 − 10) = 0.75, and so on.
    fidelity = [value for _, value in series["fidelity"]["a-b"]]
    assert fidelity == pytest.approx([0.9, 0.75, 0.9, 0.9125])
    key = [value for _, value in series["key_rate"]["a-b"]]
    assert key == pytest.approx([0.0, 1024.0, 1024.0, 2048.0])
    qber = [value for _, value in series["qber"]["a-b"]]
    assert qber[0] is None and qber[1:] == pytest.approx([0.03, 0.05, 0.01])
    assert [v for _, v in series["memory"]["c"]] == [0, 1, 2, 0, 1]


def test_a_run_that_recorded_nothing_says_so(tmp_path, plan):
    plan.write(tmp_path)
    with pytest.raises(NothingRecordedError, match="recorded nothing"):
        write_report(tmp_path)
    (tmp_path / TIMESERIES_FILE).write_text("")
    with pytest.raises(NothingRecordedError, match="qnemu record"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="HTML only"):
        write_report(tmp_path, tmp_path / "report.png")
