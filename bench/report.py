"""report.py - what the tables of bench/compare.sh, bench/fanout.sh,
bench/tls.sh and bench/echo_deflate.sh share: reading the runs each script
wrote (one JSON object per line: the run's settings at the top level, the
load generator's figures under "r"), picking a figure over the runs of one
setting, and printing it.
Imported by the scripts' table code (PYTHONPATH=bench), never run.
"""

import json
import statistics


def read_runs(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _matches(run, setting):
    return all(run.get(k) == v for k, v in setting.items())


def figures(runs, key, **setting):
    """The figure KEY of every run with these settings that reported it."""
    return [r["r"][key] for r in runs
            if _matches(r, setting) and r["r"] and r["r"].get(key) is not None]


def failed(runs, **setting):
    """Runs with these settings that exited non-zero or reported nothing."""
    return sum(1 for r in runs if _matches(r, setting) and (r["rc"] != 0 or not r["r"]))


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def med_max(values):
    """Median and maximum: one disturbed run hides behind a median."""
    values = list(values)
    return (med(values), max(values)) if values else (None, None)


def fmt(value, digits=0):
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"
