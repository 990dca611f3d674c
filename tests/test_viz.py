import numpy as np
import pytest
import torch
from PIL import Image

from vaebench import viz


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    viz.pyplot().close("all")


def _images(n, seed=0):
    """n distinct 1 x 4 x 4 images with values k / 255 (exact in the uint8 grid)."""
    levels = torch.randint(0, 256, (n, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
    return levels.float() / 255


def _bands(figure):
    """(label, grid array) of each band of an image-rows figure, top to bottom."""
    return [(ax.get_ylabel(), np.asarray(ax.images[0].get_array())) for ax in figure.axes]


def test_reconstructions_are_labelled_and_each_image_shown_once():
    originals = _images(3)
    reconstructions = 1 - originals
    bands = _bands(viz.reconstructions_figure(originals, reconstructions, ncol=8))
    assert [label for label, _ in bands] == ["original", "reconstruction"]
    # three tiles wide: no repeated or blank tiles fill the line up to ncol
    assert np.array_equal(bands[0][1], viz.image_grid(originals, ncol=3))
    assert np.array_equal(bands[1][1], viz.image_grid(reconstructions, ncol=3))


def test_reconstructions_alternate_originals_and_their_reconstructions():
    originals = _images(10)
    bands = _bands(viz.reconstructions_figure(originals, 1 - originals, ncol=4))
    assert [label for label, _ in bands] == ["original", "reconstruction"] * 3
    for line, start in enumerate((0, 4, 8)):
        block = slice(start, start + 4)
        assert np.array_equal(bands[2 * line][1], viz.image_grid(originals[block], ncol=4))
        assert np.array_equal(bands[2 * line + 1][1],
                              viz.image_grid(1 - originals[block], ncol=4))


def test_save_reconstructions_writes_a_png(tmp_path):
    originals = _images(8)
    path = viz.save_reconstructions(originals, originals, tmp_path / "sub" / "r.png")
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.width > 300 and picture.height > 100


def _record(epoch, **values):
    return {"epoch": epoch, "lr": 1e-3, "seconds": 0.5, **values}


VQ_HISTORY = [_record(1, train_loss=712.0, train_recon=700.0, train_commitment=12.0,
                      train_usage=0.4, train_usage_1=0.3, train_perplexity=31.0,
                      eval_loss=720.0, eval_recon=707.0, eval_commitment=13.0)]


def _lines(figure):
    return {ax.get_title(): sorted(line.get_label() for line in ax.get_lines())
            for ax in figure.axes}


def test_loss_curve_puts_statistics_apart_from_the_nats():
    assert _lines(viz.loss_curve_figure(VQ_HISTORY)) == {
        "loss (nats per sample)": ["eval loss", "train loss"],
        "terms (nats per sample)": ["eval commitment", "eval recon", "train commitment",
                                    "train recon"],
        "usage (training)": ["train usage", "train usage_1"],
        "perplexity (training)": ["train perplexity"],
    }


def test_a_train_only_history_plots_every_entry_as_a_term():
    history = [_record(e, train_loss=5.0 - e, train_kl=1.0) for e in (1, 2)]
    assert _lines(viz.loss_curve_figure(history)) == {
        "loss (nats per sample)": ["train loss"], "terms (nats per sample)": ["train kl"]}


@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_epoch_ticks_are_whole_numbers(epochs):
    history = [{**VQ_HISTORY[0], "epoch": e} for e in range(1, epochs + 1)]
    figure = viz.loss_curve_figure(history)
    figure.canvas.draw()
    for ax in figure.axes:
        low, high = ax.get_xlim()
        shown = [tick for tick in ax.get_xticks() if low <= tick <= high]
        assert shown and all(float(tick).is_integer() for tick in shown), shown


def test_save_loss_curve_writes_a_png(tmp_path):
    path = viz.save_loss_curve(VQ_HISTORY, tmp_path / "loss.png")
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.width > picture.height
