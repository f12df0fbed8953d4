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


def test_an_answer_of_impossible_length_is_reread_as_the_likeliest_possible_one() -> None:
    mode = make_mode("CTC", Charset("abc"), load_settings(None), 4)
    # The best path runs "b" on through the third step, merging "abb" into "ab"; a blank there
    # (probability 0.45) spells "abb", the likeliest text of three symbols.
    probs = one_hot_steps([1, 2, 2, 2], 4)[0]
    probs[2] = [0.45, 0.0, 0.55, 0.0]
    assert mode.decode(probs[None])[0].text == "ab"
    answer = mode.reread(probs, [3, 3])
    assert answer is not None and answer.text == "abb" and [c for c, _ in answer.chars] == list("abb")
    assert answer.confidence == pytest.approx(0.9 ** 3 * 0.45)
    assert mode.reread(probs, [6, 6]) is None  # no text that long in the beam
    assert make_mode("ORDINARY", Charset("abc"), load_settings(None), 4).reread(probs, [3, 3]) is None


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


@pytest.mark.parametrize("top, right_share, direction", [
    (0.45, 0.97, "sharpen"),  # underconfident: answers at 0.45 are nearly always right
    (0.98, 0.60, "soften"),   # overconfident: answers at 0.98 are right 60 % of the time
])
def test_temperature_moves_confidence_towards_how_often_answers_are_right(
        top: float, right_share: float, direction: str) -> None:
    from capforge.calibration import fit_temperature, tempered

    mode = make_mode("NUM_CLASSES", Charset(list("abcdef"), blank=None), load_settings(None), 1)
    rng = np.random.default_rng(0)
    n = 400
    predicted = rng.integers(0, 6, n)
    probs = np.full((n, 6), (1 - top) / 5)
    probs[np.arange(n), predicted] = top
    truth = [mode.charset.symbol(int(p)) if rng.random() < right_share else mode.charset.symbol(int(p + 1) % 6)
             for p in predicted]
    fitted = fit_temperature(mode, probs, truth)
    t = fitted["temperature"]
    assert (t < 1) if direction == "sharpen" else (t > 1), fitted
    assert fitted["log_loss_after"] < fitted["log_loss_before"]
    calibrated = np.mean([a.confidence for a in mode.decode(tempered(probs, t))])
    assert abs(calibrated - right_share) < abs(top - right_share) and abs(calibrated - right_share) < 0.05
    assert [a.text for a in mode.decode(tempered(probs, t))] == [a.text for a in mode.decode(probs)]


def test_temperature_is_not_fitted_on_too_few_images() -> None:
    from capforge.calibration import MIN_IMAGES, fit_temperature

    mode = make_mode("NUM_CLASSES", Charset(list("ab"), blank=None), load_settings(None), 1)
    probs = np.tile([[0.6, 0.4]], (MIN_IMAGES - 1, 1))
    assert fit_temperature(mode, probs, ["a"] * (MIN_IMAGES - 1))["temperature"] == 1.0
