"""Property: any prompt text gives images with finite rewards, or one ``error: …`` line (exit 2), never a traceback.

Over ``python -m parrot.generate`` and ``python -m parrot.train`` (in process, through run_cli, on
the tiny built-in world): empty, whitespace, control characters, right-to-left and CJK text,
emoji, 10,000 characters, and text hypothesis draws.
"""

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_parrot_train import quick_args

from parrot import generate, train
from parrot_base.cli import run_cli

EDGE_CASES = {
    "empty": "",
    "whitespace": " \t\n ",
    "control": "\x00\x07\x1b[31m a red circle \x7f",
    "right_to_left": "\u202eעיגול אדום\u202c دائرة حمراء",
    "cjk": "红色的圆 赤い丸 빨간 원",
    "emoji": "🔴🟦 a 🦜 on 🌈",
    "long": "a red circle on a blue square " * 340,  # 10,200 characters
}
PROMPTS = st.text(st.characters(codec="utf-8"), max_size=40)
SETTINGS = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


def run_command(main, argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        run_cli(main, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if exited.value.code != 0:
        assert exited.value.code == 2
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    return exited.value.code, err


def blank(prompt: str) -> bool:
    return not prompt.strip()


@SETTINGS
@given(prompt=PROMPTS)
@example(prompt=EDGE_CASES["empty"])
@example(prompt=EDGE_CASES["whitespace"])
@example(prompt=EDGE_CASES["control"])
@example(prompt=EDGE_CASES["right_to_left"])
@example(prompt=EDGE_CASES["cjk"])
@example(prompt=EDGE_CASES["emoji"])
@example(prompt=EDGE_CASES["long"])
def test_generate_gives_images_or_one_error_line(prompt, capsys, caplog, restore_output_settings):
    caplog.clear()
    with tempfile.TemporaryDirectory() as out:
        argv = [f"--prompt={prompt}", "--num_steps", "2", "--rewards", "jpeg_compressibility", "--out", out]
        code, err = run_command(generate.main, argv, capsys)
        if blank(prompt):
            assert (code, err.strip()) == (2, "error: --prompt is empty: give the text to draw (or --prompts_file FILE)")
            return
        assert code == 0, err
        rows = [json.loads(line) for line in (Path(out) / "results.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in rows] == [prompt]
        assert (Path(out) / rows[0]["image"]).is_file()
        assert all(math.isfinite(v) for r in rows for v in r["rewards"].values()) and rows[0]["rewards"]
        warnings = [r.getMessage() for r in caplog.records if r.name == "t2i.policy"]
        if prompt == EDGE_CASES["long"]:  # one warning: token count, context and the words dropped
            assert len(warnings) == 1
            assert "has 7822 tokens but the text encoder reads 77; dropped: 'rcle on a blue square a red" in warnings[0]
            assert warnings[0].endswith(" … (+2337 more words)'")
        else:
            assert warnings == []


@settings(max_examples=1, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(prompt=PROMPTS)
@example(prompt=EDGE_CASES["whitespace"])
@example(prompt=EDGE_CASES["control"] + EDGE_CASES["right_to_left"] + EDGE_CASES["cjk"] + EDGE_CASES["emoji"])
@example(prompt=EDGE_CASES["long"])
def test_train_gives_finite_rewards_or_one_error_line(prompt, capsys, restore_output_settings):
    with tempfile.TemporaryDirectory() as out:
        argv = quick_args(out, "--iterations", "1", "--sampling.prompts_per_process", "1", f"--prompts.train={prompt}")
        code, err = run_command(train.main, argv, capsys)
        if blank(prompt):
            assert (code, err.strip().splitlines()[-1]) == (2, "error: prompts.train[0] is an empty prompt")
            return
        assert code == 0, err
        record = json.loads((Path(out) / "samples" / "iteration-000001.json").read_text())
        assert set(record["original_prompts"]) == {prompt}
        assert all(math.isfinite(v) for row in record["rewards"] for v in row) and record["rewards"]
