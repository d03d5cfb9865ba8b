"""The shapes world: procedural captioned shapes and the tiny models trained on them from scratch.

- :mod:`shapes.data` — the seedable generator of captioned examples, the held-out split; its parts are
  :mod:`shapes.attributes` (vocabulary, records, prior), :mod:`shapes.captions` (caption grammar and
  parser) and :mod:`shapes.rendering` (pixels);
- :mod:`shapes.checker` — the pixel-rule checker that scores an image against a prompt;
- :mod:`shapes.clip` — the caption tokenizer and a tiny ``transformers.CLIPModel``;
- :mod:`shapes.sd` — a tiny Stable Diffusion saved as a diffusers pipeline directory;
- :mod:`shapes.heads` — the reward rules (aesthetic, preference utility, sentiment) and their heads;
- :mod:`shapes.expander` — the GPT-2 prompt expander's SFT data and quality gate;
- :mod:`shapes.build` — ``python -m shapes.build --out DIR`` builds the world stage by stage;
- :mod:`shapes.card` — ``python -m shapes.card --world DIR`` measures the world card's sampled figures;
- :mod:`shapes.world_card` — writes and reads the world card (``WORLD.md``, ``world.json``).

The built world is committed in ``shapes/world/`` (the default of ``python -m parrot.train``).
"""

from parrot_base.cli import quiet_if_run_as_command

quiet_if_run_as_command()  # before the imports of a command print anything (commands only)
