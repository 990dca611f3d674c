import pytest
import torch

from vaebench import Trainer, TrainerConfig, create_model
from vaebench.data import load_dataset
from vaebench.metrics.representation import (
    knn_accuracy,
    latent_codes,
    linear_probe_accuracy,
    representation_report,
)


def _codes(labels, noise, generator):
    onehot = torch.nn.functional.one_hot(labels, 10).float()
    return onehot + noise * torch.randn(len(labels), 10, generator=generator)


def test_codes_that_encode_the_labels_score_near_one():
    g = torch.Generator().manual_seed(0)
    y_train, y_test = torch.randint(0, 10, (1000,), generator=g), torch.randint(0, 10, (500,),
                                                                                generator=g)
    train, test = _codes(y_train, 0.05, g), _codes(y_test, 0.05, g)
    assert linear_probe_accuracy(train, y_train, test, y_test) > 0.99
    assert knn_accuracy(train, y_train, test, y_test, k=5) > 0.99


def test_random_codes_score_near_chance():
    g = torch.Generator().manual_seed(1)
    y_train, y_test = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (2000,),
                                                                                generator=g)
    train, test = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    assert 0.05 < linear_probe_accuracy(train, y_train, test, y_test) < 0.15
    assert 0.05 < knn_accuracy(train, y_train, test, y_test, k=5) < 0.15


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="3 labels for 4 codes"):
        knn_accuracy(torch.zeros(4, 2), [0, 1, 0], torch.zeros(2, 2), [0, 1])
    with pytest.raises(ValueError, match="k must lie"):
        knn_accuracy(torch.zeros(4, 2), [0, 1, 0, 1], torch.zeros(2, 2), [0, 1], k=9)
    with pytest.raises(ValueError, match="single class"):
        linear_probe_accuracy(torch.zeros(4, 2), [1] * 4, torch.zeros(2, 2), [0, 1])


@pytest.fixture(scope="module")
def trained_vae():
    return _train_vae()


def _train_vae():
    torch.manual_seed(0)
    model = create_model("vae", input_dim=(1, 8, 8), latent_dim=4, likelihood="bernoulli",
                         encoder_kwargs={"hidden": [64]}, decoder_kwargs={"hidden": [64]})
    x_train, _ = load_dataset("digits", "train")
    Trainer(model, TrainerConfig(epochs=8, batch_size=64, progress=False)).fit(x_train)
    return model


def test_latent_codes_are_posterior_means_in_batches(trained_vae):
    x, _ = load_dataset("digits", "test")
    trained_vae.train()
    codes = latent_codes(trained_vae, x, batch_size=50)
    assert trained_vae.training
    assert codes.shape == (len(x), 4) and codes.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(codes, trained_vae.encode(x).mean)


def test_representation_report_of_a_trained_vae(trained_vae):
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    report = representation_report(trained_vae, train, test, k=5)
    assert set(report) == {"linear_probe", "knn", "k", "latent_dim", "n_train", "n_test",
                           "majority"}
    assert report["latent_dim"] == 4 and report["n_test"] == len(test[0])
    assert report["majority"] < 0.15
    # a trained VAE's means carry the digit identity far above chance
    assert report["linear_probe"] > 0.5 and report["knn"] > 0.5
    with pytest.raises(ValueError, match="no labels"):
        representation_report(trained_vae, train[0], test)
