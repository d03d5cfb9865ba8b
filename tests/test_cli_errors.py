"""Every command answers a user's mistake with one line ``error: …`` and exit status 2 (parrot_base.cli.run_cli)."""

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from parrot_base.cli import configure_output, error_line, is_benchmark_script, run_cli

REPO = Path(__file__).resolve().parents[1]


def run(main, argv, capsys):
    """run_cli(main, argv) in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        run_cli(main, argv)
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(autouse=True)
def _restored(restore_output_settings):
    """run_cli changes process-wide output settings; conftest's fixture restores them."""


def bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sampling:\n  eta: [1,\n")
    return path


def test_each_command_answers_a_mistake_in_one_line(tmp_path, capsys):
    from parrot import best_of_n, generate, report, sample, train, wrong_lora
    from prompt_expander import sft
    from rewards import train_preference

    missing = tmp_path / "nothing-here"
    cases = [
        (train.main, ["--preset", "tiny", "--sampling.eta", "0"],
         "error: sampling: eta=0.0 must be > 0: training needs log-probs of stochastic steps"),
        (train.main, ["--preset", "tiny", "--rewards.names", "nope", "jpeg_compressibility"],
         "error: unknown reward 'nope'; known rewards: attribute_rules, caption_alignment, clip_score, hpsv2, imagereward, "
         "jpeg_compressibility, jpeg_incompressibility, laion_aesthetic, pickscore, preference, sentiment"),
        (train.main, ["--preset", "tiny", "--sampling.etaa", "1"],
         "error: unknown option --sampling.etaa; did you mean --sampling.eta? (--help lists every option)"),
        (best_of_n.main, ["--prompt", "a circle"],
         "error: the following arguments are required: --reward, --out (--help lists every option)"),
        (train.main, ["--preset", "tiny", "--config", str(bad_yaml(tmp_path))],
         f"error: --config {tmp_path / 'bad.yaml'}: not valid YAML at line 3, column 1: "
         "expected the node content, but found '<stream end>'"),
        (generate.main, ["--prompt", ""], "error: --prompt is empty: give the text to draw (or --prompts_file FILE)"),
        (generate.main, ["--prompt", "a circle", "--w1", "nan"], "error: w1: expected a finite number, got 'nan'"),
        (generate.main, ["--prompt", "a circle", "--guidance_scale", "inf"],
         "error: guidance_scale: expected a finite number, got 'inf'"),
        (generate.main, ["--prompts_file", str(missing)],
         f"error: prompts file {str(missing)!r} does not exist or is not a file"),
        (generate.main, ["--prompt", "a circle", "--model", str(missing), "--out", str(tmp_path / "g")],
         f"error: no diffusers pipeline directory at {str(missing)!r}"),
        (report.main, [str(missing)],
         f"error: run directory {str(missing)!r} does not exist; pass the --output_dir of a python -m parrot.train run"),
        (report.main, [], "error: give the run directory: python -m parrot.report RUN_DIR [--out PATH]"),
        (wrong_lora.main, ["--trigger", ""], "error: trigger is empty: give the trigger word, e.g. 'wrong'"),
        (sample.main, [], "error: no prompts: pass --prompt 'a red circle' 'a blue square'"),
        (train_preference.main, ["--freeze_fraction", "1.5"], "error: freeze_fraction=1.5 must lie in [0, 1]"),
        (train_preference.main, ["--data", f"{missing}.jsonl"], f"error: no pairs file at '{missing}.jsonl'"),
        (best_of_n.main, ["--model", "builtin:tiny", "--reward", "nope", "--prompt", "a circle", "--out", str(tmp_path / "b")],
         "error: unknown reward 'nope'; known rewards: attribute_rules, caption_alignment, clip_score, hpsv2, imagereward, "
         "jpeg_compressibility, jpeg_incompressibility, laion_aesthetic, pickscore, preference, sentiment"),
        (sft.main, ["--lora_rank", "-1"], "error: lora_rank=-1 must be >= 0 (0 = full fine-tuning)"),
    ]  # fmt: skip
    for main, argv, expected in cases:
        code, _, err = run(main, argv, capsys)
        assert code == 2, (main.__module__, argv, err)
        assert one_error_line(err) == expected, (main.__module__, argv)


def test_debug_shows_the_traceback_and_bugs_keep_theirs(capsys):
    def mistaken(argv):
        raise ValueError("x=1 must be 2")

    def buggy(argv):
        raise ZeroDivisionError("division by zero")

    assert run(mistaken, [], capsys)[0] == 2
    with pytest.raises(ValueError, match="x=1 must be 2"):
        run_cli(mistaken, ["--debug"])
    with pytest.raises(ZeroDivisionError):  # a bug is not a user's mistake: its traceback stays
        run_cli(buggy, [])
    seen = []
    with pytest.raises(SystemExit) as exited:
        run_cli(seen.append, ["--verbose", "--debug", "--x", "1"])
    assert exited.value.code == 0 and seen == [["--x", "1"]]  # the runner's options never reach main


def test_error_line_is_one_line_and_unquotes_key_errors():
    assert error_line(ValueError("bad\n  value\tthere")) == "error: bad value there"
    assert error_line(KeyError("no reward 'x'")) == "error: no reward 'x'"
    assert error_line(OSError()) == "error: OSError"


def test_quiet_output_hides_third_party_logs_and_warnings_unless_verbose(caplog):
    import transformers.utils.logging as transformers_logging

    caplog.set_level(logging.NOTSET)
    configure_output(verbose=False)
    logging.getLogger("accelerate.state").warning("third-party chatter")
    logging.getLogger("parrot.train").info("our progress")
    with warnings.catch_warnings(record=True) as shown:
        warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("fan_in_fan_out is set to False but the target module is `Conv1D`", UserWarning, stacklevel=1)
        warnings.warn("the reward is NaN", UserWarning, stacklevel=1)  # not a known third-party notice: kept
    assert [str(w.message) for w in shown] == ["the reward is NaN"]
    assert [r.getMessage() for r in caplog.records] == ["our progress"]
    assert transformers_logging.get_verbosity() == logging.ERROR
    assert not transformers_logging.is_progress_bar_enabled()
    configure_output(verbose=True)
    logging.getLogger("accelerate.state").warning("third-party chatter")
    assert caplog.records[-1].getMessage() == "third-party chatter"


def test_the_real_command_prints_one_line_and_nothing_else(tmp_path):
    """A fresh ``python -m``: nothing printed while importing (torchvision fallbacks), one error line, exit 2."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("TRANSFORMERS_VERBOSITY", None)
    done = subprocess.run([sys.executable, "-m", "parrot.generate", "--prompt", "   "], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "error: --prompt is empty: give the text to draw (or --prompts_file FILE)\n"


def test_a_benchmark_script_is_quiet_while_importing_too(tmp_path):
    """``python benchmarks/x.py`` is quieted like a command: no torchvision fallback notices, one error line."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("TRANSFORMERS_VERBOSITY", None)
    done = subprocess.run([sys.executable, "benchmarks/evaluate_paired.py", "--a", "nothing", "--b", f"{tmp_path}:b"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "error: 'nothing': give OUT:METHOD (a parrot.evaluate --out folder and one of its methods)\n"


def test_only_the_repositorys_benchmark_scripts_count_as_scripts():
    assert is_benchmark_script(str(REPO / "benchmarks" / "training_seeds.py"))
    assert not is_benchmark_script(str(REPO / "tests" / "test_cli_errors.py"))
    assert not is_benchmark_script(str(REPO / ".venv" / "bin" / "pytest"))
    assert not is_benchmark_script("-c") and not is_benchmark_script("")


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """``command | head``: no ``error: [Errno 32] Broken pipe`` line and no traceback, status 141 as after SIGPIPE."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    script = "from parrot_base.cli import run_cli\nrun_cli(lambda argv: [print('line', i) for i in range(200000)])"
    child = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout.readline() == "line 0\n"
    child.stdout.close()
    assert child.wait(timeout=120) == 141
    assert child.stderr.read() == ""
    child.stderr.close()
