"""`promtool check metrics` without promtool: the text format parsed by
prometheus-client's own parser, then promtool's lint rules (client_golang's
testutil/promlint) applied to every metric family.

So the metrics tests need no Prometheus server package (Debian's `prometheus`,
which starts a daemon where systemd runs). tests/test_metrics.py checks this
checker against bad expositions, and against promtool itself where it is installed.

Rules, as promlint words them:
- every family has HELP text ("no help text");
- counters end in `_total`, other typed metrics do not;
- `_bucket` only on histograms, `_count`/`_sum` only on histograms and
  summaries, the `le` label only on histograms, `quantile` only on summaries;
- no type name in the metric name (`_counter`, `_gauge`, ...);
- no `:` in metric names; metric and label names in snake_case;
- base units (`seconds`, `bytes`, ...: not `milliseconds`, `kibibytes`, `bits`)
  and no abbreviated units (`_ms`, `_s`, `_mb`, ...).
Beyond promlint, what promtool's parser refuses: text that does not parse, a
family's HELP or TYPE given twice or after its samples, a family split in two,
the same series twice.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_UNITS = {
    "amperes": "amperes",
    "bytes": "bytes",
    "celsius": "celsius",
    "grams": "grams",
    "joules": "joules",
    "kelvin": "kelvin",
    "meters": "meters",
    "metres": "metres",
    "seconds": "seconds",
    "volts": "volts",
    "minutes": "seconds",
    "hours": "seconds",
    "days": "seconds",
    "weeks": "seconds",
    "kelvins": "kelvin",
    "fahrenheit": "celsius",
    "rankine": "celsius",
    "inches": "meters",
    "yards": "meters",
    "miles": "meters",
    "bits": "bytes",
    "calories": "joules",
    "pounds": "grams",
    "ounces": "grams",
}
_UNIT_PREFIXES = (
    "pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo",
    "kibi", "mega", "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi",
)  # fmt: skip
_UNIT_ABBREVIATIONS = (
    "s",
    "ms",
    "us",
    "ns",
    "sec",
    "b",
    "kb",
    "mb",
    "gb",
    "tb",
    "pb",
    "m",
    "h",
    "d",
)
# Type names (promlint's, from client_model; untyped is allowed in a name).
_TYPES = ("counter", "gauge", "summary", "histogram", "gauge_histogram")
_CAMEL = re.compile(r"[a-z][A-Z]")


def exposition_problems(text: str) -> list[str]:
    """What `promtool check metrics` would report about `text` ([] when it passes)."""
    problems = _structure(text)
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        return [*problems, f"does not parse: {exc}"]
    types = _declared_types(text)
    for family in families:
        # The parser drops a counter's `_total` from the family name: take the declared one.
        name = next((n for n in (family.name + "_total", family.name) if n in types), family.name)
        problems.extend(f"{name}: {p}" for p in _lint(name, types.get(name, "untyped"), family))
    return problems


def _declared_types(text: str) -> dict[str, str]:
    types: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[:2] == ["#", "TYPE"]:
            types[parts[2]] = parts[3]
    return types


def _structure(text: str) -> list[str]:
    """HELP and TYPE once per family, before its samples; a family's samples together."""
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    done: set[str] = set()  # families whose samples have ended
    current = ""
    series: set[str] = set()
    types = _declared_types(text)
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(maxsplit=3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                key = (parts[1], parts[2])
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > 1:
                    problems.append(f"{parts[2]}: second {parts[1]} line")
                if parts[2] in done or parts[2] == current:
                    problems.append(f"{parts[2]}: {parts[1]} after its samples")
            continue
        sample = re.split(r"[{\s]", line, maxsplit=1)[0]
        family = _family_of(sample, types)
        if family != current:
            if family in done:
                problems.append(f"{family}: its samples are not together")
            if current:
                done.add(current)
            current = family
        key = line.rsplit(maxsplit=1)[0] if "}" not in line else line[: line.rindex("}") + 1]
        if key in series:
            problems.append(f"{family}: series {key} twice")
        series.add(key)
    return problems


def _family_of(sample: str, types: dict[str, str]) -> str:
    """The declared family a sample belongs to (itself when none is declared)."""
    if sample in types:
        return sample
    for suffix in ("_total", "_created", "_bucket", "_sum", "_count"):
        if sample.endswith(suffix):
            base = sample[: -len(suffix)]
            for family in (base, base + "_total"):
                if family in types:
                    return family
    return sample


def _lint(name: str, kind: str, family: object) -> list[str]:
    problems: list[str] = []
    if not getattr(family, "documentation", ""):
        problems.append("no help text")
    has_total = name.endswith("_total")
    if kind == "counter" and not has_total:
        problems.append('counter metrics should have "_total" suffix')
    elif kind not in ("counter", "untyped") and has_total:
        problems.append('non-counter metrics should not have "_total" suffix')
    if kind != "untyped":
        if kind != "histogram" and name.endswith("_bucket"):
            problems.append('non-histogram metrics should not have "_bucket" suffix')
        for suffix in ("_count", "_sum"):
            if kind not in ("histogram", "summary") and name.endswith(suffix):
                problems.append(f'non-histogram and non-summary metrics should not have "{suffix}"')
        labels = {label for s in getattr(family, "samples", ()) for label in s.labels}
        if kind != "histogram" and "le" in labels:
            problems.append('non-histogram metrics should not have "le" label')
        if kind != "summary" and "quantile" in labels:
            problems.append('non-summary metrics should not have "quantile" label')
    lower = name.lower()
    for typename in _TYPES:
        if f"_{typename}_" in lower or lower.endswith(f"_{typename}"):
            problems.append(f"metric name should not include type '{typename}'")
    if ":" in name:
        problems.append("metric names should not contain ':'")
    if _CAMEL.search(name):
        problems.append("metric names should be written in 'snake_case' not 'camelCase'")
    labels = {label for s in getattr(family, "samples", ()) for label in s.labels}
    if any(_CAMEL.search(label) for label in labels):
        problems.append("label names should be written in 'snake_case' not 'camelCase'")
    unit = _unit(name)
    if unit is not None and unit[0] != unit[1]:
        problems.append(f'use base unit "{unit[1]}" instead of "{unit[0]}"')
    for abbreviation in _UNIT_ABBREVIATIONS:
        if f"_{abbreviation}_" in lower or lower.endswith(f"_{abbreviation}"):
            problems.append("metric names should not contain abbreviated units")
    return problems


def _unit(name: str) -> tuple[str, str] | None:
    """(unit, its base unit) of the first known unit among the name's words."""
    for word in name.split("_"):
        if word in _UNITS:
            return word, _UNITS[word]
        for prefix in _UNIT_PREFIXES:
            if word.startswith(prefix) and word[len(prefix) :] in _UNITS:
                return word, _UNITS[word[len(prefix) :]]
    return None
