"""Textual inversion (Gal et al. 2022): a token's vectors enter the frozen MiniLM's input embeddings, the prompt cache
knows which vectors a prompt used, and training changes the vectors and nothing else."""

import pytest
import torch
from adapter_models import write_images, write_text_model
from safetensors import safe_open

from difflab.adapters.embedding import (EmbeddingConfig, TokenEmbedding, forget_embedding, load_embedding,
                                        save_embedding, split_prompt, token_features, use_embedding, word_vectors)
from difflab.adapters.objectives import TextualInversionObjective
from difflab.adapters.train import Recipe, repeated, subject_data
from difflab.data.captions import TEMPLATES
from difflab.errors import DifflabError
from difflab.model import load_model
from difflab.text.encoder import TEXT_DIM, text_encoder
from difflab.train.checkpoint import ComponentRef
from difflab.train.loop import TrainingLoop

TOKEN = "<my-square>"


def test_split_prompt_keeps_the_tokens_as_parts():
    assert split_prompt("a <s> bag", ["<s>"]) == ["a ", "<s>", " bag"]
    assert split_prompt("<s><t>", ["<s>", "<t>"]) == ["<s>", "<t>"]
    assert split_prompt("no token", []) == ["no token"]


def test_prompts_without_tokens_encode_as_before():
    encoder = text_encoder()
    prompts = ["a dark bag", "a photo of a large light ankle boot"]
    plain = encoder.encode(prompts)
    through_inputs = token_features(encoder, prompts, {TOKEN: torch.randn(2, TEXT_DIM)})
    torch.testing.assert_close(through_inputs.pooled, plain.pooled, atol=1e-5, rtol=0)
    assert torch.equal(through_inputs.mask, plain.mask)
    torch.testing.assert_close(through_inputs.tokens, plain.tokens, atol=1e-5, rtol=0)


def test_the_token_takes_its_vectors_place_and_the_cache_knows_which():
    encoder = text_encoder()
    prompt = f"a {TOKEN} bag"
    ordinary = encoder.encode([prompt])  # not loaded: the token is ordinary text (word pieces)
    first, second = torch.randn(2, TEXT_DIM), torch.randn(2, TEXT_DIM)
    try:
        use_embedding(encoder, TOKEN, first)
        with_first = encoder.encode([prompt])
        assert with_first.mask.sum() == 6  # [CLS] a v1 v2 bag [SEP]
        torch.testing.assert_close(with_first.tokens, token_features(encoder, [prompt], {TOKEN: first}).tokens)
        use_embedding(encoder, TOKEN, second)
        with_second = encoder.encode([prompt])
        assert not torch.allclose(with_second.pooled, with_first.pooled)  # not the cached entry of the old vectors
        use_embedding(encoder, TOKEN, first)
        assert torch.equal(encoder.encode([prompt]).tokens, with_first.tokens)
    finally:
        forget_embedding(encoder, TOKEN)
    assert torch.equal(encoder.encode([prompt]).tokens, ordinary.tokens)


def test_training_changes_the_embedding_and_nothing_else(tmp_path):
    base = write_text_model(tmp_path / "base.safetensors")
    model = load_model(base)
    net = model.denoiser.net.requires_grad_(False)
    encoder = text_encoder()
    module = TokenEmbedding(word_vectors(encoder, "square", 2))
    start = module.vectors.detach().clone()
    frozen = {**{f"net.{k}": v.clone() for k, v in net.state_dict().items()},
              **{f"encoder.{k}": v.clone() for k, v in encoder.model.state_dict().items()}}
    objective = TextualInversionObjective(model.denoiser, module, "simple", encoder, TOKEN, TEMPLATES,
                                          frozen={"base": ComponentRef.to("denoiser", base)})
    data = repeated(subject_data(str(write_images(tmp_path / "images"))), 4)
    loop = TrainingLoop(objective, data, Recipe(steps=3, batch=4, lr=1e-2, warmup=1, device="cpu").loop("images"),
                        tmp_path / "run", kind="embedding", config=EmbeddingConfig(TOKEN, "square", 2),
                        checkpoint_name="training.safetensors", progress=False)
    assert [p for group in loop.optimizer.param_groups for p in group["params"]] == [module.vectors]
    loop.run()
    assert not torch.equal(module.vectors, start)
    after = {**{f"net.{k}": v for k, v in net.state_dict().items()},
             **{f"encoder.{k}": v for k, v in encoder.model.state_dict().items()}}
    assert all(torch.equal(after[k], v) for k, v in frozen.items())

    path = save_embedding(tmp_path / "embedding.safetensors", EmbeddingConfig(TOKEN, "square", 2), module.vectors,
                          ComponentRef.to("denoiser", base), loop.step)
    with safe_open(path, "pt") as f:
        assert list(f.keys()) == ["vectors"]
    loaded = load_embedding(path)
    assert loaded.token == TOKEN and torch.equal(loaded.vectors, module.vectors.detach())
    assert path.stat().st_size < 4096


def test_bad_tokens_and_words_are_one_line_errors():
    with pytest.raises(DifflabError, match="one word"):
        EmbeddingConfig("my shoe")
    with pytest.raises(DifflabError, match="no word pieces"):
        word_vectors(text_encoder(), "", 1)
