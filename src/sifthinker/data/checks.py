"""Great Expectations suite over the SIF record table (docs/architecture.md, "Record schema").

The records are flattened by :func:`sifthinker.data.table.records_table` into one row per record with
derived columns (trace validity, box-set comparison, file existence, category share, ...); the suite
``sif_records`` states every rule as a stock GX 1.x expectation over those columns and is validated in an
*ephemeral* context (in-memory stores, analytics and progress bars off: nothing is written to disk).

Category balance: each row carries ``category_balance = share of its category x number of categories``
(1.0 = a perfectly even split) and the suite expects it in ``[1 - tol, 1 + tol]``, i.e. every category's
share within ``(1 +- tol) / k``. This per-row column is equivalent to a between-expectation on a derived
per-category count table but keeps the whole check to *one* GX validation run (each run costs fixed
overhead) and lets the tolerance live in the suite rather than in the data. Categories are taken from the
data, so a category missing entirely cannot be detected here (the build manifest is the place for that).

Per-source expectations (GX ``row_condition``, so one suite serves every source and a mix of them): the
source is known; built traces end exactly on the GT boxes, imported SIF-50K traces (written by a VLM) at
least near them (IoU_h >= 0.5); synthetic categories are the generator's and balanced; Visual-CoT has no
text subsets; TallyQA records are counting questions with a whole-number answer. Across the whole
dataset, ids are unique and no source item (source image and question) appears twice, e.g. in two shards.

``python -m sifthinker.data.checks DIR`` validates ``DIR/records.json`` and exits 1 on failure.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sifthinker.config.data_config import DATA_SOURCES
from sifthinker.data.table import REQUIRED_FIELDS, STRING_FIELDS, records_table

if TYPE_CHECKING:
    import great_expectations as gx

__all__ = [
    "SPLITS",
    "SUITE_NAME",
    "CheckResult",
    "DataValidationError",
    "SplitsCheck",
    "assert_valid",
    "build_suite",
    "check_dataset",
    "check_records",
    "records_table",
    "validate_splits",
]

SUITE_NAME = "sif_records"
SPLITS = ("train", "eval", "test")
N_EXAMPLES = 5
# For these columns a failure line also shows a more telling column of the offending rows.
_DETAIL = {
    "trace_valid": ("trace_problems",),
    "last_area_matches_gt": ("last_area", "gt_boxes"),
    "first_area_is_full_image": ("first_area",),
    "category_balance": ("category", "category_share"),
    "image_exists": ("image",),
    "depth_image_exists": ("depth_image",),
    "depth_map_exists": ("depth_map",),
    "images_exist": ("images",),
    "id": ("shard",),
    "dup_key": ("shard",),
    "last_area_iou": ("last_area", "gt_boxes"),
}
# Visual-CoT's text and document subsets (method spec, section 2): never in a build.
VISCOT_TEXT_SUBSETS = ["docvqa", "dude", "textvqa", "sroie", "infographicsvqa", "textcap"]
SYNTHETIC_CATEGORIES = ["depth", "position", "counting", "existence", "size", "attribute"]


@dataclass
class CheckResult:
    """Outcome of the suite: ``failures`` has one readable line per failed expectation."""

    success: bool
    failures: list[str] = field(default_factory=list)
    checked: int = 0  # expectations evaluated (0 when the records could not even be read)

    def __bool__(self) -> bool:
        return self.success


class DataValidationError(Exception):
    """Raised by :func:`assert_valid`; the message lists every failed expectation."""

    def __init__(self, result: CheckResult, where: str = "records"):
        self.result = result
        lines = "\n".join(f"  - {f}" for f in result.failures)
        super().__init__(f"{where}: {len(result.failures)} data expectation(s) failed:\n{lines}")


def build_suite(balance_tolerance: float = 0.25) -> gx.ExpectationSuite:
    """The ``sif_records`` suite; each expectation carries ``meta["check"]``, the name used in messages."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    if not 0 <= balance_tolerance:
        raise ValueError(f"balance_tolerance must be >= 0, got {balance_tolerance}")
    _batch_definition()  # GX 1.x wants an active context before a suite can be built
    suite = gx.ExpectationSuite(name=SUITE_NAME)

    def add(check: str, exp: Any) -> None:
        exp.meta = {"check": check}
        suite.add_expectation(exp)

    def where(source: str, negate: bool = False) -> dict[str, Any]:
        col = Column("source")
        return {"row_condition": (col != source) if negate else (col == source)}

    add("non_empty", gxe.ExpectTableRowCountToBeBetween(min_value=1))
    for f in REQUIRED_FIELDS:
        add(f"required_{f}", gxe.ExpectColumnValuesToNotBeNull(column=f))
    for f in STRING_FIELDS:
        add(f"nonempty_{f}", gxe.ExpectColumnValueLengthsToBeBetween(column=f, min_value=1))
    add("box_frame_norm", gxe.ExpectColumnValuesToBeInSet(column="box_frame", value_set=["norm"]))
    add("ids_unique", gxe.ExpectColumnValuesToBeUnique(column="id"))
    add("split_known", gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)))
    add("source_known", gxe.ExpectColumnValuesToBeInSet(column="source", value_set=list(DATA_SOURCES)))
    add("no_duplicate_items", gxe.ExpectColumnValuesToBeUnique(column="dup_key"))

    def true(check: str, column: str) -> None:
        add(check, gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True]))

    def unit(check: str, column: str) -> None:
        add(check, gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0.0, max_value=1.0))

    # GT boxes
    add("gt_boxes_present", gxe.ExpectColumnValuesToBeBetween(column="n_gt_boxes", min_value=1))
    true("gt_boxes_wellformed", "gt_boxes_wellformed")
    unit("gt_boxes_in_unit_min", "gt_min_coord")
    unit("gt_boxes_in_unit_max", "gt_max_coord")
    true("gt_x2_gt_x1", "gt_x2_gt_x1")
    true("gt_y2_gt_y1", "gt_y2_gt_y1")
    true("gt_rounded_3dp", "gt_rounded")
    # assistant trace
    true("trace_valid", "trace_valid")
    unit("trace_depth_in_unit_min", "trace_min_depth")
    unit("trace_depth_in_unit_max", "trace_max_depth")
    true("first_area_full_image", "first_area_is_full_image")
    add("last_area_matches_gt", gxe.ExpectColumnValuesToBeInSet(column="last_area_matches_gt", value_set=[True],
                                                                **where("sif50k", negate=True)))
    add("sif50k_last_area_near_gt", gxe.ExpectColumnValuesToBeBetween(column="last_area_iou", min_value=0.5,
                                                                      **where("sif50k")))
    # files
    for f in ("image", "depth_image", "depth_map", "images"):
        true(f"{f}_exists", f"{f}_exist" if f == "images" else f"{f}_exists")
    true("paths_relative", "paths_relative")
    # per source
    add("synthetic_categories", gxe.ExpectColumnValuesToBeInSet(column="category", value_set=SYNTHETIC_CATEGORIES,
                                                                **where("synthetic")))
    add("viscot_no_text_subsets", gxe.ExpectColumnValuesToNotBeInSet(column="category",
                                                                     value_set=VISCOT_TEXT_SUBSETS, **where("viscot")))
    add("tallyqa_counting", gxe.ExpectColumnValuesToBeInSet(column="category", value_set=["counting"],
                                                            **where("tallyqa")))
    add("tallyqa_count_answers", gxe.ExpectColumnValuesToBeInSet(column="response_is_count", value_set=[True],
                                                                 **where("tallyqa")))
    # balance: the generator balances its categories; real sources' categories are what they are
    add("category_balance", gxe.ExpectColumnValuesToBeBetween(
        column="category_balance", min_value=1.0 - balance_tolerance, max_value=1.0 + balance_tolerance,
        **where("synthetic")))
    return suite


