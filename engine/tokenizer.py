"""Small byte-level BPE tokenizers built in code, for models trained from scratch (tiny-random, nano).

Byte-level means any text encodes (no unknown tokens); training on a few kilobytes takes milliseconds."""
from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
VIDEO_TOKEN = "<video>"

# Enough English to give a random model a vocabulary of real word pieces.
BASE_CORPUS = """USER: ASSISTANT: Describe the video in detail. Describe the video in one short sentence.
A person walks into the room, picks up a red cup and drinks from it. The camera pans to the left.
A red circle moves to the left. Then the blue square grows. The shot changes to a green background.
A yellow star rotates and a white triangle appears, then it disappears. The car turns right.
"""


def build_bpe_tokenizer(texts: Iterable[str] = (), vocab_size: int = 512):
    """Train a byte-level BPE on `texts` (plus a small built-in corpus) and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = [*SPECIAL_TOKENS.values(), VIDEO_TOKEN]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([BASE_CORPUS, *texts], trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, **SPECIAL_TOKENS)
    tok.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN]})
    return tok

