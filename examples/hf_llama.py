"""A tiny random-initialised Llama-style model (rotary positions, RMSNorm, grouped-query attention,
SwiGLU) from a config, with tied embeddings, cut into 2 components and trained 2-wise on tiny
shakespeare (characters). The same as examples/hf_gpt2.py for another family.

    pip install 'interlock[hf]'
    python examples/hf_llama.py [--data DATA_DIR] [--steps N]   # about 30 s on 2 CPU cores
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the shared training code of examples/hf_gpt2.py
from hf_gpt2 import train_tiny  # noqa: E402


def llama(vocab: int):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return AutoModelForCausalLM.from_config(config)


if __name__ == "__main__":
    train_tiny(llama, name="Llama", doc=__doc__)