@lru_cache(maxsize=1)
def _batch_definition() -> Any:
    """One ephemeral context (in-memory stores) per process, with a whole-dataframe batch definition."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas("sif").add_dataframe_asset("records")
    return asset.add_batch_definition_whole_dataframe("all_records")


@lru_cache(maxsize=8)
def _suite(balance_tolerance: float) -> gx.ExpectationSuite:
    return build_suite(balance_tolerance)


def _show(v: Any, limit: int = 160) -> str:
    s = repr(v.item() if hasattr(v, "item") else v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _describe(res: Any, table: pd.DataFrame) -> str:
    """One line for a failed expectation result: check name, expectation, column, offending examples."""
    cfg = res.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "condition_parser")}
    column = kwargs.pop("column", None)
    cond = kwargs.pop("row_condition", None)
    if isinstance(cond, dict) and isinstance(cond.get("column"), dict):  # a GX Condition, serialised
        cond = f'{cond["column"].get("name")} {cond.get("operator")} "{cond.get("parameter")}"'
    name = (cfg.meta or {}).get("check", cfg.type)
    head = f"{name}: {cfg.type}({'column=' + column if column else ''}"
    head += "".join(f", {k}={v}" for k, v in kwargs.items()) + ")" + (f" where {cond}" if cond else "")
    if res.exception_info and res.exception_info.get("raised_exception"):
        return f"{head} raised: {res.exception_info.get('exception_message')}"
    r = res.result or {}
    if "unexpected_count" not in r:
        return f"{head} observed {r.get('observed_value')!r}"
    examples = []
    details = _DETAIL.get(column or "", ())
    for ex in r.get("partial_unexpected_index_list") or []:
        rid = ex.get("id")
        part = f"id={rid!r}"
        if column != "id" and column in ex:
            part += f" {column}={_show(ex[column])}"
        if details and rid is not None:
            match = table.loc[table["id"] == rid, list(details)]
            if len(match):
                part += "".join(f" {d}={_show(match.iloc[0][d])}" for d in details)
        examples.append(part)
    if not examples:  # no index list: fall back to the values
        examples = [_show(v) for v in r.get("partial_unexpected_list") or []]
    line = f"{head}: {r['unexpected_count']} of {r.get('element_count')} rows unexpected"
    return line + (f"; e.g. {'; '.join(examples[:N_EXAMPLES])}" if examples else "")


def check_table(table: pd.DataFrame, balance_tolerance: float = 0.25) -> CheckResult:
    """Validate an already flattened record table (see :func:`records_table`) with one GX run."""
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": table})
    fmt = {"result_format": "SUMMARY", "unexpected_index_column_names": ["id"],
           "partial_unexpected_count": N_EXAMPLES}
    out = batch.validate(_suite(float(balance_tolerance)), result_format=fmt)
    failures = [_describe(r, table) for r in out.results if not r.success]
    return CheckResult(success=bool(out.success) and not failures, failures=failures, checked=len(out.results))


def check_records(records: list[dict], root: Path | str, balance_tolerance: float = 0.25) -> CheckResult:
    """Run the suite over ``records`` whose file paths are relative to ``root``."""
    if not isinstance(records, list):
        return CheckResult(False, [f"records: expected a list of records, got {type(records).__name__}"])
    return check_table(records_table(records, Path(root)), balance_tolerance)


def _load(directory: Path) -> list | CheckResult:
    path = directory / "records.json"
    if not path.is_file():
        return CheckResult(False, [f"{path}: missing"])
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return CheckResult(False, [f"{path}: not valid JSON ({exc})"])
    if not isinstance(records, list):
        return CheckResult(False, [f"{path}: expected a JSON list of records, got {type(records).__name__}"])
    return records


def check_dataset(directory: Path | str, balance_tolerance: float = 0.25) -> CheckResult:
    """Run the suite over ``directory/records.json`` (paths in it are relative to ``directory``)."""
    directory = Path(directory)
    records = _load(directory)
    if isinstance(records, CheckResult):
        return records
    return check_records(records, directory, balance_tolerance)


def assert_valid(data: Path | str | list[dict], root: Path | str | None = None,
                 balance_tolerance: float = 0.25) -> CheckResult:
    """Check a dataset folder (or a list of records with their ``root``); raise DataValidationError on failure."""
    if isinstance(data, list):
        if root is None:
            raise TypeError("assert_valid(records, root): root is required with a list of records")
        result, where = check_records(data, root, balance_tolerance), f"records under {root}"
    else:
        result, where = check_dataset(data, balance_tolerance), str(data)
    if not result.success:
        raise DataValidationError(result, where)
    return result


@dataclass
class SplitsCheck:
    """The suite over several splits (the validate_data stage): per-split results and a Markdown report."""

    results: dict[str, CheckResult]

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results.values())

    @property
    def markdown(self) -> str:
        lines = ["# Data validation", ""]
        for split, r in self.results.items():
            if r.success:
                lines.append(f"- **{split}**: all {r.checked} expectations met")
                continue
            lines.append(f"- **{split}**: {len(r.failures)} expectation(s) failed")
            lines += [f"  - {f}" for f in r.failures]
        return "\n".join(lines) + "\n"

    def headline(self) -> str:
        return ", ".join(f"{split} {r.checked - len(r.failures)}/{r.checked} expectations met"
                         for split, r in self.results.items())

    def raise_if_failed(self) -> None:
        """Raise :class:`DataValidationError` for the first failing split (its message lists every failure)."""
        for split, r in self.results.items():
            if not r.success:
                raise DataValidationError(r, f"{split} split")


def validate_splits(dirs: dict[str, Path | str], balance_tolerance: float = 0.25) -> SplitsCheck:
    """Run the suite over each split's dataset folder (``{"train": DIR, "eval": DIR}``)."""
    return SplitsCheck({split: check_dataset(d, balance_tolerance) for split, d in dirs.items()})


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sifthinker.data.checks DIR", file=sys.stderr)
        return 2
    result = check_dataset(args[0])
    print("ok" if result.success else "\n".join(result.failures))
    return 0 if result.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
