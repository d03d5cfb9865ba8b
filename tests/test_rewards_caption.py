"""DDPO-style caption alignment with a tiny captioner built in code and the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import pytest
import torch

from rewards import load_reward
from rewards.caption import bundled_minilm_path
from rewards.tiny import save_tiny_captioner


@pytest.fixture(scope="module")
def reward(tmp_path_factory):
    captioner = save_tiny_captioner(tmp_path_factory.mktemp("captioner"))
    return load_reward("caption_alignment", captioner=str(captioner), max_new_tokens=6, batch_size=2)


def test_caption_alignment_is_the_sentence_cosine_of_caption_and_prompt(reward):
    from sentence_transformers import SentenceTransformer

    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))  # resized to 32 inside
    prompts = ["a red circle above a blue square", "a cat", "three green triangles"]
    captions = reward.caption(images)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    reference = SentenceTransformer(bundled_minilm_path(), device="cpu")  # the package's own loader
    expected = (
        reference.encode(captions, convert_to_tensor=True, normalize_embeddings=True)
        * reference.encode(prompts, convert_to_tensor=True, normalize_embeddings=True)
    ).sum(-1)
    scores = reward(images, prompts)
    torch.testing.assert_close(scores, expected.float().cpu(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(reward(images, captions), torch.ones(3), atol=1e-4, rtol=0)


def test_caption_alignment_refuses_a_missing_captioner(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_reward("caption_alignment", captioner=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no model directory at './nowhere/captioner'"):
        load_reward("caption_alignment", captioner="./nowhere/captioner")
