"""parrot.report: the page of a real 2-iteration run rendered in headless Chromium; missing parts; refusals."""

import base64
import html
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_parrot_train import quick_args

from parrot.report import curve_panel_tags, main, read_scalars, report_html, reward_curves_png, text, write_report
from parrot.train import ParrotTrainer
from parrot.train_config import load_train_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PNG_URI = "data:image/png;base64,"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A joint run (tiny expander, 2 rewards) of 2 iterations: event files, 2 sample grids, evaluation.json."""
    out = tmp_path_factory.mktemp("report") / "run"
    args = quick_args(out, "--mode", "joint", "--expander.model", "builtin:tiny_gpt2", "--iterations", "2",
                      "--checkpoint_every", "1", "--logging.log_with", "tensorboard", "--evaluation.enabled", "true",
                      "--evaluation.seeds", "0", "--expander.sampling.max_new_tokens", "6")  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: more threads only add contention
    try:
        ParrotTrainer(load_train_config(args)).train()
    finally:
        torch.set_num_threads(threads)
    return out


class Page(HTMLParser):
    """The parts of a DOM the tests look at: <img> sources and alts, table rows (cell texts, <tr> attributes)."""

    def __init__(self, dom: str):
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str]] = []
        self.rows: list[tuple[dict[str, str], list[str]]] = []
        self.tags: set[str] = set()
        self._cell: list[str] | None = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "tr":
            self.rows.append((dict(attrs), []))
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def rendered_dom(page: Path, profile: Path) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (make test installs Debian's chromium with apt-get where it can)")
def test_report_renders_curves_grids_tables_and_pareto_plot_in_chromium(run_dir, tmp_path):
    out = main([str(run_dir), "--out", str(tmp_path / "page" / "report.html")])
    assert out == tmp_path / "page" / "report.html"
    page = Page(rendered_dom(out, tmp_path / "profile"))
    assert not page.tags & {"script", "link", "iframe"}  # self-contained: nothing to fetch or run

    # images: the curves, the Pareto plot, one grid per checkpoint, all embedded PNGs
    grids = sorted((run_dir / "samples").glob("iteration-*.png"))
    assert [g.name for g in grids] == ["iteration-000001.png", "iteration-000002.png"]
    assert [i["alt"] for i in page.images] == ["training curves", "Pareto plot of held-out scores, before vs after",
                                               "samples of iteration 1", "samples of iteration 2"]  # fmt: skip
    assert all(i["src"].startswith(PNG_URI) for i in page.images)
    decoded = [base64.b64decode(i["src"][len(PNG_URI) :], validate=True) for i in page.images]
    for png in decoded:
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG"
            assert len(set(image.convert("RGB").getdata())) > 20  # a picture, not a blank
    assert decoded[2:] == [g.read_bytes() for g in grids]  # the grids byte for byte
    with Image.open(io.BytesIO(decoded[0])) as curves, Image.open(io.BytesIO(decoded[1])) as pareto:
        assert curves.size[0] == 3 * 420 and curves.size[1] >= 2 * 300  # 3 columns: 2 rewards + |P|, losses, ...
        assert pareto.size == (int(4.2 * 110), int(3.8 * 110))  # 2 rewards: one pair, one panel

    # the before/after table: one row per reward, the values of evaluation.json
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    names = evaluation["images"]["after"]["reward_names"]
    table = {attrs["data-reward"]: cells for attrs, cells in page.rows if "data-reward" in attrs}
    assert list(table) == names == ["jpeg_compressibility", "clip_score"]
    for k, name in enumerate(names):
        before, after = evaluation["before"][name], evaluation["after"][name]
        std = np.asarray(evaluation["images"]["after"]["scores"])[:, k].std(ddof=1)
        assert table[name] == [name, table[name][1], table[name][2], f"{after:.4f} ± {std:.4f}", f"{after - before:+.4f}"]
        assert table[name][1].startswith(f"{evaluation['plain_base'][name]:.4f} ± ")  # the plain base model's column
        assert table[name][2].startswith(f"{before:.4f} ± ")

    # prompts, expansions, rewards and P membership of every sample appear in the caption tables
    cells = [cells for _, cells in page.rows]
    for grid in grids:
        record = json.loads(grid.with_suffix(".json").read_text())
        shown = [row for row in cells if len(row) == 6 + len(names) and row[2] in record["original_prompts"]]
        per_image = zip(record["original_prompts"], record["expanded_prompts"], record["conditioning_prompts"],
                        record["rewards"], record["selected"])  # fmt: skip
        expected = [
            [str(i), f"{i // 2 + 1}, {i % 2 + 1}", c, html.unescape(text(e)), html.unescape(text(p)),
             *[f"{r:.4f}" for r in rewards], "yes" if chosen else "no"]
            for i, (c, e, p, rewards, chosen) in enumerate(per_image)
        ]  # fmt: skip
        assert all(row in shown for row in expected)
    held_out = {row[0] for row in cells if len(row) == 4 + len(names)}
    assert set(evaluation["images"]["after"]["prompts"]) <= held_out  # the per-image table


def test_curves_come_from_the_event_files(run_dir):
    scalars = read_scalars(run_dir)
    for iteration in (1, 2):
        record = json.loads((run_dir / "samples" / f"iteration-{iteration:06d}.json").read_text())
        rewards = torch.tensor(record["rewards"])
        for k, name in enumerate(record["reward_names"]):
            steps, means = scalars[f"reward/{name}/mean"]
            assert steps.tolist() == [1, 2]
            assert means[iteration - 1] == pytest.approx(float(rewards[:, k].mean()), rel=1e-5)
        steps, fraction = scalars["pareto/selected_fraction"]
        assert fraction[iteration - 1] == pytest.approx(sum(record["selected"]) / len(record["selected"]))
    assert {"t2i/loss", "t2i/kl", "t2i/grad_norm", "expander/loss"} <= set(scalars)


def test_a_held_out_curve_shares_its_rewards_panel():
    tags = ["reward/a/mean", "reward/a/std", "heldout/a/mean", "reward/b/mean", "heldout/b/mean", "t2i/loss", "pareto/selected_fraction"]
    assert curve_panel_tags(dict.fromkeys(tags)) == (["a", "b"], ["pareto/selected_fraction", "t2i/loss"])
    png = reward_curves_png({t: (np.array([0, 5]), np.array([1.0, 2.0])) for t in tags})
    with Image.open(io.BytesIO(png)) as figure:
        assert figure.size == (3 * 420, 2 * 300)  # 4 panels: a, b (each with its held-out line), |P|, loss


def test_a_resumed_run_keeps_the_latest_value_of_each_step(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for sub, points, start in (("first", [(1, 1.0), (2, 2.0)], 100.0), ("resumed", [(2, 5.0), (3, 6.0)], 200.0)):
        with SummaryWriter(str(tmp_path / sub)) as writer:
            for step, value in points:
                writer.add_scalar("t2i/loss", value, step, walltime=start + step)
    steps, values = read_scalars(tmp_path)["t2i/loss"]
    assert steps.tolist() == [1, 2, 3] and values.tolist() == [1.0, 5.0, 6.0]


def test_missing_parts_say_not_available(run_dir, tmp_path):
    partial = tmp_path / "partial"  # a run still going, logged with --logging.log_with none
    shutil.copytree(run_dir / "samples", partial / "samples")
    (partial / "samples" / "iteration-000002.json").unlink()
    page = report_html(partial)
    assert page.count("not available: ") == 5
    assert "not available: no TensorBoard event files" in page
    assert page.count(f"not available: no evaluation.json in {partial}: the run is still training") == 3
    assert "not available: iteration-000002.json is missing or unreadable" in page
    assert page.count(PNG_URI) == 2  # both grids still shown

    evaluation = json.loads((run_dir / "evaluation.json").read_text())  # a single-reward run: no Pareto plot
    for side in ("before", "after"):
        evaluation[side] = {"clip_score": evaluation[side]["clip_score"]}
        images = evaluation["images"][side]
        images["scores"] = [row[1:] for row in images["scores"]]
        images["reward_names"] = ["clip_score"]
    (partial / "evaluation.json").write_text(json.dumps(evaluation))
    page = write_report(partial).read_text()
    assert "not available: a Pareto plot needs at least 2 rewards; this run has [&#x27;clip_score&#x27;]" in page
    assert 'data-reward="clip_score"' in page and page.count(PNG_URI) == 2


def test_without_tensorboard_the_curves_come_from_curves_jsonl_and_the_table_has_the_plain_base(run_dir, tmp_path):
    bare = tmp_path / "bare"  # a run logged with --logging.log_with none
    bare.mkdir()
    for name in ("curves.jsonl", "evaluation.json"):
        shutil.copy(run_dir / name, bare / name)
    page = Page(report_html(bare))
    assert [i["alt"] for i in page.images][0] == "training curves"
    head = next(cells for attrs, cells in page.rows if cells and cells[0] == "reward")
    assert head == ["reward", "plain base", "before", "after", "Δ"]


def test_a_missing_or_empty_run_dir_is_refused_by_name(tmp_path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(FileNotFoundError, match=f"run directory '{missing}' does not exist"):
        report_html(missing)
    with pytest.raises(FileNotFoundError, match=f"run directory '{missing}' does not exist"):
        main([str(missing)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"'{tmp_path / 'empty'}' holds no run output"):
        report_html(tmp_path / "empty")
    assert not (tmp_path / "empty" / "report.html").exists()
