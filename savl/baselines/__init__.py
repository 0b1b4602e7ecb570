"""Baselines: the two published systems SAVL is compared against, rebuilt inside savl's framework.

- `savl.baselines.redsr`: ReDSR (Liu et al., ECCV 2024, "Preserving Full Degradation Details for Blind Image
  Super-Resolution"): a global 64-d degradation code per patch, learned by re-degrading a second HR patch of the
  same image (L1) under an energy-distance pull towards N(0, I), guiding a DASR-style SR network.
- `savl.baselines.selective_scan`, `savl.baselines.mamba`, `savl.baselines.dacesr`: DACESR (Lei et al.,
  "Degradation-Aware Conditional Embedding for Real-World Image Super-Resolution"): a Mamba SR network in a
  SwinIR-style shell whose group outputs are modulated by an image embedding (the conditional feature
  modulator), and the Real Embedding Extractor (REE) trained by contrastive tuning on severe degradations.
- `savl.baselines.objectives`: their training objectives and the stage table `savl.train.stages` reads.
- `savl.baselines.representations`: their codes as encoders of the representation protocols (a global code
  per image, or per LR position from sliding windows).

Why a package of its own: these are other papers' systems, not SAVL's modules. Keeping them apart keeps
`savl.models` (SAVL, DA-RHAG, HAT) what the paper describes, lets a reader see at a glance which code is a
reimplementation of someone else's method, and lets `savl.models.registry` list them as loadable
architectures without any SAVL module depending on them. They import only `savl.errors` and `savl.losses`
(and each other), never `savl.models`, so the registry can import them without a cycle.
"""
