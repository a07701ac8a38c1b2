import json
import shutil
from pathlib import Path

import pytest
from kfp.dsl import Dataset, Markdown

from components.conftest import artifact, io_types
from components.validate_data.component import validate_data
from sifthinker.data.checks import DataValidationError


def test_spec():
    ins, outs = io_types(validate_data)
    assert ins == {"recipe": "String", "train_data": "system.Dataset@0.0.1", "eval_data": "system.Dataset@0.0.1",
                   "pipeline_run": "String"}
    assert outs == {"report": "system.Markdown@0.0.1"}


def test_valid_data_passes_and_reports(built_data, recipe, tmp_path):
    train, evl = built_data
    report = artifact(Markdown, tmp_path / "report.md")
    validate_data.python_func(recipe=recipe, train_data=train, eval_data=evl, report=report)
    text = Path(report.path).read_text()
    # 54: the suite's size, counted by hand in tests/data/test_checks.py (an empty suite would report "all 0")
    assert text.splitlines()[2:] == ["- **train**: all 54 expectations met", "- **eval**: all 54 expectations met"]


def test_invalid_data_raises_after_writing_the_report(built_data, recipe, tmp_path):
    train, evl = built_data
    broken = tmp_path / "eval"
    shutil.copytree(evl.path, broken)
    first = json.loads((broken / "records.json").read_text())[0]
    (broken / first["image"]).unlink()
    report = artifact(Markdown, tmp_path / "report.md")
    with pytest.raises(DataValidationError, match="eval split: 2 data expectation"):
        validate_data.python_func(recipe=recipe, train_data=train, eval_data=artifact(Dataset, broken), report=report)
    text = Path(report.path).read_text()
    assert "- **train**: all 54 expectations met" in text
    assert "**eval**: 2 expectation(s) failed" in text and "image_exists" in text
