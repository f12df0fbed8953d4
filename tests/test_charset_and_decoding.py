import numpy as np
import pytest

from capforge.data.charset import Charset
from capforge.errors import DataError
from capforge.modes import make_mode
from capforge.modes.ctc import ctc_beam_search, ctc_greedy
from capforge.settings import load_settings


def test_round_trip_and_blank() -> None:
    charset = Charset("0123456789abc")
    for text in ("", "0", "abc019", "cccc"):
        assert charset.decode(charset.encode(text)) == text
    assert charset.blank == 0 and charset.size == 14 and 0 not in charset.encode("0123456789abc")
    classes = Charset(["cat", "dog"], blank=None)
    assert classes.encode(["dog"]) == [1] and classes.decode([0]) == "cat" and classes.size == 2
    with pytest.raises(DataError, match="'z' is not in the charset"):
        charset.encode("z")
    with pytest.raises(DataError, match="empty"):
        Charset("")


def one_hot_steps(ids: list[int], size: int, p: float = 0.9) -> np.ndarray:
    probs = np.full((len(ids), size), (1 - p) / (size - 1))
    probs[np.arange(len(ids)), ids] = p
    return probs[None]


@pytest.mark.parametrize("steps, text", [
    ([1, 1, 0, 1, 2, 2, 0], "aab"),   # a blank separates a real repeat
    ([0, 0, 0, 0], ""),               # nothing but blanks
    ([3, 3, 3, 3], "c"),              # one symbol held for many steps
    ([0, 1, 2, 0, 3, 0], "abc"),
])
def test_ctc_decoding_of_hand_built_outputs(steps: list[int], text: str) -> None:
    mode = make_mode("CTC", Charset("abc"), load_settings(None), 4)
    probs = one_hot_steps(steps, 4)
    answer = mode.decode(probs)[0]
    assert answer.text == text
    assert [c for c, _ in answer.chars] == list(text)
    assert answer.confidence == pytest.approx(0.9 ** len(steps))
    ids, _ = ctc_beam_search(probs, blank=0)[0]
    assert Charset("abc").decode(ids) == text
    assert ctc_greedy(probs, 0)[0][0] == Charset("abc").encode(text)


def test_ordinary_drops_padding_and_num_classes_ranks() -> None:
    settings = load_settings(None)
    ordinary = make_mode("ORDINARY", Charset("xy"), settings, 4)
    answer = ordinary.decode(one_hot_steps([1, 2, 0, 0], 3))[0]
    assert answer.text == "xy" and answer.confidence == pytest.approx(0.9 ** 4)
    classes = make_mode("NUM_CLASSES", Charset(["cat", "dog", "owl"], None), settings, 1)
    answer = classes.decode(np.array([[0.2, 0.7, 0.1]]))[0]
    assert answer.text == "dog" and [t for t, _ in answer.top] == ["dog", "cat", "owl"]


def test_beam_search_decoder_is_selectable() -> None:
    # Greedy reads "a" (blank wins each step); summed over paths, "b" is the likelier text.
    probs = np.array([[[0.4, 0.0, 0.3, 0.3], [0.4, 0.0, 0.3, 0.3]]])
    probs[0, :, 1] = 0.0
    greedy = make_mode("CTC", Charset("abc"), load_settings(None), 4)
    beam = make_mode("CTC", Charset("abc"), load_settings(None, ["CTC_DECODER=beam"]), 4)
    assert greedy.decode(probs)[0].text == ""
    answer = beam.decode(probs)[0]
    assert answer.text in ("b", "c") and answer.confidence > 0.4 * 0.4
