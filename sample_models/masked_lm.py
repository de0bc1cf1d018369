"""A tiny BertForMaskedLM with the legacy mask, for the masked-LM task check (`workbench.task.checks.MaskedLmTask`).

    python sample_models/masked_lm.py        # writes sample_models/masked_lm_bert.onnx and .npz

Random weights (torch.manual_seed(0)), a made-up 100-word vocabulary (`TOKENS`), hidden 32, 2 layers,
exported with the dynamo exporter like `build.py`'s BERTs. Output `logits` [batch, sequence, vocab].
The mask is `(1 - mask) * float32.min` (node `mask_scale`), so a plain FP16 cast turns the logits NaN.
Deterministic: building twice gives the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

if __package__ in (None, ""):  # run as a script: make `sample_models` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sample_models.build import HERE, Feed, _name_mask_mul, _save_npz, export_module  # noqa: E402

NAME = "masked_lm_bert"
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL))
WORDS = (
    "need use make have earn the a of to and in is it that was for on are with as i his they be at one "
    "this had by word but not what all were we when your can said there an each which she do how their "
    "if will up other about out many then them these so some her would like him into time has look two "
    "more write go see number no way could people my than first water been call who its now find long "
    "down day did get come made"
).split()
TOKENS: tuple[str, ...] = SPECIAL + tuple(WORDS)  # id -> token, for MaskedLmTask(tokens=TOKENS)
assert len(TOKENS) == 100 and len(set(TOKENS)) == 100


def _tiny_masked_lm():
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(TOKENS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=PAD_ID,
                        initializer_range=0.5)
    return BertForMaskedLM(config).eval()


def _legacy_mask_logits(masked_lm):
    """`masked_lm` as a Module(input_ids, attention_mask) -> logits, with the mask `(1 - mask) * float32.min`.

    build._mask_wrapper returns `.last_hidden_state`, which a masked-LM output has not, hence this twin.
    """
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.masked_lm = masked_lm

        def forward(self, input_ids, attention_mask):
            mask = attention_mask[:, None, None, :].to(torch.float32)
            extended = (1.0 - mask) * torch.finfo(torch.float32).min
            return self.masked_lm(input_ids=input_ids, attention_mask=extended).logits

    return Wrapper().eval()


def _export(module, feed: Feed) -> onnx.ModelProto:
    model = _name_mask_mul(export_module(module, feed, "logits"))
    onnx.checker.check_model(model, full_check=True)
    return model


def masked_lm_feed() -> Feed:
    """Two sentences of 8 tokens, `[CLS] ... [MASK] ... [SEP]`; the second is padded (3 [PAD], mask 0)."""
    ids = {token: i for i, token in enumerate(TOKENS)}
    sentences = [
        "[CLS] we [MASK] to find water [MASK] [SEP]",
        "[CLS] i [MASK] the time [SEP] [PAD] [PAD]",
    ]
    input_ids = np.array([[ids[t] for t in s.split()] for s in sentences], np.int64)
    attention_mask = (input_ids != PAD_ID).astype(np.int64)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def masked_lm() -> tuple[onnx.ModelProto, Feed]:
    """Tiny BertForMaskedLM, legacy mask (node `mask_scale`), output `logits`; its feed (int64 ids and mask).

    Trap: as for build.legacy_mask_bert, float32.min becomes -inf in FP16 and 0 * -inf = NaN at every
    unmasked position, so every logit is NaN and the top-5 tokens are junk.
    """
    feed = masked_lm_feed()
    return _export(_legacy_mask_logits(_tiny_masked_lm()), feed), feed


def write(out_dir: Path = HERE) -> list[Path]:
    """Write `masked_lm_bert.onnx` and `masked_lm_bert.npz` into `out_dir`; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, feed = masked_lm()
    paths = [out_dir / f"{NAME}.onnx", out_dir / f"{NAME}.npz"]
    onnx.save(model, paths[0])
    _save_npz(paths[1], feed)
    return paths


if __name__ == "__main__":
    for path in write():
        print(f"{path.relative_to(HERE.parent)}  {path.stat().st_size / 1024:.1f} KiB")
