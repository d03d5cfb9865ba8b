"""benchmarks/evaluate_paired.py: paired A − B rows of parrot.evaluate outputs, by hand."""

import json

import pytest

from benchmarks.evaluate_paired import main, pair_rows
from parrot_base.cli import UsageError


def write_results(out, rows):
    """``out/results.jsonl`` with one line per (method, prompt): {method: {prompt: (r1 images, r2 images)}}."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for method, prompts in rows.items():
        for prompt, (r1, r2) in prompts.items():
            n = len(r1)
            lines.append({"method": method, "prompt": prompt, "category": "", "expanded_prompts": [prompt] * n,
                          "conditioned_prompt": prompt, "seeds": list(range(n)), "rewards": {"r1": r1, "r2": r2}})  # fmt: skip
    (out / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def outs(tmp_path):
    x, y = tmp_path / "x", tmp_path / "y"
    write_results(x, {"a0": {"p": ([2, 4], [0, 0]), "q": ([1, 1], [1, 1])}, "a1": {"p": ([1, 1], [0, 1]), "q": ([3, 3], [1, 1])}})
    write_results(y, {"b0": {"p": ([1, 1], [0, 0]), "q": ([1, 1], [0, 2])}, "b1": {"p": ([0, 0], [0, 1]), "q": ([2, 2], [1, 1])},
                      "odd": {"p": ([1, 1, 1], [0, 0, 0]), "q": ([1, 1, 1], [0, 0, 0])}})  # fmt: skip
    return x, y


def test_paired_rows_and_their_mean_over_pairs(outs, capsys):
    x, y = outs
    main(["--a", f"{x}:a0", f"{x}:a1", "--b", f"{y}:b0", f"{y}:b1"])
    lines = capsys.readouterr().out.splitlines()
    # pair 0, per-prompt means: r1 p 3 − 1 = 2, q 1 − 1 = 0 → 1 ± std(2, 0)/√2 = 1; r2 0 and 0.
    # Table-1: bounds over all four rows' images r1 [0, 4], r2 [0, 2]; per-prompt normalised average Δ
    # p (2/4 + 0)/2 = 0.25, q 0 → 0.125 ± 0.125. Pair 1: r1 +1 on both prompts, r2 0; Table-1 0.125 on both.
    assert lines[2] == f"| {x}:a0 − {y}:b0 | +1.0000 ± 1.0000 | +0.0000 ± 0.0000 | +0.1250 ± 0.1250 |"
    assert lines[3] == f"| {x}:a1 − {y}:b1 | +1.0000 ± 0.0000 | +0.0000 ± 0.0000 | +0.1250 ± 0.0000 |"
    assert lines[4] == "| mean ± SE over 2 pairs | **+1.0000 ± 0.0000** | **+0.0000 ± 0.0000** | **+0.1250 ± 0.0000** |"


def test_one_b_is_paired_with_every_a():
    assert pair_rows(["a", "b"], ["r"]) == [("a", "r"), ("b", "r")]
    assert pair_rows(["a", "b"], ["r", "s"]) == [("a", "r"), ("b", "s")]


def test_mistakes_are_refused_in_one_line(outs, tmp_path):
    x, y = outs
    with pytest.raises(UsageError, match="give as many B as A"):
        pair_rows(["a", "b", "c"], ["r", "s"])
    with pytest.raises(UsageError, match=r"no method 'c' in .* \(it has a0, a1\)"):
        main(["--a", f"{x}:c", "--b", f"{y}:b0"])
    with pytest.raises(UsageError, match="give OUT:METHOD"):
        main(["--a", "a0", "--b", f"{y}:b0"])
    with pytest.raises(UsageError, match="no results.jsonl of parrot.evaluate"):
        main(["--a", f"{tmp_path / 'none'}:a0", "--b", f"{y}:b0"])
    with pytest.raises(UsageError, match="cannot be paired"):  # 3 images per prompt against 2
        main(["--a", f"{x}:a0", "--b", f"{y}:odd"])
