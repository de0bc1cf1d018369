"""BERT-base with the legacy attention mask, and its feed. Run as a script it writes both:

    python bench/model.py bench/work      # -> bert_base_fp32.onnx (kept if present), feed.npz, inputs.json

Run in its own process by bench/run.py, so torch never sits in the measuring process.
The export itself is sample_models/build.py's `_export_bert` (reused, not copied).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sample_models import build  # noqa: E402

BATCH, SEQUENCE, PADDED = 1, 128, 28  # the last PADDED positions have attention_mask 0
FEED_SEED = 0
MODEL_FILE, FEED_FILE, POLYGRAPHY_FEED_FILE = "bert_base_fp32.onnx", "feed.npz", "inputs.json"


def make_feed(vocab_size: int) -> dict[str, np.ndarray]:
    """Batch 1, sequence 128, ids uniform in the vocabulary, the last 28 positions masked out."""
    input_ids = np.random.default_rng(FEED_SEED).integers(0, vocab_size, size=(BATCH, SEQUENCE), dtype=np.int64)
    attention_mask = np.ones((BATCH, SEQUENCE), np.int64)
    attention_mask[:, SEQUENCE - PADDED:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def bert_base():
    """transformers.BertConfig() defaults (hidden 768, 12 layers, 12 heads, vocab 30522), random weights."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(), add_pooling_layer=False).eval()


def write_all(out_dir: Path) -> None:
    import onnx
    from polygraphy.json import save_json
    from transformers import BertConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    feed = make_feed(BertConfig().vocab_size)
    build._save_npz(out_dir / FEED_FILE, feed)
    save_json([feed], str(out_dir / POLYGRAPHY_FEED_FILE))  # one iteration, for `polygraphy run --load-inputs`
    path = out_dir / MODEL_FILE
    if path.exists():
        print(f"reusing {path}")
        return
    model = build._export_bert(bert_base(), feed, legacy=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(model, tmp)
    tmp.rename(path)  # never leave a half-written model to be "reused"
    print(f"exported {path} ({path.stat().st_size / 2**20:.0f} MiB, {len(model.graph.node)} nodes)")


if __name__ == "__main__":
    write_all(Path(sys.argv[1]))
