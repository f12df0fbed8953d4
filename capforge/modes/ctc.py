"""CTC: width as the time axis, a bidirectional GRU (CTC_HEAD), CTC loss, any label length.

Greedy decoding takes the best symbol per step, merges repeats, then drops the blank; a
symbol's confidence is its best probability over the steps it spans, and the answer's
confidence is the product of the steps' best probabilities (the greedy path's probability).
An answer of a length no training label has is re-read from a prefix beam search (``reread``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from capforge.errors import SettingsError
from capforge.modes.answer_rules import ANSWER
from capforge.modes.base import SYNTHETIC, TEACHER, Mode, Prediction
from capforge.options import MODEL, Option

# Charsets this large (Chinese text) learn far faster at LARGE_CHARSET_LR and with the columns read
# one by one (CTC_HEAD = 'dense') within a budget, where small ones (100 characters, rkn6's 36
# symbols) lose at that rate; the bound sits between the measured sizes (bench/results/defaults.md,
# "Chinese text: the learning rate for a large charset", "batch size, augmentation and the
# output's view of the columns").
LARGE_CHARSET, LARGE_CHARSET_LR = 200, 8e-3
HEAD = Option("CTC_HEAD", "gru", str, "what reads the backbone's columns for the output: 'gru' (a bidirectional "
              "GRU, each character read with its neighbours) or 'dense' (each column on its own: cheaper epochs, "
              "and a charset of hundreds of symbols, such as Chinese, reads within a few epochs)", MODEL,
              choices=("gru", "dense"))
COLUMN_DROPOUT = 0.25  # share of the backbone's column features dropped while training


def ctc_greedy(probs: np.ndarray, blank: int) -> list[tuple[list[int], list[float], float]]:
    """Per row: (symbol ids, their confidences, path probability). Repeats merge, blanks drop.

    >>> p = np.eye(3)[[1, 1, 0, 1, 2, 2, 0]][None] * 0.9 + 0.1 / 3
    >>> ids, confs, _ = ctc_greedy(p, blank=0)[0]
    >>> ids
    [1, 1, 2]
    """
    best_ids, best_p = probs.argmax(-1), probs.max(-1)
    out = []
    for ids, ps in zip(best_ids, best_p):
        symbols: list[int] = []
        confs: list[float] = []
        previous = blank
        for i, p in zip(ids, ps):
            if i != blank and i == previous:
                confs[-1] = max(confs[-1], float(p))
            elif i != blank:
                symbols.append(int(i))
                confs.append(float(p))
            previous = i
        out.append((symbols, confs, float(np.exp(np.log(np.maximum(ps, 1e-12)).sum()))))
    return out


def ctc_prefix_beams(row: np.ndarray, blank: int, beam_width: int = 8) -> list[tuple[list[int], float]]:
    """Prefix beam search over one output [steps, classes]: the ``beam_width`` likeliest texts
    as (symbol ids, probability summed over every path that spells them), likeliest first."""
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (1.0, 0.0)}  # (p_blank, p_symbol)
    for step in row:
        candidates: dict[tuple[int, ...], list[float]] = {}
        best_symbols = [int(s) for s in np.argsort(-step)[:beam_width] if s != blank]
        for prefix, (pb, ps) in beams.items():
            total = pb + ps
            entry = candidates.setdefault(prefix, [0.0, 0.0])
            entry[0] += total * step[blank]
            if prefix:
                entry[1] += ps * step[prefix[-1]]
            for s in best_symbols:
                extended = candidates.setdefault(prefix + (s,), [0.0, 0.0])
                extended[1] += (pb if prefix and prefix[-1] == s else total) * step[s]
        ranked = sorted(candidates.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam_width]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return [(list(k), pb + ps) for k, (pb, ps) in sorted(beams.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))]


def ctc_beam_search(probs: np.ndarray, blank: int, beam_width: int = 8) -> list[tuple[list[int], float]]:
    """Prefix beam search per row: (best symbol ids, their probability)."""
    return [ctc_prefix_beams(row, blank, beam_width)[0] for row in probs]


# The least probability a re-read answer of a plausible length may have: the API shows
# confidences to 6 decimals, and an answer shown as 0 must not be "accepted".
LEAST_REREAD = 1e-6


class CTCMode(Mode):
    name = "CTC"
    learns_unlabelled = True
    length_capped = False  # any length: labels are padded to the longest
    options = (Option("CTC_DECODER", "greedy", str, "CTC decoding: 'greedy' (fast) or 'beam' (prefix beam "
                      "search, width 8)", MODEL, choices=("greedy", "beam")), HEAD, ANSWER, TEACHER, SYNTHETIC)
    serving_settings = ("ANSWER",)  # a rule changed after export applies when serving, no retraining

    @classmethod
    def suggest_training(cls, symbols: int) -> tuple[dict[str, Any], str]:
        if symbols < LARGE_CHARSET:
            return {}, ""
        head = {HEAD.name: "dense"} if HEAD in cls.options else {}
        return {"LR": LARGE_CHARSET_LR, **head}, (
            f"{symbols} symbols: a charset this large learns faster at LR = {LARGE_CHARSET_LR:g}"
            + (", its columns read one by one (CTC_HEAD = 'dense')" if head else "") + " (bench/results/defaults.md)")

    def sequence(self, features: Any) -> Any:
        """Backbone features [B, H, W, C] -> a sequence [B, W, H*C] along the width."""
        from keras import layers

        _, height, width, channels = features.shape
        x = layers.Permute((2, 1, 3))(features)
        return layers.Reshape((width, height * channels))(x)

    def head(self, features: Any) -> Any:
        """One bidirectional GRU straight on the backbone's columns, which it reads through
        COLUMN_DROPOUT: a dense bottleneck with dropout before two narrower GRUs left CTC on its
        all-blank plateau twice as long; without the dropout the GRU over-fitted a set of 3,400
        images (bench/results/defaults.md, "CTC head and time steps", "Dropout on the columns").
        CTC_HEAD = 'dense': the output reads each column itself, no GRU (a large charset's plateau
        is the GRU's)."""
        from keras import layers

        x = layers.Dropout(COLUMN_DROPOUT)(self.sequence(features))
        if self.settings.get(HEAD.name, HEAD.default) == "gru":
            x = layers.Bidirectional(layers.GRU(128, return_sequences=True))(x)
        return layers.Dense(self.charset.size, activation="softmax", name="probs")(x)

    def build(self, input_shape: tuple[int, int, int], backbone: Callable[[], Any]) -> Any:
        model = super().build(input_shape, backbone)
        if model.output.shape[1] < self.label_width:
            raise SettingsError(f"the model reads {model.output.shape[1]} steps along the width but labels "
                                f"have up to {self.label_width} characters; raise IMAGE_WIDTH")
        return model

    def loss(self) -> Callable[[Any, Any], Any]:
        import keras

        blank = self.charset.blank

        def ctc_loss(y_true: Any, y_pred: Any) -> Any:
            y_true = keras.ops.cast(y_true, "int32")
            target_length = keras.ops.sum(keras.ops.cast(keras.ops.not_equal(y_true, blank), "int32"), -1)
            batch, steps = keras.ops.shape(y_pred)[0], keras.ops.shape(y_pred)[1]
            output_length = keras.ops.full((batch,), steps, dtype="int32")
            # The model outputs probabilities; their log is a valid logit (softmax(log p) = p).
            logits = keras.ops.log(keras.ops.clip(y_pred, 1e-8, 1.0))
            return keras.ops.ctc_loss(y_true, logits, target_length, output_length, mask_index=blank)

        return ctc_loss

    def _prediction(self, row: np.ndarray, ids: list[int], confs: list[float] | None, path: float) -> Prediction:
        """An answer from symbol ids; without per-step ``confs``, each symbol's best step."""
        confs = confs if confs is not None else [float(row[:, i].max()) for i in ids]
        chars = [(self.charset.symbol(i), c) for i, c in zip(ids, confs)]
        return Prediction("".join(c for c, _ in chars), float(path), chars)

    def decode(self, probs: np.ndarray) -> list[Prediction]:
        out = []
        greedy = ctc_greedy(probs, self.charset.blank)
        beams = ctc_beam_search(probs, self.charset.blank) if self.settings.get("CTC_DECODER") == "beam" else None
        for row, (ids, confs, path) in enumerate(greedy):
            if beams is not None and beams[row][0] != ids:
                # The beam's answer wins; its probability sums every path that spells it.
                beam_ids, beam_p = beams[row]
                out.append(self._prediction(probs[row], beam_ids, None, beam_p))
            else:
                out.append(self._prediction(probs[row], ids, confs, path))
        return out

    def reread(self, row: np.ndarray, lengths: Sequence[int]) -> Prediction | None:
        """The likeliest text of ``lengths[0]``-``lengths[1]`` symbols in the beam, where the best
        path spelt a length no training label has: most such answers drop or double one symbol
        of a text whose right spelling is the next likeliest (bench/results/defaults.md, "Re-reading
        answers of impossible length"). None when no text of such a length has at least
        LEAST_REREAD."""
        for ids, p in ctc_prefix_beams(row, self.charset.blank):
            if lengths[0] <= len(ids) <= lengths[1] and p >= LEAST_REREAD:
                return self._prediction(row, ids, None, p)
        return None
