import json

import pytest

from captioner.__main__ import main


def test_caption_folder_reports_bad_file_and_captions_the_rest(tmp_path, synthetic_data, tiny_model_dir, capsys):
    root, truth = synthetic_data
    folder = tmp_path / "photos"
    folder.mkdir()
    names = sorted(truth)[:3]
    for n in names:
        (folder / n).write_bytes((root / "Images" / n).read_bytes())
    (folder / "broken.jpg").write_text("this is not a photo")
    status = main(["caption", str(folder), "--model", str(tiny_model_dir), "--json", "--beam-size", "2"])
    out = capsys.readouterr()
    assert status == 1
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert len(rows) == 4
    bad = [r for r in rows if "error" in r]
    assert len(bad) == 1 and bad[0]["image"].endswith("broken.jpg") and "not a photo" in bad[0]["error"]
    good = {r["image"].split("/")[-1]: r for r in rows if "caption" in r}
    assert {n: good[n]["caption"] for n in names} == {n: truth[n] for n in names}
    assert all(isinstance(r["score"], float) and r["hedged"].endswith(".") and r["kind"] == "photo"
               for r in good.values())
    assert "broken.jpg" in out.err


def test_caption_plain_text_and_success_status(synthetic_data, tiny_model_dir, capsys):
    root, truth = synthetic_data
    name = sorted(truth)[0]
    assert main(["caption", str(root / "Images" / name), "--model", str(tiny_model_dir)]) == 0
    assert capsys.readouterr().out.strip().endswith(truth[name])


def test_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["caption", "x.jpg", "--model", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_evaluate_prints_the_bleu_table(tmp_path, synthetic_data, tiny_model_dir, capsys):
    root, _ = synthetic_data
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data-dir", str(root), "--split", "test",
                 "--beam-sizes", "1,3", "--cache-dir", str(tmp_path), "--quiet", "--json"]) == 0
    out = capsys.readouterr().out
    assert "| beam | BLEU1 | BLEU2 | BLEU3 | BLEU4 |" in out
    table = json.loads(out[out.index("{"):])
    assert table["1"]["bleu4"] > 0.9 and table["1"]["photos"] == 6


def test_attention_writes_one_image_per_photo(tmp_path, synthetic_data, tiny_model_dir, capsys):
    from PIL import Image

    root, truth = synthetic_data
    name = sorted(truth)[0]
    status = main(["attention", str(root / "Images" / name), "--model", str(tiny_model_dir), "--out",
                   str(tmp_path / "maps")])
    assert status == 0
    out = tmp_path / "maps" / (name.rsplit(".", 1)[0] + ".jpg")
    assert capsys.readouterr().out.strip() == f"{out}\t{truth[name]}"
    width, height = Image.open(out).size
    assert width > 160 and height > 160  # the photo and a panel per word


def test_train_offers_every_decoder_and_encoder_and_records_the_choice():
    import sys
    from pathlib import Path

    from captioner.encoder import ENCODERS
    from captioner.model import DECODERS

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import train

    for kind in DECODERS:
        assert train.parse_args(["--data-dir", "x", "--decoder", kind]).decoder == kind
    for kind in ENCODERS:
        assert train.parse_args(["--data-dir", "x", "--encoder", kind]).encoder == kind
    with pytest.raises(SystemExit):
        train.parse_args(["--data-dir", "x", "--decoder", "transformer"])
