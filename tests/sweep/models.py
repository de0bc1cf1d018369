"""A tiny attention block with the modern additive mask, Where(mask, 0, float32.min), for sweep tests.

In FP32 a fully padded row adds -3.4e38 to every score: Softmax is uniform, the output finite. The FP16
conversion makes the constant -inf: every score of that row is -inf and Softmax gives NaN. Rows with at
least one token are fine (exp(-inf) = 0 at their padded positions).
"""

import numpy as np
from inline_models import parse_model

HIDDEN = 8
PADDED = {0, 4, 8}  # the feeds of conftest's `feed_folder` with a fully padded row


def masked_attention():
    return parse_model(
        """
        masked_attention (float[batch, seq, 8] x, int64[batch, seq] attention_mask) => (float[batch, seq, 8] last_hidden_state) {
            keys = MatMul(x, w)
            keys_t = Transpose<perm = [0, 2, 1]>(keys)
            scores = MatMul(x, keys_t)
            keep = Cast<to = 9>(attention_mask)
            keep3 = Unsqueeze(keep, one)
            mask_add = Where(keep3, zero, fmin)
            masked = Add(scores, mask_add)
            probs = Softmax<axis = -1>(masked)
            last_hidden_state = MatMul(probs, x)
        }
        """,
        w=np.random.default_rng(0).standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.3,
        one=np.array([1], np.int64),
        zero=np.array(0.0, np.float32),
        fmin=np.array(np.finfo(np.float32).min, np.float32),
    )


def feed(seed: int, batch: int = 3, seq: int = 6, padded_row: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[1:, seq - 2:] = 0  # ordinary padding: shorter sentences
    if padded_row is not None:
        mask[padded_row] = 0
    return {"x": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32), "attention_mask": mask}


def embedded_attention(vocab: int):
    """masked_attention behind an embedding table: takes input_ids and attention_mask, as a tokenizer gives."""
    return parse_model(
        f"""
        embedded_attention (int64[batch, seq] input_ids, int64[batch, seq] attention_mask) => (float[batch, seq, 8] last_hidden_state) {{
            x = Gather(table, input_ids)
            keys = MatMul(x, w)
            keys_t = Transpose<perm = [0, 2, 1]>(keys)
            scores = MatMul(x, keys_t)
            keep = Cast<to = 9>(attention_mask)
            keep3 = Unsqueeze(keep, one)
            mask_add = Where(keep3, zero, fmin)
            masked = Add(scores, mask_add)
            probs = Softmax<axis = -1>(masked)
            last_hidden_state = MatMul(probs, x)
        }}
        """,
        table=np.random.default_rng(1).standard_normal((vocab, HIDDEN)).astype(np.float32),
        w=np.random.default_rng(0).standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.3,
        one=np.array([1], np.int64),
        zero=np.array(0.0, np.float32),
        fmin=np.array(np.finfo(np.float32).min, np.float32),
    )


def image_scaler():
    """float[1, 3, 8, 8] image -> its pixels doubled."""
    return parse_model(
        """
        image_scaler (float[1, 3, 8, 8] image) => (float[1, 3, 8, 8] scaled) {
            scaled = Mul(image, gain)
        }
        """,
        gain=np.array(2.0, np.float32),
    )
