import json

import pytest
from synthetic import make_dataset

from captioner.flickr8k import load_data, read_kaggle_captions
from captioner.vocab import SPECIALS, Vocabulary, tokenize


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A dog's ball, RED.") == ["a", "dog", "s", "ball", "red"]
    assert tokenize(" ... ") == []


@pytest.mark.parametrize("fmt", ["kaggle", "token"])
def test_both_caption_formats_with_quirks(tmp_path, fmt):
    truth = make_dataset(tmp_path, fmt)
    data = load_data(tmp_path)
    assert set(data.splits["train"]) == set(truth)
    assert data.captions[next(iter(truth))][0] == tokenize(truth[next(iter(truth))])
    assert all(len(data.captions[f]) == 5 for f in truth)
    # the caption without a photo (the real bogus entry, or a missing file) is skipped and counted
    assert data.skipped["captions without a photo"] == 1
    assert data.skipped["photos in no split"] == 1
    assert "5000_nosplit.jpg" not in data.splits["train"] + data.splits["dev"] + data.splits["test"]


def test_kaggle_caption_with_commas_splits_on_first_comma(tmp_path):
    (tmp_path / "captions.txt").write_text("image,caption\nx.jpg,A dog, a cat, and a ball .\n")
    assert read_kaggle_captions(tmp_path / "captions.txt") == [("x.jpg", "A dog, a cat, and a ball .")]


def test_seeded_split_without_split_files(tmp_path):
    make_dataset(tmp_path)
    for f in tmp_path.glob("Flickr_8k.*Images.txt"):
        f.unlink()
    a, b = load_data(tmp_path, seed=1), load_data(tmp_path, seed=1)
    assert a.splits == b.splits
    every = a.splits["train"] + a.splits["dev"] + a.splits["test"]
    assert len(every) == len(set(every)) == 13  # 12 shapes + the unlisted photo
    assert load_data(tmp_path, seed=2).splits != a.splits


def test_missing_folders_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="Images"):
        load_data(tmp_path)
    (tmp_path / "Images").mkdir()
    with pytest.raises(FileNotFoundError, match="captions.txt"):
        load_data(tmp_path)


def test_vocabulary_min_count_specials_and_round_trip(tmp_path):
    caps = [["a", "dog", "runs"], ["a", "dog"], ["a", "cat"]]
    vocab = Vocabulary.build(caps, min_count=2)
    assert vocab.words[:4] == list(SPECIALS)
    assert vocab.words[4:] == ["a", "dog"]
    assert vocab.encode(["a", "cat"]) == [vocab.index["a"], vocab.unk_id]
    assert vocab.decode([vocab.start_id, vocab.index["dog"], vocab.end_id, vocab.index["a"]]) == ["dog"]
    vocab.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text())["words"] == vocab.words
    assert Vocabulary.load(tmp_path / "vocab.json").words == vocab.words


def test_vocabulary_rejects_bad_files():
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError):
        Vocabulary(list(SPECIALS) + ["a", "a"])
